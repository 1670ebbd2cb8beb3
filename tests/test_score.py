"""nmt score and `score_pairs`: forced decoding gives the search's own scores, in every format."""

import json

import pytest
from typer.testing import CliRunner

from nmt.cli import app
from nmt.config import Config, apply_overrides
from nmt.decode.hypothesis import length_penalty
from nmt.train import train
from nmt.translate import Translator
from nmt.translate.forced import score_pairs
from tests.test_translate import TINY as TRANSLATE_TINY

runner = CliRunner()
# test_translate's tiny model, a step more trained, with room for longer inputs and outputs;
# long sources truncated as `nmt score` reads them (translate would split them into parts)
TINY = [
    *TRANSLATE_TINY,
    "train.max_steps=3",
    "decode.max_len_b=4",
    "decode.max_input_len=14",
    "decode.long_lines=truncate",
]


@pytest.fixture(scope="module")
def checkpoints(sample_dir, tmp_path_factory):
    """Two barely trained models (two seeds, one vocabulary): scores are poor, but exact. They
    translate without their shortlist: `nmt score` scores the whole softmax, as such a search
    does (with one, the search normalises over each line's list)."""
    paths = []
    for seed in (1, 2):
        run = tmp_path_factory.mktemp("score") / "run"
        cfg = apply_overrides(Config(), [*TINY, f"train.seed={seed}", "decode.shortlist=false"])
        train(cfg, sample_dir, run, progress_bar=False, log=lambda _: None)
        paths.append(run / "last.pt")
    return paths


@pytest.fixture(scope="module")
def sources(sample_dir):
    return (sample_dir / "test.es.txt").read_text(encoding="utf-8").splitlines()[:12]


@pytest.mark.parametrize("models", [1, 2])
@pytest.mark.parametrize("penalty, alpha", [("wu", 0.6), ("length", 0.0), ("none", 0.0)])
def test_the_beam_s_hypotheses_score_as_the_search_scored_them(
    checkpoints, sources, models, penalty, alpha
):
    """Every hypothesis of a beam-4 n-best list, scored given its source (all in one batched
    call), gets the score the search gave it, for each length penalty and for an ensemble."""
    translator = Translator.from_checkpoint(checkpoints[:models], "cpu", "fp32")
    results = translator.translate_nbest(sources, beam=4, nbest=4, penalty=penalty, alpha=alpha)
    pairs = [(s, h) for s, r in zip(sources, results) for h in r.hypotheses]
    scored = score_pairs(
        translator, [s for s, _ in pairs], [h.text for _, h in pairs], penalty, alpha
    )
    same = [(h, x) for (_, h), x in zip(pairs, scored) if x.pieces[:-1] == h.pieces]
    assert len(same) >= 0.8 * len(pairs) >= 30  # the rest re-segment their detokenised text
    for hyp, x in same:
        assert x.score == pytest.approx(hyp.score, abs=1e-4)
        lp = length_penalty(len(x.token_scores), penalty, alpha)
        assert x.score == pytest.approx(sum(x.token_scores) / lp, abs=1e-9)


def test_the_search_s_own_pieces_score_exactly_as_the_search_scored_them(
    checkpoints, sources, tmp_path
):
    """A hypothesis re-split from its text may differ from the search's subwords (above, up to
    a fifth of them); given as pieces (`--pieces`), every one gets its search score."""
    translator = Translator.from_checkpoint(checkpoints[0], "cpu", "fp32")
    results = translator.translate_nbest(sources, beam=4, nbest=4)
    pairs = [(s, h) for s, r in zip(sources, results) for h in r.hypotheses]
    given = [" ".join(h.pieces) for _, h in pairs]
    scored = score_pairs(translator, [s for s, _ in pairs], given, pieces=True)
    for (_, hyp), x in zip(pairs, scored):
        assert x.pieces[:-1] == hyp.pieces
        assert x.score == pytest.approx(hyp.score, abs=1e-4)
    (tmp_path / "src").write_text(sources[0] + "\n", encoding="utf-8")
    (tmp_path / "tgt").write_text("▁no-such-piece-here\n", encoding="utf-8")
    result = _score(checkpoints[0], "-s", tmp_path / "src", "-t", tmp_path / "tgt", "--pieces")
    assert result.exit_code == 2
    assert "'▁no-such-piece-here' is not a piece of the model's target vocabulary" in result.output


def _score(*args):
    return runner.invoke(app, ["score", *map(str, args)])


