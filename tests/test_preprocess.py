import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nmt import preprocess as preprocess_module
from nmt.data import tokenizer as tokenizer_module
from nmt.data.corpus import Cleaner, TsvCorpus, normalize, read_lines
from nmt.data.store import load_tokenizers, open_split, read_manifest
from nmt.errors import NmtError
from nmt.preprocess import preprocess
from tests.conftest import SAMPLE, data_config, write_tsv


def test_manifest_describes_the_corpus(sample_dir):
    m = read_manifest(sample_dir)
    assert (m["src"], m["tgt"], m["joint"], m["dtype"]) == ("es", "en", True, "uint16")
    assert m["nmt_version"] and m["config"]["vocab_size"] == 1000
    assert m["splits"]["dev"]["pairs"] == 502 and m["splits"]["test"]["pairs"] == 504
    assert m["cleaning"]["read"] == 10_000
    assert m["cleaning"]["kept"] == m["splits"]["train"]["pairs"]
    assert m["cleaning"]["read"] == m["cleaning"]["kept"] + sum(m["cleaning"]["dropped"].values())
    tok = m["tokenizers"]["es"]
    assert tok == m["tokenizers"]["en"] and tok["vocab_size"] == 1000
    assert len(tok["sha256"]) == 64


def test_special_ids_are_fixed(sample_dir):
    tok = load_tokenizers(sample_dir, read_manifest(sample_dir))["es"]
    assert tok.pieces([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]


def test_encoded_train_round_trips_to_normalised_text(sample_dir):
    manifest = read_manifest(sample_dir)
    toks = load_tokenizers(sample_dir, manifest)
    src, tgt = open_split(sample_dir, "train", manifest)
    cfg = data_config()
    expected = list(Cleaner(cfg.max_words, cfg.max_ratio)(TsvCorpus(cfg.train, "es", "en")))
    decoded = [(toks["es"].decode(src[i]), toks["en"].decode(tgt[i])) for i in range(len(src))]
    assert decoded == expected


def test_dev_is_kept_as_given_and_encoded_normalised(sample_dir):
    manifest = read_manifest(sample_dir)
    toks = load_tokenizers(sample_dir, manifest)
    src, tgt = open_split(sample_dir, "dev", manifest)
    given = [line.split("\t") for line in list(read_lines(SAMPLE / "dev.tsv"))[1:]]
    assert (sample_dir / "dev.en.txt").read_text(encoding="utf-8").splitlines() == [
        row[2] for row in given
    ]
    assert [toks["en"].decode(tgt[i]) for i in range(len(tgt))] == [
        normalize(row[2]) for row in given
    ]
    assert len(src) == len(given)


def test_memmap_matches_direct_encoding(sample_dir):
    manifest = read_manifest(sample_dir)
    tok = load_tokenizers(sample_dir, manifest)["es"]
    src, _ = open_split(sample_dir, "test", manifest)
    texts = [normalize(x) for x in (sample_dir / "test.es.txt").read_text().splitlines()]
    direct = tok.encode(texts)
    assert all(np.array_equal(src[i], direct[i]) for i in range(len(src)))
    assert src.tokens.dtype == np.uint16 and int(src.offsets[-1]) == sum(map(len, direct))


def _tiny(tmp_path, pairs, **kw):
    train = write_tsv(tmp_path / "train.tsv", pairs)
    dev = write_tsv(tmp_path / "dev.tsv", pairs[:3])
    return data_config(**{"train": str(train), "dev": str(dev), "test": "", "vocab_size": 60, **kw})


def test_worker_processes_write_what_one_process_writes(
    sample_dir, tmp_path, toy_pairs, monkeypatch
):
    """Cleaning and encoding on 2 spawned workers, 4 jobs in flight, in 500-pair chunks: the
    same cleaning counts, and each side of each split is the in-process encoding of the same
    text in the same order (SentencePiece training itself is not deterministic across runs, so
    the check is against this run's own model). Duplicates are found across chunks."""
    monkeypatch.setattr(preprocess_module, "PARALLEL_MIN", 0)
    monkeypatch.setattr(preprocess_module, "CHUNK", 500)
    out = tmp_path / "parallel"
    manifest = preprocess(data_config(threads=2), out, progress=False)
    assert manifest["cleaning"] == read_manifest(sample_dir)["cleaning"]
    tok = load_tokenizers(out, manifest)["es"]
    train = list(Cleaner(250, 3.0)(TsvCorpus(str(SAMPLE / "train.tsv"), "es", "en")))
    splits = {"train": train}
    for split in ("dev", "test"):
        texts = [list(read_lines(out / f"{split}.{lang}.txt")) for lang in ("es", "en")]
        assert texts == [
            list(read_lines(sample_dir / f"{split}.{lang}.txt")) for lang in ["es", "en"]
        ]
        splits[split] = [(normalize(s), normalize(t)) for s, t in zip(*texts)]
    for split, pairs in splits.items():
        for side, array in enumerate(open_split(out, split, manifest)):
            stored = [array[i].tolist() for i in range(len(array))]
            assert stored == tok.encode([pair[side] for pair in pairs]), (split, side)
    cfg = _tiny(tmp_path, toy_pairs * 60, dedup=True, threads=2)  # 1,200 pairs, 20 distinct
    manifest = preprocess(cfg, tmp_path / "dedup", progress=False)
    assert manifest["cleaning"]["kept"] == 20
    assert manifest["cleaning"]["dropped"]["duplicate"] == 1180


def test_each_cleaning_rule_counts_and_drops(tmp_path, toy_pairs):
    noisy = [
        ("  Caf\u0065\u0301\x07  con\u00a0leche ", "Coffee   with milk"),  # NFD, control, spaces
        ("", "empty source"),
        ("uno " * 30, "one"),  # ratio 30:1
        ("palabra " * 300, "word " * 300),  # too long (> 250 words)
        toy_pairs[0],
        toy_pairs[0],  # exact duplicate
    ]
    cfg = _tiny(tmp_path, toy_pairs[1:] + noisy, dedup=True)
    manifest = preprocess(cfg, tmp_path / "out", progress=False)
    cleaning = manifest["cleaning"]
    assert cleaning["dropped"] == {"empty": 1, "too_long": 1, "ratio": 1, "duplicate": 1}
    assert cleaning["read"] == len(toy_pairs) + 5 and cleaning["kept"] == len(toy_pairs) + 1
    toks = load_tokenizers(tmp_path / "out", manifest)
    src, _ = open_split(tmp_path / "out", "train", manifest)
    texts = [toks["es"].decode(src[i]) for i in range(len(src))]
    assert "Caf\u00e9 con leche" in texts  # NFC, control char removed, whitespace collapsed


def test_dedup_is_optional_and_dev_is_never_filtered(tmp_path, toy_pairs):
    pairs = toy_pairs + [toy_pairs[0]] * 3 + [("", "")]
    cfg = _tiny(tmp_path, pairs)
    cfg.dev = str(write_tsv(tmp_path / "dev.tsv", [("", ""), toy_pairs[0], toy_pairs[0]]))
    manifest = preprocess(cfg, tmp_path / "out", progress=False)
    assert manifest["cleaning"]["dropped"]["duplicate"] == 0
    assert manifest["splits"]["train"]["pairs"] == len(toy_pairs) + 3
    assert manifest["splits"]["dev"]["pairs"] == 3
    assert (tmp_path / "out" / "dev.es.txt").read_text().splitlines()[0] == ""


def test_the_same_corpus_and_settings_give_the_same_vocabulary_and_data(tmp_path, toy_pairs):
    """SentencePiece is deterministic for a given thread count (docs/config.md, data.threads)."""
    cfg = _tiny(tmp_path, toy_pairs, threads=2)
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        preprocess(cfg, out, progress=False)
    tokenizers = [load_tokenizers(d, read_manifest(d))["en"] for d in (first, second)]
    pieces = [t.pieces(list(range(t.vocab_size))) for t in tokenizers]
    assert pieces[0] == pieces[1]
    for name in ("train.es.bin", "train.en.bin", "dev.en.bin", "train.en.idx"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_separate_vocabularies(tmp_path, toy_pairs):
    manifest = preprocess(_tiny(tmp_path, toy_pairs, joint=False), tmp_path / "o", progress=False)
    files = {lang: info["file"] for lang, info in manifest["tokenizers"].items()}
    assert files == {"es": "spm.es.model", "en": "spm.en.model"}
    assert manifest["tokenizers"]["es"]["sha256"] != manifest["tokenizers"]["en"]["sha256"]
    assert sorted(p.name for p in (tmp_path / "o").glob("*.model")) == list(sorted(files.values()))


def test_text_prefix_input_end_to_end(tmp_path, toy_pairs):
    for side, lang in enumerate(("es", "en")):
        (tmp_path / f"c.{lang}").write_text("".join(p[side] + "\n" for p in toy_pairs))
    cfg = data_config(train=str(tmp_path / "c"), dev=str(tmp_path / "c"), test="", vocab_size=60)
    manifest = preprocess(cfg, tmp_path / "out", progress=False)
    assert manifest["splits"]["train"]["pairs"] == manifest["splits"]["dev"]["pairs"] == 20


# --- bad input -------------------------------------------------------------------------------


def test_vocab_size_the_corpus_cannot_support(tmp_path, toy_pairs):
    with pytest.raises(
        NmtError,
        match=r"vocabulary size 5000 is more than this corpus supports "
        r"\(at most \d+ subwords\)",
    ) as err:
        preprocess(_tiny(tmp_path, toy_pairs, vocab_size=5000), tmp_path / "o", progress=False)
    assert "--vocab-size" in str(err.value)
    assert not (tmp_path / "o").exists()


def test_nothing_left_after_cleaning(tmp_path):
    cfg = _tiny(tmp_path, [("", "x"), ("a " * 10, "b")])
    with pytest.raises(NmtError, match=r"no training pairs left after cleaning \(2 read"):
        preprocess(cfg, tmp_path / "o", progress=False)


def test_same_languages_and_missing_settings(tmp_path, toy_pairs):
    with pytest.raises(NmtError, match="both `es`"):
        preprocess(_tiny(tmp_path, toy_pairs, tgt="es"), tmp_path / "o", progress=False)
    with pytest.raises(NmtError, match="`data.dev` is not set"):
        preprocess(_tiny(tmp_path, toy_pairs, dev=""), tmp_path / "o", progress=False)


def test_refuses_an_existing_corpus_unless_overwrite(tmp_path, toy_pairs):
    """Finding 2 of issue 12: the same config again replaced the corpus silently (and with it
    the vocabulary every run trained on it depends on)."""
    out = tmp_path / "out"
    preprocess(_tiny(tmp_path, toy_pairs), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "notes.txt").write_text("mine")
    for cfg in (_tiny(tmp_path, toy_pairs), _tiny(tmp_path, toy_pairs, vocab_size=70)):
        with pytest.raises(NmtError, match=r"already holds a preprocessed corpus"):
            preprocess(cfg, out, progress=False)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "notes.txt"} == before
    m = preprocess(_tiny(tmp_path, toy_pairs, vocab_size=70), out, overwrite=True, progress=False)
    assert m["tokenizers"]["es"]["vocab_size"] == 70
    assert (out / "notes.txt").read_text() == "mine"  # only the corpus's own files are replaced


def test_refuses_a_directory_that_is_not_a_corpus_even_with_overwrite(tmp_path, toy_pairs):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(NmtError, match="holds no preprocessed corpus"):
        preprocess(_tiny(tmp_path, toy_pairs), out, overwrite=True, progress=False)
    assert (out / "thesis.tex").read_text() == "precious"


def test_interrupted_run_leaves_nothing_behind(tmp_path, toy_pairs, monkeypatch):
    out = tmp_path / "out"
    preprocess(_tiny(tmp_path, toy_pairs), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer_module.spm.SentencePieceTrainer, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocess(_tiny(tmp_path, toy_pairs, vocab_size=70), out, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old corpus intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.tsv", "out", "train.tsv"]


def test_killed_process_leaves_no_output(tmp_path):
    """SIGKILL mid-run: the output directory never appears half-written."""
    big = write_tsv(
        tmp_path / "big.tsv", [(f"hola mundo {i}", f"hello world {i}") for i in range(200_000)]
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nmt",
            "preprocess",
            "--src",
            "es",
            "--tgt",
            "en",
            "--train",
            str(big),
            "--dev",
            str(big),
            "--out",
            str(out),
        ],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while not (out.is_dir() and any(p.name.startswith(".tmp-") for p in out.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(1.0)  # well into the work: staged files are being written
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "manifest.json").exists()
    assert any(p.name.startswith(".tmp-") for p in out.iterdir())  # what the kill left
    small = write_tsv(tmp_path / "small.tsv", [(f"hola {i}", f"hello {i}") for i in range(50)])
    preprocess(data_config(train=str(small), dev=str(small), test="", vocab_size=20), out)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # cleaned up
