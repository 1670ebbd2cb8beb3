"""Benchmarks: each returns rows, which the CLI prints as a table and writes as JSON.

Benchmarks are measurements, not tests: nothing here asserts a speed. Each row records what was
measured and on what, so that docs/benchmarks.md can quote the command and its figures.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt.config import Config, ModelConfig
from nmt.data.batching import ParallelDataset, TokenBatchSampler, padding_share
from nmt.data.corpus import read_lines
from nmt.device import cpu_bf16_features
from nmt.distributed import torchrun_command
from nmt.errors import NmtError
from nmt.fileio import atomic_write_json


def _generate_corpus(tsv: Path, pairs: int, out: Path) -> None:
    """Write a TSV corpus of exactly `pairs` pairs: the rows of `tsv` cycled, numbered so that
    no two are equal (deduplication and SentencePiece's sampling see a corpus of that size)."""
    lines = read_lines(tsv)
    header = next(lines)
    rows = [line.split("\t")[-2:] for line in lines]
    with out.open("w", encoding="utf-8") as fh:
        fh.write("\t".join(header.split("\t")[-2:]) + "\n")
        for start in range(0, pairs, len(rows)):
            cycle = start // len(rows)
            fh.writelines(
                f"{src} ({cycle})\t{tgt} ({cycle})\n" for src, tgt in rows[: pairs - start]
            )


def _run_measured(cmd: Sequence[str]) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak resident memory in MiB) of that process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss // 1024  # Linux reports KiB


def bench_preprocess(
    corpus: Path, sizes: Sequence[int], overrides: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Pairs/s and peak memory of `nmt preprocess` on corpora of `sizes` pairs made from `corpus`.

    Each size runs in its own process, so that its peak memory is its own: the largest resident
    set of that process and of the worker processes it waited for (wait4's ru_maxrss).
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="nmt-bench-") as tmp:
        tmp_dir = Path(tmp)
        header = next(read_lines(corpus)).split("\t")
        src, tgt = header[-2], header[-1]
        dev = tmp_dir / "dev.tsv"
        dev.write_text("\n".join(list(_take(read_lines(corpus), 501))) + "\n", encoding="utf-8")
        for pairs in sizes:
            train = tmp_dir / f"train.{pairs}.tsv"
            _generate_corpus(corpus, pairs, train)
            cmd = [sys.executable, "-m", "nmt", "preprocess", "--src", src, "--tgt", tgt]
            cmd += ["--train", str(train), "--dev", str(dev), "--out", str(tmp_dir / f"out{pairs}")]
            for item in overrides:
                cmd += ["--set", item]
            seconds, rss = _run_measured(cmd)
            rows.append(
                {
                    "pairs": pairs,
                    "seconds": round(seconds, 2),
                    "pairs_per_s": round(pairs / seconds),
                    "peak_rss_mib": rss,
                }
            )
            train.unlink()
            shutil.rmtree(tmp_dir / f"out{pairs}")
    return rows


def _take(lines: Any, n: int) -> list[str]:
    return [line for _, line in zip(range(n), lines)]


def bench_sentences(path: Path, n: int) -> list[str]:
    """The first n non-empty lines of `path`: what the translation benchmarks decode."""
    lines = list(itertools.islice((line for line in read_lines(path) if line.strip()), n))
    if not lines:
        raise NmtError("no sentence to measure: the file has no non-empty line", str(path))
    return lines


def bench_batching(
    data_dir: Path, caps: Sequence[int], pools: Sequence[int], max_len: int = 200, seed: int = 1
) -> list[dict[str, Any]]:
    """Padding share and batch count of the training sampler for token caps and pool sizes."""
    ds = ParallelDataset(data_dir, "train", max_len=max_len)
    rows = []
    for cap in caps:
        for pool in pools:
            start = time.perf_counter()
            sampler = TokenBatchSampler(
                ds.src_sizes, ds.tgt_sizes, cap, indices=ds.indices, pool_size=pool, seed=seed
            )
            batches = sampler.batches(0)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "batch_tokens": cap,
                    "pool_size": pool,
                    "batches": len(batches),
                    "padding_pct": round(
                        100 * padding_share(batches, ds.src_sizes, ds.tgt_sizes), 2
                    ),
                    "epoch_plan_ms": round(1000 * seconds, 1),
                }
            )
    return rows


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_bf16": list(cpu_bf16_features()),
        **onednn_bf16(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


@functools.cache
def onednn_bf16() -> dict[str, str]:
    """The instruction set oneDNN dispatches to on this CPU and the kernel that runs a bf16
    matrix product (its name says `amx` where AMX is in use), from ONEDNN_VERBOSE in a child
    process: oneDNN reads the variable once, when it starts."""
    code = "import torch; a = torch.ones(64, 64, dtype=torch.bfloat16); a @ a"
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in out.splitlines():
        fields = line.split(",")
        if ",cpu,isa:" in line:
            found["onednn_isa"] = line.split("isa:", 1)[1]
        elif fields[2:6] == ["primitive", "exec", "cpu", "matmul"]:
            found["onednn_bf16_matmul"] = fields[6]
    return found


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as a Markdown table (the format docs/benchmarks.md uses)."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    out_dir: Path, name: str, rows: list[dict[str, Any]], settings: dict[str, Any]
) -> Path:
    path = Path(out_dir) / f"{name}.json"
    report = {"benchmark": name, "settings": settings, "environment": environment(), "rows": rows}
    atomic_write_json(path, report)
    return path


