"""The training loop: batches, optimisation, checkpoints, early stopping, signals (validation
itself is validation.py).

`train()` is what `nmt train` calls. A run directory holds `config.yaml`, `metrics.jsonl` (one
JSON record per log line and per validation), `last.pt` (everything needed to resume exactly),
`best.pt` (best validation score so far), the last `keep_last` step checkpoints (`step-N.pt`,
for averaging) and `dev.hyp.txt` (the dev set as translated at the last validation). Every file
is written atomically, and the directory is locked while a run writes to it (see rundir.py).

Resuming restores the weights, optimizer, schedule, gradient scaler, RNG states and the
sampler's position inside its epoch, so a run stopped and resumed ends with the same weights as
one that never stopped. SIGINT and SIGTERM finish the current update, save `last.pt` and return.
An update whose gradient is not finite (NaN or overflow) is skipped with a warning, as fairseq
and Marian do; `MAX_SKIPPED` of them in a row stop the run with an error, and no checkpoint ever
holds weights that are not finite.

Under torchrun (see distributed.py) one update takes `world_size x accum_steps` batches of the
shared sampler, each rank its own share; rank 0 alone validates and writes, every rank stops at
the same update, and a run resumes on any number of processes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from nmt.config import Config, TrainConfig, apply_overrides, dump_config
from nmt.data.batching import ParallelDataset, TokenBatchSampler
from nmt.data.store import load_tokenizers, read_manifest
from nmt.data.subword_sampling import SubwordSampler
from nmt.device import Runtime, resolve_runtime
from nmt.distributed import Dist, setup, teardown
from nmt.errors import NmtError
from nmt.fileio import atomic_write_bytes, locked_dir
from nmt.model import build_model
from nmt.model.checkpoint import (
    check_weights,
    checkpoint_config,
    load_checkpoint,
    make_checkpoint,
    new_run_id,
    save_checkpoint,
    vocab_entry,
    vocabulary_id,
)
from nmt.model.seq2seq import count_parameters
from nmt.train import rundir
from nmt.train.ema import WeightAverage
from nmt.train.validation import DevSet

MAX_SKIPPED = 5  # updates in a row with a non-finite gradient before the run stops


@dataclass
class Progress:
    """Counters that a checkpoint carries so that a resumed run continues where it stopped."""

    step: int = 0  # optimizer updates
    tokens: int = 0  # target tokens trained on
    seconds: float = 0.0  # training time, summed over resumed runs
    best: float | None = None  # best validation score (valid_metric)
    best_step: int = 0
    bad_validations: int = 0  # validations since the best one
    lr_scale: float = 1.0  # `plateau` schedule's current factor
    lr_bad: int = 0  # validations since the last improvement, for `plateau`
    validated_step: int = -1  # step of the last validation


def learning_rate(cfg: TrainConfig, step: int, scale: float) -> float:
    """Warm-up then the schedule (`plateau` enters through `scale`)."""
    warm = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    decay = 1.0
    if cfg.schedule == "inverse_sqrt":
        decay = math.sqrt(max(cfg.warmup_steps, 1) / max(step, cfg.warmup_steps, 1))
    return max(cfg.lr * warm * decay * scale, cfg.min_lr if cfg.schedule == "plateau" else 0.0)


def _better(metric: str, score: float, best: float | None) -> bool:
    if best is None:
        return True
    return score < best if metric == "loss" else score > best


class _Loss(torch.nn.Module):
    """The model's training loss as a forward(), the call DistributedDataParallel hooks into."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.loss(*batch)


