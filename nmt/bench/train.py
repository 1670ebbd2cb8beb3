"""`nmt bench train`: training tokens/s, peak memory and model FLOP utilisation."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt.bench.report import cpu_columns, matmul_ceiling, sync
from nmt.config import Config, ModelConfig


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
        for indices in batches[:warmup]:
            trainer.update([indices])
        sync(runtime.device)
        if runtime.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(runtime.device)
        timed = batches[warmup : warmup + steps]
        start = time.perf_counter()
        for indices in timed:
            trainer.update([indices])
        sync(runtime.device)
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
        rows.append(row | (cpu_columns() if row["device"] == "cpu" else {}))
    return rows