# --- training throughput and model FLOP utilisation -------------------------------------------


def matmul_ceiling(
    dtype: torch.dtype, device: torch.device, size: int = 2048, seconds: float = 1.0
) -> float:
    """FLOP/s of a size x size matrix product: the hardware ceiling utilisation is measured
    against, taken in the same process as the measurement it divides."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    _sync(device)
    return 2 * size**3 * n / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_flops(
    cfg: ModelConfig, vocab: int, src_lens: np.ndarray, tgt_lens: np.ndarray
) -> float:
    """Matrix-multiply FLOPs of one forward pass over a batch (2 per multiply-add).

    Counted from the layer sizes and the true (unpadded) lengths; elementwise work (gates,
    tanh, softmax) is left out, as is usual for utilisation figures. Training = 3 x forward.
    """
    e, h, layers = cfg.emb_size, cfg.hidden_size, cfg.layers
    dirs = 1 if cfg.arch == "rnnenc" else 2
    m = h * dirs  # encoder state size
    src, tgt = float(src_lens.sum()), float(tgt_lens.sum())
    pairs = float((src_lens * tgt_lens).sum())  # attention: every target step x source word
    gru = lambda inp: 2 * 3 * h * (inp + h)  # noqa: E731 (input and recurrent products)
    flops = src * dirs * (gru(e) + (layers - 1) * gru(m))  # encoder
    upper = (layers - 1) * gru(h)
    flops += len(src_lens) * 2 * h * layers * h  # initial decoder states
    if cfg.arch == "rnnenc":
        flops += len(src_lens) * 2 * h * h  # the summary c = tanh(V h_T)
        flops += tgt * (gru(e + h) + upper + 2 * (2 * h + e) * 2 * e)  # GRU + maxout readout
    elif cfg.arch == "rnnsearch":
        flops += src * 2 * m * h  # attention keys
        flops += tgt * (gru(e + m) + 2 * h * h + upper + 2 * (h + e + m) * 2 * e)
        flops += pairs * (2 * h + 2 * m)  # scores (v · tanh) and context
    else:
        flops += src * 2 * m * h
        feed = h if cfg.input_feeding else 0
        flops += tgt * (gru(e + feed) + upper + 2 * (m + h) * h + 2 * h * e)  # + W_c, readout
        flops += pairs * (2 * h + 2 * m)
    deep = 2 * 3 * h * h  # a deep transition's cell: U_k h per step, per layer and direction
    flops += src * dirs * layers * (cfg.enc_transition_depth - 1) * deep
    flops += tgt * layers * (cfg.dec_transition_depth - 1) * deep
    return flops + tgt * 2 * e * vocab  # output layer


def bench_train_one(
    data_dir: Path, cfg: Config, steps: int, warmup: int, device: str | None
) -> dict[str, Any]:
    """Train `steps` updates on real batches; tokens/s, peak memory and utilisation."""
    from nmt.device import resolve_runtime
    from nmt.train import Trainer

    runtime = resolve_runtime(device, cfg.train.precision, "train.precision", cfg.train.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, data_dir, Path(tmp), runtime, log=lambda _: None, progress_bar=False)
        batches = trainer.sampler.batches(0)
        window: dict[str, Any] = {"loss": 0.0, "nll": 0.0, "tokens": 0, "time": 0.0}
        for indices in batches[:warmup]:
            trainer._update([indices], window)
        _sync(runtime.device)
        if runtime.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(runtime.device)
        timed = batches[warmup : warmup + steps]
        start = time.perf_counter()
        for indices in timed:
            trainer._update([indices], window)
        _sync(runtime.device)
        seconds = time.perf_counter() - start
    ds, vocab = trainer.train_set, trainer.vocab["tgt_size"]
    flops = 3 * sum(
        forward_flops(cfg.model, vocab, ds.src_sizes[b], ds.tgt_sizes[b]) for b in timed
    )
    tokens = int(sum(ds.tgt_sizes[b].sum() for b in timed))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
        runtime.precision
    ]
    ceiling = matmul_ceiling(dtype, runtime.device)
    memory = runtime.memory_mib()
    return {
        "arch": cfg.model.arch,
        "emb": cfg.model.emb_size,
        "hidden": cfg.model.hidden_size,
        "precision": runtime.precision,
        "device": runtime.device.type,
        "steps": len(timed),
        "tokens_per_s": round(tokens / seconds),
        "tflops": round(flops / seconds / 1e12, 3),
        "ceiling_tflops": round(ceiling / 1e12, 3),
        "utilisation_pct": round(100 * flops / seconds / ceiling, 1),
        "peak_mem_mib": memory.get("gpu_peak_mib", memory["peak_rss_mib"]),
    }


def _cpu_columns() -> dict[str, str]:
    """What a CPU row's bf16 figures depend on: the CPU's bf16 features and oneDNN's kernel."""
    return {
        "cpu_bf16": "+".join(cpu_bf16_features()) or "none",
        "onednn_bf16_matmul": onednn_bf16().get("onednn_bf16_matmul", "unknown"),
    }


