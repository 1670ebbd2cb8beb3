"""The analytic FLOP count used for utilisation agrees with PyTorch's own flop counter."""

import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nmt.bench.preprocess import _generate_corpus, bench_preprocess
from nmt.bench.report import table
from nmt.bench.train import forward_flops
from nmt.config import ModelConfig
from nmt.model import build_model
from tests.conftest import SAMPLE

DEEP = {"enc_transition_depth": 2, "dec_transition_depth": 3}


@pytest.mark.parametrize(
    "arch, feed, layers, options",
    [
        ("rnnenc", False, 1, {}),
        ("rnnenc", False, 2, {}),
        ("rnnsearch", False, 1, {}),
        ("rnnsearch", False, 3, {}),
        ("luong", False, 1, {}),
        ("luong", True, 2, {}),
        ("rnnsearch", False, 2, DEEP),
        ("luong", False, 1, DEEP),
        ("rnnenc", False, 2, DEEP),
    ],
)
def test_forward_flops_match_the_flop_counter(arch, feed, layers, options):
    cfg = ModelConfig(
        arch=arch, emb_size=16, hidden_size=24, layers=layers, input_feeding=feed, **options
    )
    model = build_model(cfg, 50, 60, joint_vocab=False)
    if arch == "rnnsearch":  # the counter does not see the fused loop's matrix-vector products
        model.decoder.fused_recurrence = False
    batch, src_len, tgt_len = 3, 7, 5  # no padding: computed work = useful work
    with FlopCounterMode(display=False) as counter:
        model(
            torch.randint(4, 50, (batch, src_len)),
            torch.full((batch,), src_len),
            torch.randint(4, 60, (batch, tgt_len)),
        )
    expected = forward_flops(cfg, 60, np.full(batch, src_len), np.full(batch, tgt_len))
    assert counter.get_total_flops() == expected


def test_table_is_markdown():
    assert table([{"a": 1, "b": "x"}]).splitlines() == ["| a | b |", "|---|---|", "| 1 | x |"]


def test_preprocess_bench_generates_exactly_n_pairs(tmp_path):
    out = tmp_path / "gen.tsv"
    _generate_corpus(SAMPLE / "train.tsv", 25_001, out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "es\ten" and len(lines) == 25_002
    assert lines[10_001] == lines[1].replace(" (0)", " (1)")  # rows cycle, numbered
    assert not set(lines[1:10_001]) & set(lines[10_001:20_001])  # no pair repeats a cycle's
    rows = bench_preprocess(SAMPLE / "train.tsv", [3000], ["data.vocab_size=300"])
    assert rows[0]["pairs"] == 3000 and rows[0]["pairs_per_s"] > 0 and rows[0]["peak_rss_mib"] > 0


def test_reports_say_which_bf16_hardware_and_kernel_they_ran_on():
    """bf16 figures differ several-fold between AVX512-BF16 and AMX CPUs: every report names
    the CPU's bf16 flags (as /proc/cpuinfo lists them) and the kernel oneDNN ran a bf16
    product with, which names AMX exactly when the CPU has it."""
    from nmt.bench.report import environment

    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        flags = next(line for line in fh if line.startswith("flags")).split()
    env = environment()
    assert env["cpu_bf16"] == [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    assert env["onednn_isa"]
    assert ("amx" in env["onednn_bf16_matmul"]) == ("amx_bf16" in flags)


def test_bench_train_measures_each_variant_in_its_own_row(toy_dir, tmp_path):
    from typer.testing import CliRunner

    from nmt.cli import app

    args = ["bench", "train", "--data", str(toy_dir), "--archs", "rnnsearch", "--sizes", "16x24"]
    args += ["--steps", "2", "--warmup", "1", "--out", str(tmp_path)]
    args += ["--variant", "base", "--variant", "deep:model.dec_transition_depth=2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert [row["variant"] for row in report["rows"]] == ["base", "deep"]
    assert all(row["tokens_per_s"] > 0 for row in report["rows"])
    bad = CliRunner().invoke(app, [*args[:-2], "--variant", "x:model.layer_norm"])
    assert bad.exit_code == 2 and "NAME:KEY=VALUE" in bad.output


def test_benchmarks_with_nothing_to_measure_are_errors(tmp_path):
    """No sentence or no timed update: `error:` and exit 2 before any work (was a
    ZeroDivisionError traceback, or a table of zeros with exit 0)."""
    from typer.testing import CliRunner

    from nmt.cli import app

    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n", encoding="utf-8")
    model = str(tmp_path / "never-read.pt")
    cases = [
        (["bench", "translate", model, "-i", str(blank)], "no sentence to measure"),
        (["bench", "serve", model, "-i", str(blank)], "no sentence to measure"),
        (["bench", "translate", model, "-i", str(blank), "--lines", "0"], "--lines"),
        (["bench", "train", "--data", str(tmp_path), "--steps", "0"], "--steps"),
        (["bench", "train", "--data", str(tmp_path), "--warmup", "-1"], "--warmup"),
    ]
    for args, says in cases:
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2, (args, result.output)
        assert says in result.output, (args, result.output)
    assert not (tmp_path / "out").exists()
