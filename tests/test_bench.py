"""The analytic FLOP count used for utilisation agrees with PyTorch's own flop counter."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nmt.bench import forward_flops, table
from nmt.config import ModelConfig
from nmt.model import build_model


@pytest.mark.parametrize(
    "arch, feed, layers",
    [
        ("rnnenc", False, 1),
        ("rnnenc", False, 2),
        ("rnnsearch", False, 1),
        ("rnnsearch", False, 3),
        ("luong", False, 1),
        ("luong", True, 2),
    ],
)
def test_forward_flops_match_the_flop_counter(arch, feed, layers):
    cfg = ModelConfig(arch=arch, emb_size=16, hidden_size=24, layers=layers, input_feeding=feed)
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
