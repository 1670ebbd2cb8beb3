"""Word dropout: the share of tokens it replaces, and what it never touches."""

import numpy as np
import torch

from nmt.data.batching import Batch
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.train.word_dropout import WordDropout

PLACEHOLDERS = ([5, 6], [7])  # (source, target) ids of protected spans' placeholders


def _batch(rows: int = 400, length: int = 60) -> Batch:
    """Random sentences of random lengths, with eos, bos, padding and placeholders."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, length, (rows,), generator=gen)  # [B]
    words = torch.randint(4, 100, (rows, length), generator=gen)  # [B, L]
    pos = torch.arange(length)  # [L]
    src = torch.where(pos < lengths[:, None], words, PAD_ID)
    src[torch.arange(rows), lengths - 1] = EOS_ID
    tgt_out = src.clone()
    tgt_in = torch.cat([torch.full((rows, 1), BOS_ID), src[:, :-1]], 1)
    tgt_in = torch.where(tgt_in == EOS_ID, PAD_ID, tgt_in)
    return Batch(src, lengths, tgt_in, tgt_out, np.arange(rows))


def test_word_dropout_replaces_the_share_asked_and_spares_the_rest():
    torch.manual_seed(1)
    batch = _batch()
    before = [t.clone() for t in (batch.src, batch.tgt_in, batch.tgt_out)]
    out = WordDropout(0.3, 0.1, PLACEHOLDERS)(batch)
    for new, old, rate, spared in [
        (out.src, batch.src, 0.3, {PAD_ID, EOS_ID, 5, 6}),
        (out.tgt_in, batch.tgt_in, 0.1, {PAD_ID, BOS_ID, 7}),
    ]:
        changed = new != old
        assert (new[changed] == UNK_ID).all()  # replaced by <unk>, never by anything else
        for token in spared:
            assert not changed[old == token].any(), token
        open_ = ~torch.isin(old, torch.tensor([*spared, UNK_ID, BOS_ID, EOS_ID, PAD_ID]))
        share = changed[open_].float().mean().item()
        assert abs(share - rate) < 0.01, (share, rate)  # about 20,000 tokens: sd 0.003
    assert torch.equal(out.tgt_out, batch.tgt_out)  # the words predicted are never touched
    assert all(torch.equal(a, b) for a, b in zip(before, (batch.src, batch.tgt_in, batch.tgt_out)))


def test_placeholders_are_spared_on_their_own_side_only_and_zero_is_off():
    torch.manual_seed(2)
    batch = _batch()
    out = WordDropout(0.5, 0.5, PLACEHOLDERS)(batch)
    assert (out.tgt_in[batch.tgt_in == 5] == UNK_ID).any()  # 5 is a placeholder of the source
    assert WordDropout(0.0, 0.0, PLACEHOLDERS)(batch) is batch
    src_only = WordDropout(0.5, 0.0)(batch)
    assert torch.equal(src_only.tgt_in, batch.tgt_in) and not torch.equal(src_only.src, batch.src)
