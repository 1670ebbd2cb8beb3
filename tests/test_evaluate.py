import json

import pytest
import sacrebleu
from typer.testing import CliRunner

from nmt.cli import app
from nmt.errors import NmtError
from nmt.evaluate import bleu_gate, corpus_metrics, file_metrics
from tests.conftest import SAMPLE

REFS = [
    line.split("\t")[2]
    for line in (SAMPLE / "test.tsv").read_text(encoding="utf-8").splitlines()[1:101]
]
# a plausible system output: references with some words dropped
HYPS = [" ".join(w for j, w in enumerate(r.split()) if (i + j) % 4) for i, r in enumerate(REFS)]


def test_scores_equal_sacrebleus_own(tmp_path):
    scores = {s.name: s for s in corpus_metrics(HYPS, [REFS], ["bleu", "chrf", "ter"])}
    assert scores["bleu"].score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert scores["chrf"].score == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert scores["ter"].score == pytest.approx(sacrebleu.corpus_ter(HYPS, [REFS]).score)
    assert scores["bleu"].signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert 10 < scores["bleu"].score < 90


def test_cli_json_output(tmp_path):
    (tmp_path / "hyp").write_text("\n".join(HYPS) + "\n")
    (tmp_path / "ref").write_text("\n".join(REFS) + "\n")
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "hyp"),
            str(tmp_path / "ref"),
            "--metrics",
            "bleu,chrf",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["bleu", "chrf"]
    assert rows[0]["score"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-4)


def test_min_bleu_gate_exit_codes(tmp_path):
    (tmp_path / "hyp").write_text("\n".join(HYPS) + "\n")
    (tmp_path / "ref").write_text("\n".join(REFS) + "\n")
    bleu = sacrebleu.corpus_bleu(HYPS, [REFS]).score
    args = ["evaluate", str(tmp_path / "hyp"), str(tmp_path / "ref"), "--min-bleu"]
    passed = CliRunner().invoke(app, args + [str(bleu - 1)])
    assert passed.exit_code == 0 and "BLEU" in passed.stdout
    failed = CliRunner().invoke(app, args + [str(bleu + 1)])
    assert failed.exit_code == 1
    assert f"BLEU {bleu:.2f} is below the required minimum {bleu + 1:.2f}" in failed.stderr


def test_gate_needs_bleu():
    scores = corpus_metrics(HYPS, [REFS], ["chrf"])
    with pytest.raises(NmtError, match="--min-bleu needs BLEU"):
        bleu_gate(scores, 10)


def test_misaligned_files_and_unknown_metric(tmp_path):
    (tmp_path / "hyp").write_text("a\nb\n")
    (tmp_path / "ref").write_text("a\n")
    with pytest.raises(NmtError, match="has 2 lines but .*ref has 1"):
        file_metrics(tmp_path / "hyp", [tmp_path / "ref"], ["bleu"])
    with pytest.raises(NmtError, match="unknown metric meteor"):
        corpus_metrics(["a"], [["a"]], ["meteor"])


def test_multiple_references(tmp_path):
    hyp = ["the cat sat on the mat today"]
    scores = corpus_metrics(hyp, [["a dog sat on a rug"], hyp], ["bleu"])
    assert scores[0].score == pytest.approx(100.0)
