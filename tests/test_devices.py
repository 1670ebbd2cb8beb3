"""The tests that matter on a GPU, written once over the devices present (issue 34).

`pytest tests/test_devices.py` runs the CPU half anywhere, and where `torch.cuda.is_available()`
the CUDA half too (cuda:0), unchanged. Elsewhere every CUDA case (the CUDA device of each test,
fp16 with its loss scaling, NCCL, CUDA against the CPU) is collected and skipped with the
reason, so a CI log shows what did not run.

Each architecture trains a few updates on the toy task in each precision the device has, once
(the `trained` fixture), and the tests read that run: the loss is finite and falls; a run
stopped halfway and resumed ends with the weights of the unbroken one; its checkpoint, loaded
on the CPU, translates as the trained model does on its device; beam search at beam 1 is greedy
search there. One architecture goes through `nmt translate --device`, `nmt serve --device` and
a one-process torchrun.

Exactness: on the CPU a fixed `train.threads` makes resumed and torchrun runs equal to the bit.
On CUDA no deterministic flags are set (they would change the kernels under test, and cuDNN's
RNN backward and the atomics of the embedding gradient sum in no fixed order); weights are
compared to `CUDA_WEIGHTS` instead: atol 1e-5, 500 times finer than one update's step (Adam
moves a weight by up to train.lr = 0.005).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nmt.cli import app
from nmt.config import Config, apply_overrides
from nmt.data.batching import ParallelDataset
from nmt.data.tokenizer import BOS_ID, EOS_ID
from nmt.decode import beam_search, greedy_search
from nmt.decode.hypothesis import length_penalty
from nmt.device import resolve_runtime
from nmt.model import Seq2Seq
from nmt.model.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint
from nmt.train import train
from tests.conftest import SMALL

CUDA = "cuda:0"
NO_GPU = "no CUDA GPU here (torch.cuda.is_available() is False); a GPU machine runs this case"
ARCHS = ["rnnenc", "rnnsearch", "luong"]
PRECISIONS = {"cpu": ["fp32", "bf16"], CUDA: ["fp32", "bf16", "fp16"]}  # fp16 needs a GPU
STEPS = 10  # updates of each run; the resumed run stops at half and goes on
TRAIN = [
    *SMALL,
    "train.batch_tokens=1500",
    "train.lr=0.005",
    "train.log_every=1",
    "model.dropout=0.3",  # so a resumed run needs the device's random state back
    "train.threads=1",  # on the CPU, bit for bit: 1 thread and 2 can round a sum apart
]
CUDA_WEIGHTS = dict(rtol=1e-4, atol=1e-5)  # resumed and torchrun weights against unbroken
SEARCH = dict(alpha=0.6, max_len_a=1.0, max_len_b=3)
SENTENCES = 8  # dev sentences each search check decodes
# bf16 and fp16 search scores against fp32's, relative: 2% is 0.1-0.17 on these scores, 10x the
# largest difference bf16 gives on the CPU
LOW_PRECISION = 0.02


def _quiet(_: str) -> None:
    pass


def on(device: str, *values: str) -> pytest.param:
    """A test case on `device`: skipped, with the reason, where that device is missing."""
    reason = None
    if device != "cpu" and not torch.cuda.is_available():
        reason = NO_GPU
    elif device != "cpu" and "bf16" in values and not torch.cuda.is_bf16_supported():
        reason = "this GPU has no bf16"
    return pytest.param(
        (device, *values) if values else device,
        id="-".join([*values, device]),
        marks=pytest.mark.skipif(reason is not None, reason=reason or ""),
    )


def devices() -> list[str]:
    """The devices these tests are written for; `on` skips a case whose device is missing."""
    return ["cpu", CUDA]


def weights_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], device: str) -> None:
    """The same weights: to the bit on the CPU, to `CUDA_WEIGHTS` on a GPU."""
    assert a.keys() == b.keys()
    for name in a:
        if device == "cpu":
            assert torch.equal(a[name].cpu(), b[name].cpu()), name
        else:
            torch.testing.assert_close(a[name].cpu(), b[name].cpu(), **CUDA_WEIGHTS, msg=name)


def train_losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["event"] == "train"]


# --- each architecture, trained on each device in each precision ------------------------------


@dataclass
class Trained:
    arch: str
    device: str
    precision: str
    run: Path  # the unbroken run's directory
    model: Seq2Seq  # the unbroken run's model, on its device
    resumed: Seq2Seq  # the model of a run stopped at STEPS // 2 and resumed to STEPS


@pytest.fixture(
    scope="module",
    params=[on(d, arch, p) for arch in ARCHS for d in devices() for p in PRECISIONS[d]],
)
def trained(request, toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    device, arch, precision = request.param
    root = tmp_path_factory.mktemp(f"{arch}-{precision}-{device.replace(':', '')}")
    sets = [*TRAIN, f"model.arch={arch}", f"train.precision={precision}"]

    def run(out: Path, steps: int, resume: bool = False) -> Seq2Seq:
        steps_set = [f"train.max_steps={steps}"]  # a resumed run takes its config from last.pt
        trainer, reason = train(
            apply_overrides(Config(), [*sets, *steps_set]), toy_dir, out, resume=resume,
            overrides=steps_set, device=device, progress_bar=False, log=_quiet,
        )  # fmt: skip
        assert reason == f"max_steps ({steps})"
        return trainer.model.eval()

    model = run(root / "whole", STEPS)
    run(root / "broken", STEPS // 2)
    resumed = run(root / "broken", STEPS, resume=True)
    return Trained(arch, device, precision, root / "whole", model, resumed)


def test_training_lowers_a_finite_loss_on_the_device(trained: Trained):
    """Every update's loss is finite and the last three are clearly below the first three (the
    loss of one batch and the next differ by up to 0.2; on the CPU these runs gain 0.4 to 0.5);
    the model is where it was asked to be, and fp16 alone scales its loss."""
    losses = train_losses(trained.run)
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses), losses
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.15, losses
    assert next(trained.model.parameters()).device == torch.device(trained.device)
    scaler = load_checkpoint(trained.run / "last.pt")["train"]["scaler"]
    assert bool(scaler) == (trained.precision == "fp16"), scaler  # a disabled scaler saves {}


def test_a_resumed_run_ends_with_the_unbroken_run_s_weights(trained: Trained):
    weights_equal(trained.model.state_dict(), trained.resumed.state_dict(), trained.device)


def _sources(toy_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    batch = ParallelDataset(toy_dir, "dev").batch(list(range(SENTENCES)))
    return batch.src, batch.src_lengths


def _forced_score(model: Seq2Seq, src: torch.Tensor, length: int, tokens: list[int]) -> float:
    """What the search scores `tokens` (then eos) from `src`: teacher forced, on the CPU."""
    target = torch.tensor([[BOS_ID, *tokens, EOS_ID]])
    with torch.no_grad():
        _, nll = model.loss(
            src[None, :length], torch.tensor([length]), target[:, :-1], target[:, 1:]
        )
    return -float(nll) / length_penalty(len(tokens) + 1, "wu", SEARCH["alpha"])


def test_the_checkpoint_translates_on_the_cpu_as_the_model_on_its_device(trained, toy_dir):
    """last.pt, loaded on the CPU, finds what the trained model finds on its device in fp32
    (beam 5): the same tokens, scores within 1e-4 (on the CPU this checks that the checkpoint
    holds the trained weights; on CUDA that CUDA's search is the CPU's). A model trained in
    bf16 or fp16 also searches in that precision on its device, and the CPU in fp32 gives
    those outputs the scores the device gave them, within that precision's tolerance."""
    checkpoint = load_checkpoint(trained.run / "last.pt")
    cpu = model_from_checkpoint(checkpoint, checkpoint_config(checkpoint), "last.pt").eval()
    src, lengths = _sources(toy_dir)
    on_device = (src.to(trained.device), lengths.to(trained.device))
    want = beam_search(cpu, src, lengths, beam=5, **SEARCH)
    got = beam_search(trained.model, *on_device, beam=5, **SEARCH)
    # fp32 means IEEE fp32 here; PyTorch lets cuDNN's GRUs use TF32 (10-bit products) unless
    # torch.backends.cudnn.rnn.fp32_precision = "ieee" (its default is "tf32")
    assert [h[0].tokens for h in got] == [h[0].tokens for h in want]
    assert [h[0].score for h in got] == pytest.approx([h[0].score for h in want], abs=1e-4)
    if trained.precision == "fp32":
        return
    with resolve_runtime(trained.device, trained.precision).autocast():
        low = beam_search(trained.model, *on_device, beam=5, **SEARCH)
    scores = [h[0].score for h in low]
    forced = [_forced_score(cpu, s, int(n), h[0].tokens) for s, n, h in zip(src, lengths, low)]
    assert scores == pytest.approx(forced, rel=LOW_PRECISION)


