import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nmt import fileio
from nmt.config import Config, TrainConfig, apply_overrides
from nmt.errors import NmtError
from nmt.model.checkpoint import average_checkpoints, load_checkpoint, save_checkpoint
from nmt.train import learning_rate, train
from nmt.train.progress import Progress, after_validation, limit_reached, out_of_time
from tests.conftest import SMALL


def _cfg(*overrides):
    return apply_overrides(Config(), [*SMALL, *overrides])


def _quiet(_):
    pass


@pytest.mark.parametrize(
    "options",
    [
        [],
        [  # every model option: parameters the optimizer state and checkpoints must keep
            "model.layers=2",
            "model.layer_norm=true",
            "model.residual=true",
            "model.enc_transition_depth=2",
            "model.dec_transition_depth=2",
        ],
        [  # the regularisers that draw random numbers: resume must draw what a whole run does
            "train.src_word_dropout=0.2",
            "train.tgt_word_dropout=0.3",
            "model.emb_dropout=0.4",
            "model.output_dropout=0.1",
        ],
    ],
    ids=["recipe", "model-options", "regularisers"],
)
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(options, toy_dir, tmp_path):
    # a fixed thread count: by default it follows the machine's load, and 1 thread and 2 can
    # round a product differently (this test failed beside a busy process without it)
    common = ["model.dropout=0.3", "train.accum_steps=2", "train.max_steps=12", "train.threads=1"]
    common += options
    whole, _ = train(_cfg(*common), toy_dir, tmp_path / "a", progress_bar=False, log=_quiet)
    train(
        _cfg(*common, "train.max_steps=5"), toy_dir, tmp_path / "b", progress_bar=False, log=_quiet
    )
    resumed, _ = train(
        Config(),
        toy_dir,
        tmp_path / "b",
        resume=True,
        overrides=["train.max_steps=12"],
        progress_bar=False,
        log=_quiet,
    )
    assert resumed.progress.step == 12
    for (name, a), (_, b) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items()
    ):
        assert torch.equal(a, b), name
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "b" / "metrics.jsonl").open()
        if '"train"' in line
    ]
    assert steps == list(range(2, 13, 2))  # logged once each, none twice


