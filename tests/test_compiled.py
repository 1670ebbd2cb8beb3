"""`--compile`: the search's step compiled by torch.compile translates as the eager one, and a
step that cannot be compiled falls back to the eager one with a warning."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import nmt.model.compiled
from nmt.cli import app
from nmt.config import Config, apply_overrides
from nmt.model.compiled import Compiled
from nmt.train import train
from nmt.translate import Translator
from tests.test_translate import TINY

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(sample_dir, tmp_path_factory):
    """A barely trained `luong` (the recipe's architecture), with its shortlist."""
    run = tmp_path_factory.mktemp("compiled") / "run"
    cfg = apply_overrides(
        Config(), [*TINY, "model.arch=luong", "decode.max_len_b=8", "decode.max_input_len=0"]
    )
    train(cfg, sample_dir, run, progress_bar=False, log=lambda _: None)
    return run / "last.pt"


@pytest.fixture
def lines(sample_dir):
    return (sample_dir / "test.es.txt").read_text(encoding="utf-8").splitlines()[:8]


def _failing_backend(graph, example_inputs):
    raise RuntimeError("no C++ compiler here")


def test_a_compiled_step_translates_as_the_eager_one(checkpoint, lines):
    """int8 with the shortlist (the setting it is for): the same translations and scores, and
    the step really ran compiled (no fallback)."""
    eager = Translator.from_checkpoint(checkpoint, "cpu", "int8")
    compiled = Translator.from_checkpoint(checkpoint, "cpu", "int8", compile=True)
    warnings: list[str] = []
    compiled.warn = warnings.append
    model = compiled.models[0]
    assert isinstance(model.decoder.step, Compiled)
    for shortlist in (False, True):
        want = eager.translate_nbest(lines, beam=3, shortlist=shortlist)
        got = compiled.translate_nbest(lines, beam=3, shortlist=shortlist)
        assert [r.hypotheses[0].text for r in got] == [r.hypotheses[0].text for r in want]
        for g, w in zip(got, want):
            assert g.hypotheses[0].score == pytest.approx(w.hypotheses[0].score, abs=1e-4)
    assert model.decoder.step.compiled is not None
    assert not [w for w in warnings if "compile" in w]


def test_a_step_that_cannot_compile_falls_back_with_a_warning(
    checkpoint, lines, monkeypatch, tmp_path
):
    """`nmt translate --compile` where compiling fails: one warning, then
    the eager step, and the same output as without --compile."""
    monkeypatch.setattr(nmt.model.compiled, "BACKEND", _failing_backend)
    src = tmp_path / "in.es"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    base = ["translate", str(checkpoint), "-i", str(src), "--precision", "fp32", "--beam", "2"]
    plain = runner.invoke(app, base)
    result = runner.invoke(app, [*base, "--compile"])
    assert plain.exit_code == 0 and result.exit_code == 0, result.output
    assert result.stdout == plain.stdout and len(result.stdout.splitlines()) == len(lines)
    warnings = [w for w in result.stderr.splitlines() if "could not compile" in w]
    assert len(warnings) == 1 and all("no C++ compiler here" in w for w in warnings)
    assert all("translating without --compile" in w for w in warnings)


def test_bench_translate_measures_the_compiled_step_beside_the_eager_one(
    checkpoint, sample_dir, monkeypatch
):
    """`--compile off,on`: every row pair side by side, with the warm-up seconds."""
    from nmt.bench.translate import bench_translate

    monkeypatch.setattr(nmt.model.compiled, "BACKEND", _failing_backend)
    src = sample_dir / "test.es.txt"
    rows = bench_translate(
        checkpoint, src, 4, [1], [2000], "cpu", ["fp32"], [False], compiles=[False, True]
    )
    assert [(r["mode"], r["compile"]) for r in rows] == [
        (mode, c) for mode in ("batched, 2000 tokens", "one at a time") for c in ("off", "on")
    ]
    assert all(r["warm-up s"] >= 0 and r["sentences_per_s"] > 0 for r in rows)
