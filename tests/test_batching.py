import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nmt.data.batching import ParallelDataset, TokenBatchSampler, length_batches, padding_share
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.errors import NmtError


@pytest.fixture(scope="module")
def train(sample_dir):
    return ParallelDataset(sample_dir, "train", max_len=150)


def _sampler(ds, **kw):
    args = dict(max_tokens=1500, indices=ds.indices, seed=3, pool_size=4000)
    return TokenBatchSampler(ds.src_sizes, ds.tgt_sizes, **{**args, **kw})


def test_every_pair_exactly_once_per_epoch(train):
    sampler = _sampler(train)
    for _ in range(2):
        seen = np.concatenate(list(sampler))
        assert len(seen) == len(train.indices)
        assert np.array_equal(np.sort(seen), train.indices)


@given(st.lists(st.integers(0, 40), max_size=60), st.integers(1, 200))
def test_decoding_batches_hold_every_non_empty_sequence_once_within_the_cap(lengths, cap):
    """What translation and validation decode: each non-empty sequence once, in length
    order, every batch within the cap (with eos and padding) unless it is one sentence."""
    batches = length_batches(lengths, cap)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == [i for i, n in enumerate(lengths) if n]
    assert [lengths[i] for i in flat] == sorted(lengths[i] for i in flat)
    for batch in batches:
        assert len(batch) == 1 or len(batch) * (max(lengths[i] for i in batch) + 1) <= cap


def test_token_cap_includes_padding(train):
    for batch in _sampler(train).batches(0):
        assert len(batch) * train.src_sizes[batch].max() <= 1500
        assert len(batch) * train.tgt_sizes[batch].max() <= 1500


def test_deterministic_under_seed_and_varies_by_epoch(train):
    a, b = _sampler(train).batches(0), _sampler(train).batches(0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    other_seed = _sampler(train, seed=4).batches(0)
    assert not all(np.array_equal(x, y) for x, y in zip(a, other_seed))
    assert not np.array_equal(np.concatenate(a), np.concatenate(_sampler(train).batches(1)))


def test_resume_mid_epoch_continues_the_same_sequence(train):
    full = _sampler(train)
    expected = list(full) + list(full)  # two epochs, uninterrupted
    stopped = _sampler(train)
    it = iter(stopped)
    head = [next(it) for _ in range(7)]
    state = stopped.state_dict()
    assert state == {"epoch": 0, "start": 7, "seed": 3}
    resumed = _sampler(train, seed=99)  # the state carries the seed
    resumed.load_state_dict(state)
    rest = head + list(resumed) + list(resumed)
    assert len(rest) == len(expected)
    assert all(np.array_equal(x, y) for x, y in zip(rest, expected))


def test_batches_are_shuffled_but_sorted_inside(train):
    batches = _sampler(train).batches(0)
    first_lengths = [int(train.tgt_sizes[b].min()) for b in batches]
    assert first_lengths != sorted(first_lengths)  # batch order is random
    spreads = [int(np.ptp(train.tgt_sizes[b])) for b in batches if len(b) > 4]
    assert np.median(spreads) <= 2  # pairs of a batch have near-equal lengths


def test_padding_share_is_low_on_real_data(train):
    assert (
        padding_share(
            _sampler(train, pool_size=100_000).batches(0), train.src_sizes, train.tgt_sizes
        )
        < 0.06
    )
    unsorted = np.array_split(np.random.default_rng(0).permutation(train.indices), 300)
    assert padding_share(unsorted, train.src_sizes, train.tgt_sizes) > 0.3  # the metric works


def test_unshuffled_mode_is_sorted_and_complete(sample_dir):
    dev = ParallelDataset(sample_dir, "dev")
    sampler = TokenBatchSampler(dev.src_sizes, dev.tgt_sizes, 1000, shuffle=False)
    batches = list(sampler)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(dev)))
    assert [b.tolist() for b in batches] == [b.tolist() for b in sampler.batches(5)]


def test_a_pair_longer_than_the_cap_is_a_clear_error(train):
    with pytest.raises(NmtError, match="raise train.batch_tokens or lower train.max_len"):
        _sampler(train, max_tokens=20)


def test_max_len_filter(sample_dir, train):
    short = ParallelDataset(sample_dir, "train", max_len=20)
    assert short.skipped > 0 and len(short.indices) + short.skipped == len(short)
    assert short.src.lengths[short.indices].max() <= 20
    too_long = (train.src.lengths > 150) | (train.tgt.lengths > 150)
    assert train.skipped == int(too_long.sum())


def test_batch_tensors_frame_the_sentences(train):
    idx = np.array([5, 0, 17])
    batch = train.batch(idx)
    assert batch.src.dtype == torch.int64 and batch.src.shape[0] == 3
    for row, i in enumerate(idx):
        s, t = train.src[i], train.tgt[i]
        assert batch.src[row, : len(s)].tolist() == s.tolist()
        assert batch.src[row, len(s)] == EOS_ID and (batch.src[row, len(s) + 1 :] == PAD_ID).all()
        assert batch.src_lengths[row] == len(s) + 1
        assert (
            batch.tgt_in[row, 0] == BOS_ID
            and batch.tgt_in[row, 1 : len(t) + 1].tolist() == t.tolist()
        )
        assert batch.tgt_out[row, : len(t)].tolist() == t.tolist()
        assert batch.tgt_out[row, len(t)] == EOS_ID
    assert batch.target_tokens == sum(len(train.tgt[i]) + 1 for i in idx)


def test_works_with_torch_dataloader(train):
    sampler = _sampler(train)
    loader = torch.utils.data.DataLoader(train, batch_sampler=sampler, collate_fn=lambda b: b)
    batches = list(loader)
    assert len(batches) == len(sampler.batches(0))
    assert sum(b.src.shape[0] for b in batches) == len(train.indices)