def test_formats_agree_and_keep_one_line_per_pair(checkpoints, sources, tmp_path):
    src, tgt = tmp_path / "src.es", tmp_path / "tgt.en"
    sources = [*sources[:-1], sources[-1] + "\tal\tfinal"]  # tsv: a tab inside is a space
    targets = ["", *sources[1:]]  # an empty target is eos alone, still scored
    src.write_text("\n".join(sources) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(targets) + "\n", encoding="utf-8")
    out = {}
    for fmt in ("text", "tsv", "jsonl"):
        result = _score(checkpoints[0], "-s", src, "-t", tgt, "--format", fmt)
        assert result.exit_code == 0, result.output
        out[fmt] = result.stdout.splitlines()
        assert len(out[fmt]) == len(sources)
    text = [float(x) for x in out["text"]]
    tsv = [line.split("\t") for line in out["tsv"]]
    spaced = [[x.replace("\t", " ") for x in pair] for pair in zip(sources, targets)]
    assert [[s, t] for s, t, _ in tsv] == spaced
    assert [float(x) for _, _, x in tsv] == text
    records = [json.loads(line) for line in out["jsonl"]]
    assert [r["line"] for r in records] == list(range(1, len(sources) + 1))
    assert records[0]["pieces"] == ["</s>"] and len(records[0]["token_scores"]) == 1
    for record, score in zip(records, text):
        assert record["score"] == pytest.approx(score, abs=1e-6)
        lp = length_penalty(len(record["pieces"]), "wu", 0.6)  # the checkpoint's decode
        assert sum(record["token_scores"]) / lp == pytest.approx(score, abs=1e-4)
        assert len(record["pieces"]) == len(record["token_scores"])
    piped = runner.invoke(
        app,
        ["score", str(checkpoints[0]), "-s", str(src), "-t", "-"],
        input=tgt.read_text(encoding="utf-8"),
    )
    assert piped.exit_code == 0 and piped.stdout.splitlines() == out["text"]


def test_pairs_that_do_not_line_up_are_an_error(checkpoints, sources, tmp_path):
    src, tgt = tmp_path / "src.es", tmp_path / "tgt.en"
    src.write_text("\n".join(sources) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(sources[:5]) + "\n", encoding="utf-8")
    result = _score(checkpoints[0], "-s", src, "-t", tgt, "-o", tmp_path / "out.txt")
    assert result.exit_code == 2
    assert f"{tgt}" in result.stderr and "ends at line 5" in result.stderr
    assert not (tmp_path / "out.txt").exists()
    both = _score(checkpoints[0], "-s", "-", "-t", "-")
    assert both.exit_code == 2 and "cannot both be stdin" in both.stderr
    bad = _score(checkpoints[0], "-s", src, "-t", src, "--penalty", "exp")
    assert bad.exit_code == 2 and "--penalty" in bad.stderr


def test_sampled_translations_are_reproducible_and_score_as_drawn(checkpoints, sources, tmp_path):
    """`translate --sampling`: the same seed gives the same translations, batched or a line
    per batch, another seed others; each draw's score is what `nmt score` gives it."""
    src = tmp_path / "src.es"
    src.write_text("\n".join(sources) + "\n", encoding="utf-8")

    def sample(*options):
        result = runner.invoke(
            app, ["translate", str(checkpoints[0]), "-i", str(src), "--sampling", "topk:20",
                  "--precision", "fp32", "--format", "jsonl", *options],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return [json.loads(line)["hypotheses"][0] for line in result.stdout.splitlines()]

    drawn = sample("--seed", "3")
    alone = sample("--seed", "3", "--batch-tokens", "1")  # a line per batch
    assert [h["pieces"] for h in alone] == [h["pieces"] for h in drawn]
    assert [h["score"] for h in alone] == pytest.approx([h["score"] for h in drawn], abs=1e-4)
    assert [h["pieces"] for h in sample("--seed", "4")] != [h["pieces"] for h in drawn]
    translator = Translator.from_checkpoint(checkpoints[0], "cpu", "fp32")
    scored = score_pairs(translator, sources, [h["text"] for h in drawn])
    # a draw may spell its text in other subwords than the text's own segmentation
    same = [(h["score"], x.score) for h, x in zip(drawn, scored) if x.pieces[:-1] == h["pieces"]]
    assert len(same) >= len(sources) // 3
    for reported, rescored in same:
        assert reported == pytest.approx(rescored, abs=1e-4)
    for flags in (["--beam", "4"], ["--nbest", "2", "--format", "tsv"]):
        refused = runner.invoke(
            app, ["translate", str(checkpoints[0]), "-i", str(src), "--sampling", "full", *flags]
        )
        assert refused.exit_code == 2 and "sampling draws one translation" in refused.stderr
