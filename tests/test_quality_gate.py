"""The BLEU gate: models trained from scratch through the CLI must translate, or CI fails.

Each test runs the whole user pipeline in subprocesses (`nmt preprocess` → `nmt train` →
`nmt translate` → `nmt evaluate --min-bleu`), with fixed seeds. Thresholds come from measured
runs on a 2-core CPU, with margin; the runs are recorded in docs/results.md ("The CI gate").
"""

import json
import random
import subprocess
import sys

import pytest

from nmt.translate import Translator
from tests.conftest import ROOT, reversal_pairs, write_tsv

pytestmark = pytest.mark.slow


def nmt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nmt", *args], capture_output=True, text=True, cwd=ROOT
    )


def _ok(*args: str) -> subprocess.CompletedProcess:
    result = nmt(*args)
    assert result.returncode == 0, result.stderr
    return result


def _bleu_chrf(hyp, ref) -> tuple[float, float]:
    scores = json.loads(_ok("evaluate", str(hyp), str(ref), "--json").stdout)
    by_name = {s["name"]: s["score"] for s in scores}
    return by_name["bleu"], by_name["chrf"]


def test_toy_reversal_passes_the_bleu_gate(tmp_path):
    """rnnsearch learns to reverse symbol sequences: the training loss falls to a fifth,
    greedy and beam search reverse at least 95% of held-out sequences exactly, BLEU >= 90
    (measured: 100.0), while the gate rejects the unreversed input (BLEU about 10)."""
    rng = random.Random(1)
    splits = {s: reversal_pairs(n, rng) for s, n in (("train", 6000), ("dev", 200), ("test", 300))}
    paths = {s: str(write_tsv(tmp_path / f"{s}.tsv", pairs)) for s, pairs in splits.items()}
    data, run = tmp_path / "data", tmp_path / "run"
    _ok("preprocess", "--src", "es", "--tgt", "en", "--vocab-size", "45", "--out", str(data),
        "--train", paths["train"], "--dev", paths["dev"], "--test", paths["test"])  # fmt: skip
    overrides = [
        "model.emb_size=64", "model.hidden_size=128", "model.dropout=0",
        "train.label_smoothing=0", "train.lr=3e-3", "train.batch_tokens=1500",
        "train.max_steps=300", "train.valid_every=150", "decode.max_len_a=1",
        "decode.max_len_b=3",
    ]  # fmt: skip
    _ok("train", "--data", str(data), "--out", str(run), *(f"--set={o}" for o in overrides))
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if r["event"] == "train"]
    assert losses[-1] < 0.2 * losses[0]
    assert [r["step"] for r in records if r["event"] == "valid"] == [150, 300]
    hyp = tmp_path / "test.hyp.txt"
    _ok("translate", str(run / "best.pt"), "-i", str(data / "test.es.txt"), "-o", str(hyp))
    source = (data / "test.es.txt").read_text(encoding="utf-8").splitlines()
    refs = (data / "test.en.txt").read_text(encoding="utf-8").splitlines()
    greedy = Translator.from_checkpoint(run / "best.pt").translate(source, beam=1)
    for hyps in (hyp.read_text(encoding="utf-8").splitlines(), greedy):
        assert sum(h == r for h, r in zip(hyps, refs, strict=True)) >= 0.95 * len(refs)
    gate = nmt("evaluate", str(hyp), str(data / "test.en.txt"), "--min-bleu", "90")
    assert gate.returncode == 0, gate.stderr
    unreversed = nmt("evaluate", str(data / "test.es.txt"), str(data / "test.en.txt"),
                     "--min-bleu", "90")  # fmt: skip
    assert unreversed.returncode == 1 and "below" in unreversed.stderr


DEMO_FIGURE = {"bleu": 15.20, "chrf": 35.03}  # make demo's result (README, docs/results.md)
DEMO_PEAK_MIB = 1280  # measured 1,105 MiB (layer norm): docs/results.md, "The CI gate"


def test_the_demo_reaches_its_figure_in_bounded_memory(tmp_path):
    """`make demo`'s configuration, as is (400 updates, best.pt, beam 5), reaches at least the
    BLEU and chrF that the README promises (to 0.5), far above the floor the demo prints beside
    it: the untranslated source (BLEU 0.22, chrF 17.63). Fixed updates and seeds make it the
    same model on any machine of this kind with the same thread count; this test's one thread
    trains a slightly better one than `make demo`'s two (15.70 / 35.92 against 15.06 / 34.86 in
    session 18; make demo gives 15.20 / 35.03 since the search's tanh became 2σ(2x) - 1).
    Its training stays under 1.25 GB resident (1.08 GiB measured; layer norm keeps its
    normalised projections) and stops growing once it has validated: with oneDNN's and ideep's
    caches unbounded (1,024 entries each) its peak grew from 2,247 to 2,443 MiB after the first
    validation (the check allows 128)."""
    data, run, hyp = tmp_path / "data", tmp_path / "run", tmp_path / "hyp.txt"
    _ok("preprocess", "--config", "configs/sample.yaml", "--out", str(data))
    _ok("train", "configs/sample.yaml", "--data", str(data), "--out", str(run))
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    first_validation = min(r["step"] for r in records if r["event"] == "valid")
    peaks = [r["peak_rss_mib"] for r in records]
    after = [r["peak_rss_mib"] for r in records if r["step"] > first_validation]
    assert max(peaks) < DEMO_PEAK_MIB, peaks
    assert after[-1] - after[0] < 16 + 0.05 * after[0], peaks
    _ok("translate", str(run / "best.pt"), "-i", str(data / "test.es.txt"), "-o", str(hyp))
    bleu, chrf = _bleu_chrf(hyp, data / "test.en.txt")
    floor_bleu, floor_chrf = _bleu_chrf(data / "test.es.txt", data / "test.en.txt")
    assert bleu >= DEMO_FIGURE["bleu"] - 0.5 and chrf >= DEMO_FIGURE["chrf"] - 0.5, (bleu, chrf)
    assert bleu >= floor_bleu + 5.0 and chrf >= floor_chrf + 5.0, (floor_bleu, floor_chrf)
