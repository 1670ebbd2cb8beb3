"""What a run reports as it goes: `metrics.jsonl` (one JSON record per train log line and per
validation; rank 0 writes it), the log lines and the progress bar's figures."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from nmt.config import Config
from nmt.data.batching import ParallelDataset
from nmt.device import Runtime
from nmt.distributed import Dist
from nmt.model.seq2seq import count_parameters
from nmt.train import rundir
from nmt.train.progress import Progress
from nmt.train.update import Sums


@dataclass
class Window:
    """Sums over the updates since the last train log line (device tensors until logged)."""

    loss: torch.Tensor | float = 0.0
    nll: torch.Tensor | float = 0.0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)


@dataclass(eq=False)
class RunLog:
    """The run's log lines, metrics.jsonl records and progress bar."""

    cfg: Config
    run_dir: Path
    runtime: Runtime
    dist: Dist
    log: Callable[[str], None]  # silent on ranks other than 0
    progress_bar: bool
    window: Window = field(default_factory=Window)

    def begin(self, model: torch.nn.Module, train_set: ParallelDataset) -> None:
        """Say what is trained, on what and where; the first window starts now."""
        self.log(
            f"model {self.cfg.model.arch}: {count_parameters(model):,} parameters; "
            f"{len(train_set.indices):,} training pairs "
            f"({train_set.skipped} over max_len {self.cfg.train.max_len} skipped); "
            f"device {self.runtime.device}, {self.runtime.precision}"
            + (f"; {self.dist.world_size} processes" if self.dist.active else "")
        )
        self.window = Window()

    def bar(self, step: int) -> tqdm:
        """The progress bar, in updates, from `step` (a resumed run's) to train.max_steps."""
        return tqdm(
            total=self.cfg.train.max_steps or None,
            initial=step,
            unit=" steps",
            dynamic_ncols=True,
            disable=None if self.progress_bar else True,
            mininterval=1.0,
        )

    def add(self, sums: Sums) -> None:
        """Count one update into the window."""
        self.window.loss += sums.loss
        self.window.nll += sums.nll
        self.window.tokens += sums.tokens

    def train(self, progress: Progress, epoch: int, lr: float, bar: tqdm) -> None:
        """The window's record (loss and perplexity summed over the ranks) and the bar's
        figures; a new window starts."""
        now, window = time.perf_counter(), self.window
        tokens = max(window.tokens, 1)
        loss, nll = self.dist.sum([float(window.loss), float(window.nll)])
        record = {
            "event": "train",
            "step": progress.step,
            "epoch": epoch,
            "loss": loss / tokens,
            "ppl": math.exp(min(nll / tokens, 50)),
            "lr": lr,
            "tokens_per_s": round(tokens / max(now - window.start, 1e-9)),
            "seconds": round(progress.seconds, 1),
            **self.runtime.memory_mib(),
        }
        self.record(record)
        bar.set_postfix(
            loss=f"{record['loss']:.3f}",
            lr=f"{record['lr']:.2e}",
            tok_s=record["tokens_per_s"],
            mem=f"{record['peak_rss_mib'] / 1024:.2f}G",
            refresh=False,
        )
        self.window = Window(start=now)

    def validation(
        self, progress: Progress, epoch: int, result: dict[str, Any], improved: bool
    ) -> None:
        """A validation's record and log line, with one dev sample."""
        p, memory = progress, self.runtime.memory_mib()
        self.record(
            {
                "event": "valid",
                "step": p.step,
                "epoch": epoch,
                **result,
                "best": improved,
                "seconds": round(p.seconds, 1),
                **memory,
            }
        )
        self.log(
            f"step {p.step}: dev loss {result['loss']:.3f} ppl {result['ppl']:.2f} "
            f"BLEU {result['bleu']:.2f} chrF {result['chrf']:.2f}"
            + (" (best)" if improved else f" (best {p.best:.2f} at {p.best_step})")
            + f"; peak memory {memory['peak_rss_mib'] / 1024:.2f} GiB"
        )
        for sample in result["samples"][:1]:
            self.log(f"  src: {sample['src']}\n  ref: {sample['ref']}\n  hyp: {sample['hyp']}")

    def record(self, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl (rank 0 alone writes)."""
        if self.dist.is_main:
            rundir.append_record(self.run_dir, record)