def test_sigterm_saves_and_resume_finishes(toy_dir, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nmt", "train", "--data", str(toy_dir), "--out", str(run)]
    cmd += [f"--set={s}" for s in [*SMALL, "train.max_steps=100000"]]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    deadline = time.monotonic() + 60
    while not (run / "metrics.jsonl").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr  # saved, but not finished
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr
    stopped = load_checkpoint(run / "last.pt")["train"]["progress"]["step"]
    assert stopped >= 2
    resumed, reason = train(
        Config(),
        toy_dir,
        run,
        resume=True,
        overrides=[f"train.max_steps={stopped + 3}"],
        progress_bar=False,
        log=_quiet,
    )
    assert resumed.progress.step == stopped + 3 and reason.startswith("max_steps")
    assert (run / "best.pt").exists()


def test_early_stopping_and_max_epochs(toy_dir, tmp_path):
    _, reason = train(
        _cfg("train.lr=0", "train.valid_every=1", "train.patience=2", "train.max_steps=50"),
        toy_dir,
        tmp_path / "a",
        progress_bar=False,
        log=_quiet,
    )
    assert reason == "no improvement in 2 validations (early stopping)"
    trainer, reason = train(
        _cfg("train.max_epochs=1", "train.batch_tokens=4000"),
        toy_dir,
        tmp_path / "b",
        progress_bar=False,
        log=_quiet,
    )
    assert reason == "max_epochs (1)"
    assert trainer.progress.step == len(trainer.sampler.batches(0))


def test_step_checkpoints_keep_the_last_k(toy_dir, tmp_path):
    train(
        _cfg("train.valid_every=2", "train.keep_last=2", "train.max_steps=8"),
        toy_dir,
        tmp_path / "r",
        progress_bar=False,
        log=_quiet,
    )
    assert sorted(p.name for p in (tmp_path / "r").glob("*.pt")) == [
        "best.pt",
        "last.pt",
        "step-6.pt",
        "step-8.pt",
    ]
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["train"] is None and best["vocab"]["tokenizers"]["es"]["proto"]
    assert best["config"]["model"]["hidden_size"] == 48


def test_learning_rate_schedules():
    warm = TrainConfig(lr=1.0, warmup_steps=4)
    assert [learning_rate(warm, s, 1.0) for s in (1, 2, 4, 8)] == [0.25, 0.5, 1.0, 1.0]
    inv = TrainConfig(lr=1.0, warmup_steps=4, schedule="inverse_sqrt")
    assert learning_rate(inv, 16, 1.0) == pytest.approx(0.5)
    plateau = TrainConfig(lr=1.0, schedule="plateau", min_lr=0.1)
    assert learning_rate(plateau, 10, 0.25) == 0.25 and learning_rate(plateau, 10, 0.01) == 0.1


@pytest.mark.parametrize("budget", ["steps", "minutes"])
def test_budgeted_schedules_anneal_into_the_end_of_the_budget(budget):
    """lr at the start, the middle and the end of a budget of 100 updates or of 10 minutes."""
    limit = ["max_steps=100"] if budget == "steps" else ["max_minutes=10"]
    points = [(1, 0.0), (51, 300.0), (101, 600.0)]  # (update, seconds before it): 0, 1/2, all
    for schedule, middle in [("linear", 0.55), ("cosine", 0.55), ("rex", 0.1 + 0.9 * 2 / 3)]:
        sets = [f"train.{s}" for s in [*limit, f"schedule={schedule}", "lr=1.0", "min_lr=0.1"]]
        cfg = apply_overrides(Config(), sets).train
        rates = [learning_rate(cfg, step, 1.0, seconds) for step, seconds in points]
        assert rates == pytest.approx([1.0, middle, 0.1]), schedule
    steps_only = TrainConfig(schedule="linear", lr=1.0, min_lr=0.0, max_steps=100)
    assert learning_rate(steps_only, 100, 1.0) == pytest.approx(0.01)  # the last update
    assert learning_rate(steps_only, 150, 1.0) == 0.0  # never below min_lr once spent
    both = TrainConfig(schedule="linear", lr=1.0, min_lr=0.0, max_steps=100, max_minutes=10)
    assert learning_rate(both, 11, 1.0, 300.0) == pytest.approx(0.5)  # the time runs out first
    warm = TrainConfig(schedule="linear", lr=1.0, min_lr=0.0, max_steps=100, warmup_steps=10)
    assert learning_rate(warm, 5, 1.0) == pytest.approx(0.5 * 0.96)


def test_a_budgeted_schedule_needs_a_budget(toy_dir, tmp_path):
    with pytest.raises(NmtError, match="neither train.max_steps nor train.max_minutes") as err:
        train(_cfg("train.schedule=cosine"), toy_dir, tmp_path / "r", log=_quiet)
    assert "--set train.max_steps" in str(err.value.fix)
    with pytest.raises(NmtError, match="min_lr .* is above train.lr"):
        bad = _cfg("train.schedule=rex", "train.max_steps=9", "train.lr=1e-4", "train.min_lr=1e-3")
        train(bad, toy_dir, tmp_path / "r", log=_quiet)


def test_a_resumed_run_continues_the_schedule(toy_dir, tmp_path):
    """A run stopped by SIGTERM mid-way and resumed logs the learning rates of a whole run."""
    sets = [
        "train.schedule=linear", "train.warmup_steps=3", "train.max_steps=10", "train.lr=0.01",
        "train.log_every=1", "train.valid_every=4", "train.threads=1",
    ]  # fmt: skip
    train(_cfg(*sets), toy_dir, tmp_path / "whole", progress_bar=False, log=_quiet)

    def stop_at_first_validation(message: str) -> None:
        if message.startswith("step 4:"):
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler: save, then stop

    _, reason = train(
        _cfg(*sets), toy_dir, tmp_path / "cut", progress_bar=False, log=stop_at_first_validation
    )
    assert reason == "signal"
    train(Config(), toy_dir, tmp_path / "cut", resume=True, progress_bar=False, log=_quiet)

    def rates(run: str) -> dict[int, float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r["lr"] for r in map(json.loads, lines) if r["event"] == "train"}

    whole = rates("whole")
    assert rates("cut") == whole and sorted(whole) == list(range(1, 11))
    assert whole[1] == pytest.approx(0.01 / 3)  # warm-up
    assert whole[10] == pytest.approx(1e-6 + (0.01 - 1e-6) / 10)  # the last of ten updates


def test_after_validation_keeps_the_best_counts_patience_and_decays_plateau():
    cfg = TrainConfig(
        valid_metric="loss", patience=2, schedule="plateau", lr_patience=1, lr_decay=0.5
    )
    p = Progress(step=10)
    assert after_validation(p, 3.0, cfg)  # the first score is the best so far
    p.step = 20
    assert not after_validation(p, 3.5, cfg)  # loss: higher is worse
    assert (p.best, p.best_step, p.bad_validations, p.lr_bad, p.validated_step) == (3, 10, 1, 1, 20)
    p.step = 30
    assert after_validation(p, 2.5, cfg)  # lower is better: both counts start again
    assert (p.best, p.best_step, p.bad_validations, p.lr_bad, p.lr_scale) == (2.5, 30, 0, 0, 1)
    p.step = 40
    assert not after_validation(p, 2.5, cfg)  # a tie is no improvement
    assert (p.lr_scale, p.lr_bad) == (1.0, 1) and limit_reached(p, cfg, False) is None
    p.step = 50
    assert not after_validation(p, 2.6, cfg)
    assert (p.lr_scale, p.lr_bad) == (0.5, 0)  # more than lr_patience=1 bad ones: decayed
    assert limit_reached(p, cfg, False) == "no improvement in 2 validations (early stopping)"
    p.step = 60
    assert after_validation(p, 2.0, cfg)  # the scale stays where plateau took it
    assert (p.best, p.best_step, p.bad_validations, p.lr_scale) == (2.0, 60, 0, 0.5)
    assert limit_reached(p, cfg, False) is None

    bleu = TrainConfig(valid_metric="bleu", patience=0)  # higher is better; never stops early
    q = Progress()
    assert [after_validation(q, s, bleu) for s in (10.0, 9.0, 10.0, 8.0, 7.0, 11.0)] == [
        True, False, False, False, False, True,
    ]  # fmt: skip
    assert q.best == 11.0 and q.lr_scale == 1.0  # the constant schedule ignores the count
    q.bad_validations = 99
    assert limit_reached(q, bleu, False) is None


def test_limit_reached_names_the_limit():
    cfg = TrainConfig(max_steps=5, max_minutes=1.0)
    assert limit_reached(Progress(step=4), cfg, False) is None
    assert limit_reached(Progress(step=5), cfg, False) == "max_steps (5)"
    assert limit_reached(Progress(step=4), cfg, True) == "max_minutes (1.0)"
    assert not out_of_time(Progress(seconds=59.0), cfg) and out_of_time(Progress(seconds=60), cfg)
    assert not out_of_time(Progress(seconds=1e9), TrainConfig())  # 0: no limit


# --- run directories and checkpoints ---------------------------------------------------------


def test_run_directory_rules(toy_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg("train.max_steps=2"), toy_dir, run, progress_bar=False, log=_quiet)
    with pytest.raises(NmtError, match="holds another run"):
        train(_cfg("train.max_steps=2"), toy_dir, run, progress_bar=False, log=_quiet)
    train(_cfg("train.max_steps=1"), toy_dir, run, overwrite=True, progress_bar=False, log=_quiet)
    assert load_checkpoint(run / "last.pt")["train"]["progress"]["step"] == 1
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(NmtError, match="holds no run"):
        train(_cfg(), toy_dir, other, overwrite=True, progress_bar=False, log=_quiet)
    with pytest.raises(NmtError, match="no last.pt to resume from"):
        train(_cfg(), toy_dir, tmp_path / "new", resume=True, progress_bar=False, log=_quiet)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(NmtError, match="exists and is not a directory"):
        train(_cfg(), toy_dir, tmp_path / "file", progress_bar=False, log=_quiet)
    assert (tmp_path / "file").read_text() == "mine"


def test_resuming_a_finished_run_changes_nothing(toy_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg("train.max_steps=3"), toy_dir, run, progress_bar=False, log=_quiet)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != "config.yaml"}
    messages = []
    trainer, reason = train(
        Config(), toy_dir, run, resume=True, progress_bar=False, log=messages.append
    )
    assert trainer.progress.step == 3 and reason == "max_steps (3)"
    assert any("already over" in m for m in messages)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != "config.yaml"} == before