def _bench_train_child(args: tuple) -> dict[str, Any]:
    torch.set_num_threads(args[-1])
    return bench_train_one(*args[:-1])


def bench_train(
    data_dir: Path,
    runs: Sequence[dict[str, Any]],
    steps: int,
    warmup: int,
    device: str | None,
    base: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One fresh process per configuration, so peak memory is that configuration's own. A
    run's "variant" (a name) labels its row; its other keys are config overrides."""
    import multiprocessing as mp

    from nmt.config import apply_overrides

    context = mp.get_context("spawn")
    rows = []
    for run in runs:
        settings = {k: v for k, v in run.items() if k != "variant"}
        overrides = [*base, *(f"{k}={v}" for k, v in settings.items())]
        cfg = apply_overrides(Config(), overrides)
        with context.Pool(1) as pool:
            row = pool.apply(
                _bench_train_child,
                ((data_dir, cfg, steps, warmup, device, torch.get_num_threads()),),
            )
        if "variant" in run:
            row = {"variant": run["variant"]} | row
        # here, not in the child: oneDNN's kernel is probed once per bench, not per row
        rows.append(row | (_cpu_columns() if row["device"] == "cpu" else {}))
    return rows


def bench_distributed(
    data_dir: Path,
    config: Path | None,
    processes: Sequence[int],
    steps: int,
    device: str,
    base: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Training tokens/s of `nmt train` run plainly and under torchrun with each number of
    processes, all with the same global batch (accum_steps = max(processes) / processes) and
    the machine's cores split between the processes. The figure is the mean of the logged
    windows after the first (start-up and warm-up excluded)."""
    most, cores = max(processes), os.cpu_count() or 1
    if min(processes) < 1 or any(most % n for n in processes):
        raise NmtError(
            f"process counts {list(processes)} must be at least 1 and all divide {most}, so that "
            "their global batches are equal",
            "--processes",
            "use counts that divide the largest, e.g. 1,2,4",
        )
    rows = []
    with tempfile.TemporaryDirectory(prefix="nmt-bench-") as tmp:
        for launch, n in [("plain", 1), *(("torchrun", n) for n in processes)]:
            run = Path(tmp) / f"{launch}{n}"
            args = ["train", *([str(config)] if config else []), "--data", str(data_dir)]
            args += ["--out", str(run), "--device", device]
            sets = [*base, f"train.max_steps={steps}", f"train.valid_every={steps}"]
            sets += [f"train.log_every={max(steps // 4, 1)}", f"train.accum_steps={most // n}"]
            args += [arg for item in sets for arg in ("--set", item)]
            plain = [sys.executable, "-m", "nmt", *args]
            cmd = plain if launch == "plain" else torchrun_command(n, args)
            threads = str(max(cores // n, 1))
            env = {**os.environ, "OMP_NUM_THREADS": threads}
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            windows = [
                json.loads(line)
                for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
            ]
            speeds = [w["tokens_per_s"] for w in windows if w["event"] == "train"][1:]
            rows.append(
                {
                    "launch": launch,
                    "processes": n,
                    "threads_each": int(threads),
                    "accum_steps": most // n,
                    "tokens_per_s": round(sum(speeds) / len(speeds)),
                }
            )
    for row in rows:
        row["vs_plain"] = round(row["tokens_per_s"] / rows[0]["tokens_per_s"], 3)
    return rows


# --- translation speed: batched against one sentence at a time ---------------------------------


def _timed_translation(
    translator: Any, calls: list[list[str]], beam: int, batch_tokens: int | None = None
) -> dict:
    """Translate each list of `calls` with one call; seconds, sentences/s, output tokens/s."""
    start = time.perf_counter()
    results = [
        r
        for lines in calls
        for r in translator.translate_nbest(lines, beam, batch_tokens=batch_tokens)
    ]
    seconds = time.perf_counter() - start
    tokens = sum(len(r.hypotheses[0].pieces) + 1 for r in results if r.source_pieces)
    return {
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(results) / seconds, 1),
        "tokens_per_s": round(tokens / seconds),
    }


def bench_translate(
    checkpoint: Path,
    input_path: Path,
    n_lines: int,
    beams: Sequence[int],
    batch_tokens: Sequence[int],
    device: str,
    precision: str,
) -> list[dict[str, Any]]:
    """Per beam size: the whole file decoded in length-sorted batches of each size, then the
    same sentences one at a time (one call per sentence, as a naive loop would), in one process.
    `vs one at a time` is the batched rate over the one-at-a-time rate of the same beam."""
    from nmt.translate import Translator

    lines = bench_sentences(input_path, n_lines)
    translator = Translator.from_checkpoint(checkpoint, device, precision)
    translator.translate(lines[:8])  # warm-up: allocator, kernels, weight caches
    rows = []
    for beam in beams:
        batched = [
            {"beam": beam, "mode": f"batched, {size} tokens"}
            | _timed_translation(translator, [lines], beam, size)
            for size in batch_tokens
        ]
        single = _timed_translation(translator, [[line] for line in lines], beam)
        for row in [*batched, single]:
            row["vs one at a time"] = f"{row['sentences_per_s'] / single['sentences_per_s']:.1f}x"
        rows += [*batched, {"beam": beam, "mode": "one at a time"} | single]
    for row in rows:
        row.update(precision=translator.runtime.precision, device=str(translator.runtime.device))
        row.update(_cpu_columns() if translator.runtime.device.type == "cpu" else {})
    return rows
