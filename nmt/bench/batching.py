"""`nmt bench batching`: the padding share of the token-bucketed training sampler."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmt.data.batching import ParallelDataset, TokenBatchSampler, padding_share


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