def test_the_model_cannot_change_on_resume(toy_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg("train.max_steps=1"), toy_dir, run, progress_bar=False, log=_quiet)
    with pytest.raises(NmtError, match="model.hidden_size cannot change"):
        train(Config(), toy_dir, run, resume=True, overrides=["model.hidden_size=8"], log=_quiet)


def test_resume_on_other_data_and_config_mismatch(toy_dir, sample_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg("train.max_steps=1"), toy_dir, run, progress_bar=False, log=_quiet)
    with pytest.raises(NmtError, match="vocabulary is not the data's"):
        train(Config(), sample_dir, run, resume=True, progress_bar=False, log=_quiet)
    with pytest.raises(NmtError, match=r"data.vocab_size=8000 .* preprocessed with \[45\]"):
        train(_cfg("data.train=x"), toy_dir, tmp_path / "r2", progress_bar=False, log=_quiet)


def test_bad_checkpoints_are_clear_errors(toy_dir, tmp_path):
    run = tmp_path / "run"
    train(_cfg("train.max_steps=1"), toy_dir, run, progress_bar=False, log=_quiet)
    good = (run / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    (tmp_path / "text.pt").write_bytes(b"hola\n")  # torch's unpickler raises KeyError here
    for name in ("cut.pt", "junk.pt", "text.pt"):
        with pytest.raises(NmtError, match="not a readable checkpoint"):
            load_checkpoint(tmp_path / name)
    checkpoint = load_checkpoint(run / "last.pt")
    save_checkpoint(tmp_path / "future.pt", {**checkpoint, "format_version": 99})
    with pytest.raises(NmtError, match="checkpoint format 99"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(NmtError, match="not an nmt checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_killed_write_never_corrupts_the_previous_checkpoint(toy_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(_cfg("train.max_steps=1"), toy_dir, run, progress_bar=False, log=_quiet)
    before = (run / "last.pt").read_bytes()
    checkpoint = load_checkpoint(run / "last.pt")

    def killed(*args):  # the process dies after writing the new file, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(run / "last.pt", {**checkpoint, "model": {}})
    assert (run / "last.pt").read_bytes() == before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_average(toy_dir, tmp_path):
    train(
        _cfg("train.valid_every=2", "train.max_steps=4"),
        toy_dir,
        tmp_path / "r",
        progress_bar=False,
        log=_quiet,
    )
    a, b = tmp_path / "r" / "step-2.pt", tmp_path / "r" / "step-4.pt"
    avg = average_checkpoints([a, b], tmp_path / "avg.pt")
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    for key, value in avg["model"].items():
        torch.testing.assert_close(value, (wa[key] + wb[key]) / 2)
    same = average_checkpoints([a, a], tmp_path / "same.pt")["model"]
    assert all(torch.equal(same[k], wa[k]) for k in wa)
    assert load_checkpoint(tmp_path / "avg.pt")["train"] is None
    np.testing.assert_equal(sorted(avg["vocab"]), sorted(load_checkpoint(a)["vocab"]))
