"""Subword regularisation: the store keeps the text it encoded, training batches are drawn
segmentations of the same pairs, reproducible per (seed, update, batch), and training with it
learns, resumes exactly and keeps placeholders whole."""

import json
import shutil

import numpy as np
import pytest
import torch

from nmt.config import Config, apply_overrides
from nmt.data.batching import ParallelDataset
from nmt.data.protect import placeholder_symbols
from nmt.data.store import load_tokenizers, read_manifest, write_manifest
from nmt.data.subword_sampling import SubwordSampler
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from nmt.errors import NmtError
from nmt.train import train
from tests.conftest import SMALL


def _sampled_set(data_dir, alpha=0.1, nbest=-1):
    manifest = read_manifest(data_dir)
    dataset = ParallelDataset(data_dir, "train")
    tokenizers = load_tokenizers(data_dir, manifest)
    dataset.resegment = SubwordSampler(data_dir, manifest, tokenizers, alpha, nbest)
    return dataset, tokenizers[manifest["src"]], tokenizers[manifest["tgt"]]


def _rows(ids: torch.Tensor) -> list[list[int]]:
    return [[i for i in row.tolist() if i not in (PAD_ID, BOS_ID, EOS_ID)] for row in ids]


def test_the_store_keeps_the_training_text_it_encoded(sample_dir):
    manifest = read_manifest(sample_dir)
    dataset = ParallelDataset(sample_dir, "train")
    tokenizer = load_tokenizers(sample_dir, manifest)["es"]
    sampler = SubwordSampler(sample_dir, manifest, {"es": tokenizer, "en": tokenizer}, 0.1, -1)
    for side, (lines, stored) in enumerate(zip(sampler.lines, (dataset.src, dataset.tgt))):
        assert len(lines) == len(stored) == manifest["splits"]["train"]["pairs"]
        encoded = tokenizer.encode([lines[i] for i in range(len(lines))])
        assert all(np.array_equal(encoded[i], stored[i]) for i in range(len(lines))), side


def test_sampled_batches_spell_the_stored_pairs_and_vary_by_draw(sample_dir):
    dataset, src_tok, tgt_tok = _sampled_set(sample_dir)
    indices = np.arange(100, 164)
    fixed = dataset.batch(indices)
    first, again, other = (dataset.batch(indices, draw) for draw in (1, 1, 2))
    for name in ("src", "src_lengths", "tgt_in", "tgt_out"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.src, other.src)
    src_rows, tgt_rows = _rows(first.src), _rows(first.tgt_out)
    assert [src_tok.decode(r) for r in src_rows] == [src_tok.decode(r) for r in _rows(fixed.src)]
    assert [tgt_tok.decode(r) for r in tgt_rows] == [
        tgt_tok.decode(r) for r in _rows(fixed.tgt_out)
    ]
    assert sum(r != f for r, f in zip(src_rows, _rows(fixed.src))) > len(indices) // 2
    # framing as the store's: eos ends each source, bos starts the decoder input
    assert first.src_lengths.tolist() == [len(r) + 1 for r in src_rows]
    assert (first.src.gather(1, first.src_lengths.unsqueeze(1) - 1) == EOS_ID).all()
    assert (first.tgt_in[:, 0] == BOS_ID).all()
    assert torch.equal(first.tgt_in[:, 1:][first.tgt_out[:, :-1] != PAD_ID],
                       first.tgt_out[:, :-1][first.tgt_out[:, :-1] != PAD_ID])  # fmt: skip


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_training_with_sampling_learns_and_resumes_exactly(toy_dir, tmp_path):
    """Loss falls; the draws change what is learnt (weights differ from the fixed
    segmentation's); a run stopped at 15 updates and resumed ends with the same weights."""
    plain = [*SMALL, "train.lr=3e-3", "train.max_steps=40"]
    sampled = [*plain, "data.sampling_alpha=0.3"]
    quiet = dict(progress_bar=False, log=lambda _: None)
    whole, _ = train(apply_overrides(Config(), sampled), toy_dir, tmp_path / "a", **quiet)
    records = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if r["event"] == "train"]
    assert losses[-1] < 0.85 * losses[0]  # measured: 3.81 to 3.05 (fixed segmentation: 3.10)
    fixed, _ = train(apply_overrides(Config(), plain), toy_dir, tmp_path / "plain", **quiet)
    assert not all(
        torch.equal(a, b) for a, b in zip(_weights(whole).values(), _weights(fixed).values())
    )
    cut = apply_overrides(Config(), [*sampled, "train.max_steps=15"])
    train(cut, toy_dir, tmp_path / "b", **quiet)
    resumed, _ = train(
        Config(), toy_dir, tmp_path / "b", resume=True, overrides=["train.max_steps=40"], **quiet
    )
    for (name, a), b in zip(_weights(whole).items(), _weights(resumed).values()):
        assert torch.equal(a, b), name


def test_a_store_without_its_training_text_is_a_clear_error(sample_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(sample_dir, old)
    manifest = read_manifest(old)
    for lang in ("es", "en"):
        (old / f"train.{lang}.txt").unlink()
    write_manifest(old, {k: v for k, v in manifest.items() if k not in ("files", "sha256")})
    cfg = apply_overrides(Config(), [*SMALL, "data.sampling_alpha=0.1", "train.max_steps=1"])
    with pytest.raises(NmtError, match="training text"):
        train(cfg, old, tmp_path / "run", progress_bar=False, log=lambda _: None)


@pytest.mark.parametrize(
    "setting",
    [
        "data.nbest_size=0",
        "data.nbest_size=1",
        "data.sampling_alpha=nan",
        "data.sampling_alpha=1.5",
        "data.sampling_alpha=-0.1",
    ],  # fmt: skip
)
def test_bad_sampling_settings_are_refused(setting):
    with pytest.raises(NmtError):
        apply_overrides(Config(), [setting])


def test_placeholders_stay_whole_in_every_draw(tmp_path):
    from nmt.preprocess import preprocess
    from tests.conftest import SAMPLE, data_config, with_spans, write_tsv

    rows = (SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()[1:1200]
    pairs = with_spans([tuple(r.split("\t")[1:]) for r in rows], every=2)
    cfg = data_config(
        train=str(write_tsv(tmp_path / "train.tsv", pairs[:1100])),
        dev=str(write_tsv(tmp_path / "dev.tsv", pairs[1100:])),
        test="",
        protect="all",
    )
    preprocess(cfg, tmp_path / "data", progress=False)
    dataset, src_tok, _ = _sampled_set(tmp_path / "data", alpha=0.1)
    symbols = set(src_tok.symbol_ids(placeholder_symbols()))
    indices = np.arange(len(dataset))
    fixed = dataset.batch(indices)
    for draw in range(3):
        sampled = dataset.batch(indices, draw)
        for side in ("src", "tgt_out"):
            want = [sorted(i for i in row if i in symbols) for row in _rows(getattr(fixed, side))]
            got = [sorted(i for i in row if i in symbols) for row in _rows(getattr(sampled, side))]
            assert got == want and any(want)