def test_beam_of_one_is_greedy_on_the_device(trained: Trained, toy_dir: Path):
    """In the precision the model was trained in, on its device: the same tokens, and the
    beam's normalised score times the length penalty is greedy's sum."""
    src, lengths = (t.to(trained.device) for t in _sources(toy_dir))
    limits = SEARCH["max_len_a"], SEARCH["max_len_b"]
    with resolve_runtime(trained.device, trained.precision).autocast():
        tokens, sums = greedy_search(trained.model, src, lengths, *limits)
        hyps = beam_search(trained.model, src, lengths, beam=1, **SEARCH)
    assert [h[0].tokens for h in hyps] == tokens
    penalties = [length_penalty(len(t) + 1, "wu", SEARCH["alpha"]) for t in tokens]
    beam_sums = [h[0].score * lp for h, lp in zip(hyps, penalties)]
    rel = 1e-5 if trained.precision == "fp32" else LOW_PRECISION
    assert beam_sums == pytest.approx(sums.tolist(), rel=rel)


# --- the commands on a device: translate, serve, torchrun (one architecture) ------------------


@pytest.fixture(scope="module")
def checkpoint(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny rnnsearch run, trained on the CPU (the commands load it onto each device)."""
    run = tmp_path_factory.mktemp("commands") / "run"
    cfg = apply_overrides(Config(), [*TRAIN, "train.max_steps=4"])
    train(cfg, toy_dir, run, device="cpu", progress_bar=False, log=_quiet)
    return run / "last.pt"


@pytest.mark.parametrize("device", [on(d) for d in devices()])
def test_translate_and_serve_on_the_device_give_the_same_translations(
    device, checkpoint, toy_dir, tmp_path
):
    """`nmt translate --device D` and `nmt serve --device D` (a real server on a loopback port)
    give the same best translations, scores within 1e-4, each on the device asked for."""
    pytest.importorskip(
        "fastapi", reason="the serve extra is not installed: pip install nmt[serve]"
    )
    from tests.serving import running

    lines = (toy_dir / "dev.es.txt").read_text(encoding="utf-8").splitlines()[:SENTENCES]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats(device)
    result = CliRunner().invoke(
        app,
        ["translate", str(checkpoint), "-i", str(tmp_path / "in.txt"), "-o", str(out),
         "--device", device, "--precision", "fp32", "--format", "jsonl"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    if device != "cpu":
        assert torch.cuda.max_memory_allocated(device) > 0  # it ran there
    best = [json.loads(line)["hypotheses"][0] for line in out.read_text().splitlines()]
    with running(checkpoint, "--device", device) as server:
        assert server.client.get("/v1/model").json()["device"] == device
        answers = server.post({"texts": lines}).json()["translations"]
    assert [a["translation"] for a in answers] == [b["text"] for b in best]
    assert [a["score"] for a in answers] == pytest.approx([b["score"] for b in best], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("device", [on(d) for d in devices()])
def test_torchrun_with_one_process_equals_a_plain_run(device, toy_dir, tmp_path):
    """`nmt train --distributed 1` (torchrun; gloo on the CPU, NCCL on a GPU) against `train()`
    in this process: the same loss at every update, the same final weights."""
    sets = [*TRAIN, "train.max_steps=4"]
    train(apply_overrides(Config(), sets), toy_dir, tmp_path / "plain", device=device,
          progress_bar=False, log=_quiet)  # fmt: skip
    command = [sys.executable, "-m", "nmt", "train", "--data", str(toy_dir), "--out",
               str(tmp_path / "ddp"), *(f"--set={s}" for s in sets), "--device", device,
               "--distributed", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 processes" in proc.stdout and f"device {device}" in proc.stdout, proc.stdout
    plain, ddp = tmp_path / "plain", tmp_path / "ddp"
    if device == "cpu":
        assert train_losses(ddp) == train_losses(plain)
    else:
        assert train_losses(ddp) == pytest.approx(train_losses(plain), rel=1e-5)
    weights = [load_checkpoint(run / "last.pt")["model"] for run in (plain, ddp)]
    weights_equal(*weights, device)
