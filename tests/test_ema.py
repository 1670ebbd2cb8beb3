"""train.ema_decay: the averaged weights are the hand-computed average of the raw weights after
each update; validation, best.pt and step checkpoints see them, last.pt keeps the raw weights,
and a resumed run continues the average exactly."""

import pytest
import torch

from nmt.config import Config
from nmt.model.checkpoint import load_checkpoint
from nmt.train import Trainer, train
from nmt.train.ema import WeightAverage
from tests.test_train import _cfg, _quiet


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_the_average_is_the_hand_computed_one_and_what_validation_and_best_pt_see(
    toy_dir, tmp_path, monkeypatch
):
    starts, raws, validated = [], [], []
    init, update, evaluate = WeightAverage.__init__, WeightAverage.update, Trainer._evaluate

    def spy_init(self, model, decay):
        init(self, model, decay)
        starts.append(_params(model))

    def spy_update(self, model, step):
        raws.append((step, _params(model)))
        update(self, model, step)

    def spy_evaluate(self):
        validated.append(_params(self.model))
        evaluate(self)

    monkeypatch.setattr(WeightAverage, "__init__", spy_init)
    monkeypatch.setattr(WeightAverage, "update", spy_update)
    monkeypatch.setattr(Trainer, "_evaluate", spy_evaluate)
    run = tmp_path / "run"
    sets = ["train.ema_decay=0.3", "train.max_steps=6", "train.valid_every=6", "train.keep_last=1"]
    sets += ["train.lr=0.01"]  # weights that move far enough for the average to tell
    trainer, _ = train(_cfg(*sets), toy_dir, run, progress_bar=False, log=_quiet)
    want = starts[0]
    for step, raw in raws:  # the warm-up, then 0.3 from update 3 on: (1 + 3) / (10 + 3) > 0.3
        d = min(0.3, (1 + step) / (10 + step))
        want = {n: d * want[n] + (1 - d) * raw[n] for n in want}
    assert [step for step, _ in raws] == [1, 2, 3, 4, 5, 6]
    best, step6 = (load_checkpoint(run / name)["model"] for name in ("best.pt", "step-6.pt"))
    last = load_checkpoint(run / "last.pt")
    final = raws[-1][1]
    for name, value in want.items():
        for averaged in (trainer.ema.shadow[name], validated[-1][name], best[name], step6[name]):
            assert torch.allclose(averaged, value, rtol=0, atol=1e-6), name
        assert torch.equal(last["model"][name], final[name])  # the raw weights, to resume
        assert torch.equal(last["train"]["ema"][name], trainer.ema.shadow[name])
        assert torch.equal(trainer.model.state_dict()[name], final[name])  # put back after
    assert max(float((best[n] - final[n]).abs().max()) for n in want) > 1e-3  # not the raw
    # tied weights (the output layer is the target embedding) hold the average under every name
    assert len(step6) > len(want)
    for name, p in trainer.model.named_parameters(remove_duplicate=False):
        first = next(n for n, q in trainer.model.named_parameters() if q is p)
        for saved in (best, step6):  # best.pt is written during validation, step-6.pt after
            assert torch.equal(saved[name], saved[first]), name


def test_a_resumed_run_continues_the_average_exactly(toy_dir, tmp_path):
    sets = ["train.ema_decay=0.5", "train.valid_every=3"]
    whole, _ = train(
        _cfg(*sets, "train.max_steps=6"), toy_dir, tmp_path / "a", progress_bar=False, log=_quiet
    )
    train(_cfg(*sets, "train.max_steps=3"), toy_dir, tmp_path / "b", progress_bar=False, log=_quiet)
    resumed, _ = train(
        Config(), toy_dir, tmp_path / "b", resume=True, overrides=["train.max_steps=6"],
        progress_bar=False, log=_quiet,
    )  # fmt: skip
    for name, value in whole.ema.shadow.items():
        assert torch.equal(resumed.ema.shadow[name], value), name
    a, b = (load_checkpoint(tmp_path / r / "best.pt")["model"] for r in "ab")
    assert all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("value", ["1.0", "-0.1", "nan"])
def test_an_average_that_never_moves_or_is_not_a_number_is_refused(value):
    from nmt.errors import NmtError

    with pytest.raises(NmtError, match="train.ema_decay"):
        _cfg(f"train.ema_decay={value}")
