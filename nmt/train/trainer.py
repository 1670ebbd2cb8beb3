"""The training loop: `Trainer.run` takes the sampler's batches an update at a time and after
each update logs, validates, checkpoints and decides whether to stop, each through a named
collaborator (the package docstring tours them).

Under torchrun every rank runs this loop over the same batches, each training on its own share
(update.py); rank 0 alone validates and writes, and every rank stops at the same update.
SIGINT and SIGTERM finish the current update, save last.pt and return.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nmt.config import Config, TrainConfig
from nmt.data.batching import ParallelDataset, TokenBatchSampler
from nmt.data.protect import model_protection
from nmt.data.shortlist import STORED_K, build_shortlist
from nmt.data.store import load_tokenizers, read_manifest
from nmt.data.subword_sampling import SubwordSampler
from nmt.data.tokenizer import Tokenizer
from nmt.device import Runtime
from nmt.distributed import Dist
from nmt.errors import NmtError
from nmt.fileio import atomic_write_bytes
from nmt.model import build_model
from nmt.model.checkpoint import vocab_entry
from nmt.train.ema import WeightAverage
from nmt.train.progress import Progress, after_validation, limit_reached, out_of_time
from nmt.train.runlog import RunLog
from nmt.train.schedule import check_schedule, learning_rate
from nmt.train.state import Checkpoints
from nmt.train.update import Updater
from nmt.train.validation import DevSet
from nmt.train.word_dropout import WordDropout


class Trainer:
    """One training run over a preprocessed directory."""

    def __init__(
        self,
        cfg: Config,
        data_dir: Path,
        run_dir: Path,
        runtime: Runtime,
        log: Callable[[str], None] = tqdm.write,
        progress_bar: bool = True,
        dist: Dist | None = None,
    ):
        self.cfg, self.run_dir, self.runtime = cfg, Path(run_dir), runtime
        self.log, self.dist = log, dist or Dist()
        tc = cfg.train
        check_schedule(tc)
        manifest = read_manifest(data_dir)
        self.tokenizers = load_tokenizers(data_dir, manifest)
        self.vocab = vocab_entry(manifest, self.tokenizers)
        # every checkpoint carries the lexical shortlist (a few seconds; the same on resume)
        k = max(STORED_K, cfg.decode.shortlist_k)
        shortlist = build_shortlist(Path(data_dir), k, seed=tc.seed)
        self.vocab["shortlist"] = shortlist.entry()
        _check_data_fits(cfg, manifest, data_dir)
        torch.manual_seed(tc.seed + self.dist.rank)  # ranks differ in dropout only
        self.train_set = _train_set(cfg, data_dir, manifest, self.tokenizers)
        self.sampler = TokenBatchSampler(
            self.train_set.src_sizes,
            self.train_set.tgt_sizes,
            tc.batch_tokens,
            indices=self.train_set.indices,
            seed=tc.seed,
            pool_size=tc.pool_size,
        )
        tokenizers = (self.tokenizers[self.vocab["src"]], self.tokenizers[self.vocab["tgt"]])
        self.dev = DevSet(
            Path(data_dir), manifest, cfg, tokenizers, self.vocab["protect"], shortlist
        )
        self.model = build_model(  # 4 copies: weights, gradients, Adam's two moments
            cfg.model, self.vocab["src_size"], self.vocab["tgt_size"], manifest["joint"], copies=4
        ).to(runtime.device)
        self.updater = Updater(
            self.model, tc, runtime, self.dist, log, self.run_dir, _word_dropout(tc, tokenizers)
        )
        self.ema = WeightAverage(self.model, tc.ema_decay) if tc.ema_decay else None
        self.progress = Progress()
        self.checkpoints = Checkpoints(
            cfg,
            self.vocab,
            self.run_dir,
            self.dist,
            self.model,
            self.updater.optimizer,
            self.updater.scaler,
            self.sampler,
        )
        self.runlog = RunLog(cfg, self.run_dir, runtime, self.dist, log, progress_bar)
        self.stop_signal: str | None = None  # the signal's name once one asks the run to stop

    def run(self) -> tuple[Progress, str]:
        """Train until a stop condition; return the progress and why it stopped."""
        tc, p = self.cfg.train, self.progress
        self.runlog.begin(self.model, self.train_set)
        batches = self._batches()
        self._t0, self._seconds0 = time.perf_counter(), p.seconds
        # a resumed run may be over already: then nothing is trained or written
        reason = limit_reached(p, tc, out_of_time(p, tc))
        if reason:
            self.log(f"the run is already over: {reason}; raise that limit with --set to go on")
        with _stop_on_signals(self), self.runlog.bar(p.step) as bar:
            while reason is None:
                group = list(islice(batches, tc.accum_steps * self.dist.world_size))
                if not group:
                    reason = f"max_epochs ({tc.max_epochs})"
                    break
                if self.update(group):
                    bar.update()
                    reason = self._after_update(bar)
        if p.validated_step != p.step:  # else saved right after it
            if reason != "signal":  # a signal asks to stop now, not after decoding dev
                self._validate()
            self.save("last")
        return p, reason

    def _batches(self) -> Iterator[np.ndarray]:
        """Batches (pair indices) across epochs, resuming inside the epoch the sampler is at."""
        max_epochs = self.cfg.train.max_epochs
        while not max_epochs or self.sampler.epoch < max_epochs:
            yield from self.sampler

    def update(self, group: list[np.ndarray]) -> bool:
        """One optimizer update over `group`, every rank's batches (as pair indices); False if
        it was skipped because the gradient is not finite."""
        tc, p = self.cfg.train, self.progress
        step = p.step + 1
        # every rank builds the whole group: with subword sampling, the token count is known
        # only once the segmentations are drawn (seeded by seed, update and batch)
        batches = [
            self.train_set.batch(indices, hash((tc.seed, step, i)) % 2**32)
            for i, indices in enumerate(group)
        ]
        sums = self.updater(batches, learning_rate(tc, step, p.lr_scale, p.seconds), step)
        if sums is None:
            return False
        p.step, p.tokens = step, p.tokens + sums.tokens
        self.runlog.add(sums)
        if self.ema is not None:
            self.ema.update(self.model, step)
        return True

    def _after_update(self, bar: tqdm) -> str | None:
        """Log, validate, checkpoint; return a stop reason (the same on every rank) or None."""
        tc, p = self.cfg.train, self.progress
        p.seconds = self._seconds0 + time.perf_counter() - self._t0
        if p.step % tc.log_every == 0:
            lr = self.updater.optimizer.param_groups[0]["lr"]
            self.runlog.train(p, self.sampler.epoch, lr, bar)
        if p.step % tc.valid_every == 0:
            self._validate()
            if tc.keep_last:
                self.save("step")
            self.save("last")
        # the slowest rank's clock, on every rank: the schedule and the time limit must agree
        signalled, p.seconds = self.dist.maximum([float(self.stop_signal is not None), p.seconds])
        if signalled:
            self.stop_signal = self.stop_signal or "a signal to another rank"
            return "signal"
        return limit_reached(p, tc, out_of_time(p, tc))

    def _validate(self) -> None:
        """Validate on rank 0 alone; every rank then takes rank 0's progress (best score,
        schedule, early-stopping count)."""
        if self.dist.is_main:
            averaged = self.ema.applied(self.model) if self.ema else contextlib.nullcontext()
            with averaged:  # validation, and best.pt, see the averaged weights
                self._evaluate()
        vars(self.progress).update(vars(self.dist.broadcast(self.progress)))  # in place

    def _evaluate(self) -> None:
        """Dev loss and perplexity, greedy BLEU/chrF, dev.hyp.txt; the progress takes the
        score, and a new best is kept as best.pt."""
        tc = self.cfg.train
        result, hyps = self.dev.evaluate(self.model, self.runtime)
        text = "".join(h + "\n" for h in hyps)
        atomic_write_bytes(self.run_dir / "dev.hyp.txt", text.encode("utf-8"))
        improved = after_validation(self.progress, result[tc.valid_metric], tc)
        if improved:
            self.save("best")
        self.runlog.validation(self.progress, self.sampler.epoch, result, improved)

    def save(self, kind: str) -> None:
        """Write last.pt, best.pt or a step checkpoint (state.py); every rank calls
        `save("last")`."""
        self.checkpoints.save(kind, self.progress, self.ema)

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint written by `save("last")`."""
        self.progress, self.ema = self.checkpoints.resume(checkpoint, self.ema)