class Trainer:
    """One training run over a preprocessed directory; see the module docstring."""

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
        self.log, self.progress_bar = log, progress_bar
        self.dist = dist or Dist()
        manifest = read_manifest(data_dir)
        self.tokenizers = load_tokenizers(data_dir, manifest)
        self.vocab = vocab_entry(manifest, self.tokenizers)
        _check_data_fits(cfg, manifest, data_dir)
        torch.manual_seed(cfg.train.seed + self.dist.rank)  # ranks differ in dropout only
        tc = cfg.train
        self.train_set = ParallelDataset(data_dir, "train", max_len=tc.max_len)
        if not len(self.train_set.indices):
            raise NmtError(
                f"no training pair fits train.max_len={tc.max_len} (all "
                f"{self.train_set.skipped} have a side longer than that many subwords)",
                "train.max_len",
                "raise train.max_len (e.g. --set train.max_len=200)",
            )
        if cfg.data.sampling_alpha:
            self.train_set.resegment = SubwordSampler(
                Path(data_dir),
                manifest,
                self.tokenizers,
                cfg.data.sampling_alpha,
                cfg.data.nbest_size,
            )
        self.sampler = TokenBatchSampler(
            self.train_set.src_sizes,
            self.train_set.tgt_sizes,
            tc.batch_tokens,
            indices=self.train_set.indices,
            seed=tc.seed,
            pool_size=tc.pool_size,
        )
        tokenizers = (self.tokenizers[self.vocab["src"]], self.tokenizers[self.vocab["tgt"]])
        self.dev = DevSet(Path(data_dir), manifest, cfg, tokenizers, self.vocab["protect"])
        self.model = build_model(
            cfg.model, self.vocab["src_size"], self.vocab["tgt_size"], manifest["joint"]
        ).to(runtime.device)
        self.loss_fn = self.dist.wrap(_Loss(self.model), runtime.device)
        optim = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optim(
            self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=True
        )
        self.scaler = runtime.grad_scaler()
        self.ema = WeightAverage(self.model, tc.ema_decay) if tc.ema_decay else None
        self.progress = Progress()
        self.stop_signal: str | None = None
        self.run_id = new_run_id()
        self.skipped = 0  # updates in a row skipped for a non-finite gradient

    # --- state -----------------------------------------------------------------------------

    def train_state(self) -> dict[str, Any]:
        """What `last.pt` holds besides the weights; "rng" lists every rank's RNG states."""
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": self.dist.gather(rng),
            "progress": dataclasses.asdict(self.progress),
            "ema": None if self.ema is None else self.ema.state_dict(),
        }

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint written by `save('last')`."""
        where = str(self.run_dir / "last.pt")
        if vocabulary_id(checkpoint["vocab"]) != vocabulary_id(self.vocab):
            raise NmtError(
                "the checkpoint's vocabulary is not the data's (different SentencePiece models)",
                where,
                "resume with the preprocessed directory the run started with",
            )
        state = checkpoint["train"]
        if state is None:
            raise NmtError(
                "this checkpoint holds weights only, no training state to resume from",
                where,
                "put back the last.pt that `nmt train` wrote, or start a new run",
            )
        check_weights(checkpoint["model"], self.model.state_dict(), where)
        self.model.load_state_dict(checkpoint["model"])
        self.run_id = checkpoint.get("run_id") or self.run_id
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.progress = Progress(**state["progress"])
        self._restore_rng(state["rng"])
        if self.ema is not None:  # a run that had no average starts it from these weights
            self.ema = WeightAverage(self.model, self.ema.decay)
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])

    def _restore_rng(self, saved: list[dict[str, Any]] | dict[str, Any]) -> None:
        """Each rank's own RNG state when the number of processes is unchanged (exact
        resume); otherwise a fresh seed per (seed, step, rank)."""
        saved = saved if isinstance(saved, list) else [saved]  # nmt 0.1: rank 0 only
        d = self.dist
        if len(saved) != d.world_size:
            torch.manual_seed(hash((self.cfg.train.seed, self.progress.step, d.rank)) & 0xFFFFFFFF)
            return
        rng = saved[d.rank]
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def save(self, kind: str) -> None:
        """`last` (resumable), `best` or `step` (weights only, for translation/averaging;
        with `train.ema_decay`, the averaged weights).

        Every rank calls `save("last")` (it gathers every rank's RNG state); rank 0 writes.
        """
        state = self.train_state() if kind == "last" else None
        if not self.dist.is_main:
            return
        if self.ema is not None and kind != "last":  # last.pt: the raw weights, to resume
            weights = self.ema.weights(self.model)
        else:
            weights = self.model.state_dict()
        checkpoint = make_checkpoint(self.cfg, self.vocab, weights, state, self.run_id)
        if kind in ("last", "best"):
            save_checkpoint(self.run_dir / f"{kind}.pt", checkpoint)
            return
        save_checkpoint(self.run_dir / f"step-{self.progress.step}.pt", checkpoint)
        rundir.rotate_step_checkpoints(self.run_dir, self.cfg.train.keep_last)

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> tuple[Progress, str]:
        """Train until a stop condition; return the progress and why it stopped."""
        tc = self.cfg.train
        self.log(
            f"model {self.cfg.model.arch}: {count_parameters(self.model):,} parameters; "
            f"{len(self.train_set.indices):,} training pairs "
            f"({self.train_set.skipped} over max_len {tc.max_len} skipped); "
            f"device {self.runtime.device}, {self.runtime.precision}"
            + (f"; {self.dist.world_size} processes" if self.dist.active else "")
        )
        batches = self._batches()
        self._t0, self._seconds0 = time.perf_counter(), self.progress.seconds
        window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "time": time.perf_counter()}
        # a resumed run may be over already: then nothing is trained or written
        reason = self._limit_reached(
            bool(tc.max_minutes) and self.progress.seconds >= 60 * tc.max_minutes
        )
        if reason:
            self.log(f"the run is already over: {reason}; raise that limit with --set to go on")
        with _stop_on_signals(self), self._bar() as bar:
            while reason is None:
                group = list(islice(batches, tc.accum_steps * self.dist.world_size))
                if not group:
                    reason = f"max_epochs ({tc.max_epochs})"
                    break
                if self._update(group, window):
                    bar.update()
                    reason = self._after_update(window, bar)
        if self.progress.validated_step != self.progress.step:  # else saved right after it
            if reason != "signal":  # a signal asks to stop now, not after decoding dev
                self._validate()
            self.save("last")
        return self.progress, reason

    def _batches(self) -> Iterator[Any]:
        """Batches across epochs, resuming inside the epoch the sampler is at."""
        max_epochs = self.cfg.train.max_epochs
        while not max_epochs or self.sampler.epoch < max_epochs:
            yield from self.sampler

    def _bar(self) -> tqdm:
        total = self.cfg.train.max_steps or None
        return tqdm(
            total=total,
            initial=self.progress.step,
            unit=" steps",
            dynamic_ncols=True,
            disable=None if self.progress_bar else True,
            mininterval=1.0,
        )

    def _update(self, group: list[Any], window: dict[str, Any]) -> bool:
        """Forward/backward over this rank's batches of one update, then one optimizer step;
        False if the step was skipped because the gradient is not finite.

        The loss is summed over the whole group's target tokens (`tokens`, the same on every
        rank): scaled by world_size / tokens, DDP's gradient average is that sum's gradient,
        exactly as one process with accum_steps = world_size x accum_steps computes it. The
        gradient norm is taken after that average, so every rank skips the same updates.
        """
        tc, d = self.cfg.train, self.dist
        self.runtime.share_cores()
        self.model.train()
        # every rank builds the whole group: with subword sampling, the token count is known
        # only once the segmentations are drawn (seeded by seed, update and batch)
        step = self.progress.step + 1
        batches = [
            self.train_set.batch(indices, hash((tc.seed, step, i)) % 2**32)
            for i, indices in enumerate(group)
        ]
        tokens = sum(b.target_tokens for b in batches)
        mine = d.share(batches)
        group_loss = group_nll = 0.0
        for i, (batch, weight) in enumerate(mine):
            batch = batch.to(self.runtime.device)
            with d.no_sync(self.loss_fn, i < len(mine) - 1):
                with self.runtime.autocast():
                    loss, nll = self.loss_fn(
                        batch.src,
                        batch.src_lengths,
                        batch.tgt_in,
                        batch.tgt_out,
                        tc.label_smoothing,
                    )
                self.scaler.scale(loss * weight * d.world_size / tokens).backward()
            group_loss = group_loss + loss.detach() * weight  # no device sync until logging
            group_nll = group_nll + nll * weight
        lr = learning_rate(tc, self.progress.step + 1, self.progress.lr_scale)
        for group_ in self.optimizer.param_groups:
            group_["lr"] = lr
        if tc.clip_norm:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_norm or math.inf)
        if not self.scaler.is_enabled() and not math.isfinite(float(norm)):
            self._skip_update()  # fp16's scaler skips such steps itself, and rescales
            return False
        self.skipped = 0
        window["loss"] += group_loss
        window["nll"] += group_nll
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        self.progress.tokens += tokens
        window["tokens"] += tokens
        if self.ema is not None:
            self.ema.update(self.model, self.progress.step)
        return True

    def _skip_update(self) -> None:
        """Drop a non-finite gradient (the weights and optimizer state stay as they were);
        stop the run when it keeps happening."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        step = self.progress.step + 1
        self.log(
            f"warning: update {step} skipped ({self.skipped} in a row): the gradient is not "
            "finite (NaN or overflow)"
        )
        if self.skipped >= MAX_SKIPPED:
            saved = (self.run_dir / "last.pt").is_file()
            raise NmtError(
                f"training diverged: {MAX_SKIPPED} batches in a row at update {step} gave a "
                "gradient that is not finite; "
                + ("nothing was saved after the last good checkpoint" if saved else "no "
                   "checkpoint was saved yet"),
                str(self.run_dir),
                "lower train.lr (or raise train.warmup_steps, or use fp32), then "
                + ("--resume" if saved else "start again with --overwrite"),
            )  # fmt: skip

    def _after_update(self, window: dict[str, Any], bar: tqdm) -> str | None:
        """Log, validate, checkpoint; return a stop reason (the same on every rank) or None."""
        tc, p = self.cfg.train, self.progress
        p.seconds = self._seconds0 + time.perf_counter() - self._t0
        if p.step % tc.log_every == 0:
            self._log_train(window, bar)
        if p.step % tc.valid_every == 0:
            self._validate()
            if tc.keep_last:
                self.save("step")
            self.save("last")
        out_of_time = bool(tc.max_minutes) and p.seconds >= 60 * tc.max_minutes
        signalled, out_of_time = self.dist.vote([self.stop_signal is not None, out_of_time])
        if signalled:
            self.stop_signal = self.stop_signal or "a signal to another rank"
            return "signal"
        return self._limit_reached(out_of_time)

    def _limit_reached(self, out_of_time: bool) -> str | None:
        """Why the run is over (steps, time or patience used up), or None."""
        tc, p = self.cfg.train, self.progress
        if tc.max_steps and p.step >= tc.max_steps:
            return f"max_steps ({tc.max_steps})"
        if out_of_time:
            return f"max_minutes ({tc.max_minutes})"
        if tc.patience and p.bad_validations >= tc.patience:
            return f"no improvement in {tc.patience} validations (early stopping)"
        return None

    def _log_train(self, window: dict[str, Any], bar: tqdm) -> None:
        p, now = self.progress, time.perf_counter()
        tokens = max(window["tokens"], 1)
        loss, nll = self.dist.sum([float(window["loss"]), float(window["nll"])])
        record = {
            "event": "train",
            "step": p.step,
            "epoch": self.sampler.epoch,
            "loss": loss / tokens,
            "ppl": math.exp(min(nll / tokens, 50)),
            "lr": self.optimizer.param_groups[0]["lr"],
            "tokens_per_s": round(tokens / max(now - window["time"], 1e-9)),
            "seconds": round(p.seconds, 1),
            **self.runtime.memory_mib(),
        }
        self._record(record)
        bar.set_postfix(
            loss=f"{record['loss']:.3f}",
            lr=f"{record['lr']:.2e}",
            tok_s=record["tokens_per_s"],
            mem=f"{record['peak_rss_mib'] / 1024:.2f}G",
            refresh=False,
        )
        window.update(loss=0.0, nll=0.0, tokens=0, time=now)

    def _validate(self) -> None:
        """Validate on rank 0 alone; every rank then takes rank 0's progress (best score,
        schedule, early-stopping count)."""
        if self.dist.is_main:
            averaged = self.ema.applied(self.model) if self.ema else contextlib.nullcontext()
            with averaged:  # validation, and best.pt, see the averaged weights
                self._evaluate()
        vars(self.progress).update(vars(self.dist.broadcast(self.progress)))  # in place

    def _evaluate(self) -> None:
        """Dev loss and perplexity, greedy BLEU/chrF, dev.hyp.txt; keeps best.pt and the
        schedule."""
        tc, p = self.cfg.train, self.progress
        result, hyps = self.dev.evaluate(self.model, self.runtime)
        text = "".join(h + "\n" for h in hyps)
        atomic_write_bytes(self.run_dir / "dev.hyp.txt", text.encode("utf-8"))
        score = result[tc.valid_metric]
        improved = _better(tc.valid_metric, score, p.best)
        if improved:
            p.best, p.best_step, p.bad_validations, p.lr_bad = score, p.step, 0, 0
            self.save("best")
        else:
            p.bad_validations += 1
            p.lr_bad += 1
            if tc.schedule == "plateau" and p.lr_bad > tc.lr_patience:
                p.lr_scale, p.lr_bad = p.lr_scale * tc.lr_decay, 0
        p.validated_step = p.step
        memory = self.runtime.memory_mib()
        self._record(
            {
                "event": "valid",
                "step": p.step,
                "epoch": self.sampler.epoch,
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

    def _record(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            rundir.append_record(self.run_dir, record)


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


def _check_same_model(saved: Config, cfg: Config, path: Path) -> None:
    """The model of a resumed run is the checkpoint's: its weights fit no other shape."""
    changed = [
        f"model.{f.name}"
        for f in dataclasses.fields(saved.model)
        if getattr(saved.model, f.name) != getattr(cfg.model, f.name)
    ]
    if changed:
        raise NmtError(
            f"{', '.join(changed)} cannot change when a run is resumed",
            str(path),
            "drop those --set overrides, or start a new run with another --out",
        )


def train(
    cfg: Config,
    data_dir: Path,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    overrides: list[str] | None = None,
    device: str | None = None,
    progress_bar: bool = True,
    log: Callable[[str], None] = tqdm.write,
) -> tuple[Trainer, str]:
    """Train (or resume) a model; returns the trainer (model, progress) and why it stopped.

    With `resume`, the run's own config is used, with `overrides` applied on top (e.g. a larger
    train.max_steps); `cfg` is then ignored. Started by torchrun, the process joins its group.
    """
    run_dir = Path(run_dir)
    read_manifest(data_dir)  # a bad --data fails before the run directory is touched
    dist, device = setup(device)
    if not dist.is_main:
        log, progress_bar = _quiet, False
    trainer = None
    try:
        with locked_dir(run_dir) if dist.is_main else contextlib.nullcontext():
            trainer = _run(
                cfg,
                data_dir,
                run_dir,
                resume,
                overwrite,
                overrides,
                device,
                dist,
                log,
                progress_bar,
            )
            progress, reason = trainer.run()
            dist.barrier()  # no rank tears the group down while another still writes or talks
    finally:
        if trainer is not None:  # DDP holds the process group: it must go before the group
            trainer.loss_fn = _Loss(trainer.model)
        teardown(dist)
    best = (
        f"best {trainer.cfg.train.valid_metric} {progress.best:.2f} at step {progress.best_step}"
        if progress.best is not None
        else "not validated yet"
    )
    log(f"stopped at step {progress.step}: {reason}; {best}")
    return trainer, reason


def _run(
    cfg: Config,
    data_dir: Path,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    overrides: list[str] | None,
    device: str | None,
    dist: Dist,
    log: Callable[[str], None],
    progress_bar: bool,
) -> Trainer:
    """The trainer of a new or resumed run, its directory prepared (rank 0 holds its lock)."""
    if dist.is_main:
        rundir.prepare(run_dir, resume, overwrite)
    dist.barrier()
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(run_dir / "last.pt")
        saved = checkpoint_config(checkpoint, str(run_dir / "last.pt"))
        cfg = apply_overrides(copy.deepcopy(saved), overrides or [])
        _check_same_model(saved, cfg, run_dir / "last.pt")
    runtime = resolve_runtime(device, cfg.train.precision, "train.precision", cfg.train.threads)
    trainer = Trainer(cfg, data_dir, run_dir, runtime, log, progress_bar, dist)
    if checkpoint is not None:
        trainer.load(checkpoint)
        if dist.is_main:
            rundir.truncate_metrics(run_dir, trainer.progress.step, log)
        log(f"resumed at step {trainer.progress.step} (epoch {trainer.sampler.epoch})")
    if dist.is_main:
        atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode("utf-8"))
    return trainer


def _quiet(message: str) -> None:
    """The log of ranks other than 0."""