def _train_set(
    cfg: Config, data_dir: Path, manifest: dict[str, Any], tokenizers: dict[str, Tokenizer]
) -> ParallelDataset:
    """The training split's pairs that fit `train.max_len`; with `data.sampling_alpha`, each
    batch segmented anew."""
    max_len = cfg.train.max_len
    train_set = ParallelDataset(data_dir, "train", max_len=max_len)
    if not len(train_set.indices):
        raise NmtError(
            f"no training pair fits train.max_len={max_len} (all "
            f"{train_set.skipped} have a side longer than that many subwords)",
            "train.max_len",
            "raise train.max_len (e.g. --set train.max_len=200)",
        )
    if cfg.data.sampling_alpha:
        train_set.resegment = SubwordSampler(
            Path(data_dir), manifest, tokenizers, cfg.data.sampling_alpha, cfg.data.nbest_size
        )
    return train_set


def _word_dropout(tc: TrainConfig, tokenizers: tuple[Tokenizer, Tokenizer]) -> WordDropout:
    """The run's word dropout, which spares the placeholders of protected spans."""
    _, placeholders = model_protection(tokenizers, None)
    return WordDropout(tc.src_word_dropout, tc.tgt_word_dropout, placeholders or ((), ()))


def _check_data_fits(cfg: Config, manifest: dict[str, Any], data_dir: Path) -> None:
    """A config that names its data must agree with the preprocessed directory."""
    sizes = {info["vocab_size"] for info in manifest["tokenizers"].values()}
    if cfg.data.train and cfg.data.vocab_size not in sizes:
        raise NmtError(
            f"the config says data.vocab_size={cfg.data.vocab_size} but {data_dir} was "
            f"preprocessed with {sorted(sizes)}",
            "data.vocab_size",
            "preprocess again with this config, or fix data.vocab_size",
        )


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to stop after the current update (a second SIGINT aborts).

    Under torchrun a second signal is ignored: one rank aborting alone would leave the others
    waiting in a collective. torchrun itself kills its workers 30 s after forwarding a signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_signal:
            if signum == signal.SIGINT and not trainer.dist.active:
                raise KeyboardInterrupt
            return
        trainer.stop_signal = signal.Signals(signum).name
        again = "" if trainer.dist.active else " (press Ctrl-C again to abort without saving)"
        trainer.log(f"{trainer.stop_signal}: saving a checkpoint after this update{again}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
