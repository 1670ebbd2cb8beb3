"""`nmt preprocess` as a Python API: corpus → cleaned text → SentencePiece → binarised store.

Data flow (every step streams; memory does not grow with the corpus):

1. open every split first, so missing files, misaligned files and bad headers fail in seconds;
2. clean the training pairs into temporary text files (dev/test are never cleaned or dropped);
3. optional de-duplication: a 64-bit hash per pair, then a filtering pass;
4. train SentencePiece on a bounded sample of the cleaned text;
5. encode every split in chunks and append to the binarised store;
6. write the manifest (sizes and checksums of every file), then move the files into the output
   directory, the manifest last (see `fileio.staged_dir`); the directory is locked throughout.

Cleaning and encoding run chunk by chunk on worker processes (one per core), in order and with a
bounded number of chunks in flight; this process reads the corpus (so read errors keep their file
and line) and writes the results. Corpora under `PARALLEL_MIN` pairs are done in this process,
which is faster than starting workers.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from nmt.config import DataConfig
from nmt.data.corpus import (
    DROP_RULES,
    Cleaner,
    Pair,
    first_occurrences,
    normalize,
    open_corpus,
    read_lines,
)
from nmt.data.protect import Protector, placeholder_symbols
from nmt.data.store import (
    MANIFEST,
    TokenArrayWriter,
    flatten,
    is_store_file,
    token_dtype,
    write_manifest,
)
from nmt.data.tokenizer import Tokenizer, train_sentencepiece
from nmt.errors import NmtError
from nmt.fileio import is_internal, locked_dir, staged_dir

CHUNK = 10_000  # pairs per job: bounds memory, amortises the hand-over to a worker
PARALLEL_MIN = 50_000  # training pairs from which cleaning and encoding use worker processes
EVAL_SPLITS = ("dev", "test")


def preprocess(
    cfg: DataConfig, out_dir: Path, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Build a training-ready directory at `out_dir` from the corpora named in `cfg`.

    Returns the manifest that was written. Raises NmtError on any problem with the input; then
    nothing at `out_dir` has changed. An existing corpus there is replaced only with
    `overwrite` (and then only its own files: anything else in the directory stays).
    """
    start = time.perf_counter()
    _check_languages(cfg)
    splits = {"train": cfg.train, "dev": cfg.dev, **({"test": cfg.test} if cfg.test else {})}
    corpora = {
        name: open_corpus(path, cfg.src, cfg.tgt, cfg.format, cfg.hf_subset)
        for name, path in splits.items()
    }
    if not len(corpora["dev"]):
        raise NmtError(
            "the dev corpus has no pairs",
            corpora["dev"].name,
            "give a dev set of at least one line pair (e.g. a few hundred held-out pairs)",
        )
    protector = Protector(cfg.protect, cfg.protect_regex)  # one, for every split
    bar = _progress_factory(progress)
    cores = cfg.threads or os.cpu_count() or 1
    workers = cores if cores > 1 and len(corpora["train"]) >= PARALLEL_MIN else 0
    with locked_dir(out_dir) as target, staged_dir(target, is_store_file, MANIFEST) as work:
        _check_out_dir(target, Path(out_dir), overwrite)
        with _Workers(workers) as pool:
            clean_paths, cleaning = _clean_train(corpora["train"], cfg, protector, work, bar, pool)
        symbols = placeholder_symbols() if protector.enabled else []
        tokenizers, tok_info = _train_tokenizers(clean_paths, cfg, work, symbols)
        dtype = token_dtype(max(t.vocab_size for t in tokenizers.values()))
        protos = [tokenizers[lang].proto for lang in (cfg.src, cfg.tgt)]
        with _Workers(workers, _load_encoders, (protos, dtype, 1 if workers else cores)) as pool:
            encoder = _SplitEncoder(work, cfg, protector, dtype, pool, bar)
            train = encoder.encode(_read_pairs(clean_paths), "train", cleaning["kept"])
            stats = {"train": {**train, "source": corpora["train"].name}}
            for path, lang in zip(clean_paths, (cfg.src, cfg.tgt)):
                path.replace(work / f"train.{lang}.txt")  # for subword sampling
            for name in EVAL_SPLITS:
                if name in corpora:
                    stats[name] = encoder.encode_eval(corpora[name], name)
        manifest = {
            "src": cfg.src,
            "tgt": cfg.tgt,
            "joint": cfg.joint,
            "dtype": dtype.name,
            "tokenizers": tok_info,
            "splits": stats,
            "cleaning": cleaning,
            "config": dataclasses.asdict(cfg),
            "seconds": round(time.perf_counter() - start, 1),
        }
        write_manifest(work, manifest)
    return manifest


def _check_languages(cfg: DataConfig) -> None:
    for key in ("src", "tgt", "train", "dev"):
        if not getattr(cfg, key):
            raise NmtError(
                f"`data.{key}` is not set",
                f"--{key}",
                "give --src, --tgt, --train and --dev (or set them in the config)",
            )
    if cfg.src == cfg.tgt:
        raise NmtError(
            f"source and target language are both `{cfg.src}`",
            "--src/--tgt",
            "give two different language codes",
        )


def _check_out_dir(out_dir: Path, given: Path, overwrite: bool) -> None:
    """Refuse to replace a corpus without `overwrite`, or to write into a directory that holds
    files of the user's (its own files left by an interrupted run may be replaced)."""
    names = [p.name for p in out_dir.iterdir() if not is_internal(p.name)]
    if MANIFEST in names and not overwrite:
        raise NmtError(
            "the output directory already holds a preprocessed corpus; nothing was changed",
            str(given),
            "pass --overwrite to replace it, or choose another --out",
        )
    if MANIFEST not in names and not all(map(is_store_file, names)):
        raise NmtError(
            "the output directory is not empty and holds no preprocessed corpus; nothing was "
            "changed",
            str(given),
            "choose another --out, or empty the directory yourself",
        )


def _progress_factory(enabled: bool) -> Callable[..., tqdm]:
    """tqdm bars on stderr; shown on terminals only, never when `enabled` is False."""

    def bar(**kwargs: Any) -> tqdm:
        return tqdm(
            disable=None if enabled else True,
            unit=" pairs",
            dynamic_ncols=True,
            mininterval=0.5,
            **kwargs,
        )

    return bar


class _Workers:
    """Chunk jobs on `n` worker processes (none: in this process), results in input order.

    At most two jobs per worker are in flight, so memory stays flat however large the input
    (`Pool.imap` would read its whole input ahead). Workers are spawned, not forked: the caller
    may hold threads (torch, tqdm) that a fork would copy in an unknown state.
    """

    def __init__(self, n: int, initializer: Callable[..., None] | None = None, args: tuple = ()):
        self.pool = None
        if n:
            self.pool = multiprocessing.get_context("spawn").Pool(n, initializer, args)
        elif initializer:
            initializer(*args)
        self.depth = 2 * n

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, error: type[BaseException] | None, *rest: object) -> None:
        if self.pool and error:
            self.pool.terminate()
        elif self.pool:
            self.pool.close()
            self.pool.join()

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        if self.pool is None:
            yield from map(fn, items)
            return
        pending: deque = deque()
        for item in items:
            pending.append(self.pool.apply_async(fn, (item,)))
            if len(pending) >= self.depth:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _chunks(pairs: Iterable[Pair]) -> Iterator[list[Pair]]:
    pairs = iter(pairs)
    while chunk := list(islice(pairs, CHUNK)):
        yield chunk


def _clean_chunk(
    settings: tuple[int, float, Protector], pairs: list[Pair]
) -> tuple[list[Pair], Counter, Counter]:
    """The normalised pairs that pass the cleaning rules (their protected spans masked), the
    count of each rule broken, and of pairs masked and left unmasked."""
    max_words, max_ratio, protector = settings
    cleaner = Cleaner(max_words, max_ratio)
    kept = list(cleaner(pairs))
    masked, spans = _mask_pairs(kept, protector)
    return masked, cleaner.counts, spans


def _mask_pairs(pairs: list[Pair], protector: Protector) -> tuple[list[Pair], Counter]:
    """Pairs with the spans both sides share as placeholders; a pair whose sides hold different
    spans stays as it is (counted as unmatched), so the model never learns to drop one."""
    counts: Counter[str] = Counter()
    if not protector.enabled:
        return pairs, counts
    out = []
    for src, tgt in pairs:
        masked = protector.mask_pair(src, tgt)
        if masked != (src, tgt):  # (a pair without spans is neither)
            counts["unmatched" if masked is None else "masked"] += 1
        out.append(masked or (src, tgt))
    return out, counts


def _clean_train(
    corpus: Any,
    cfg: DataConfig,
    protector: Protector,
    work: Path,
    bar: Callable[..., tqdm],
    pool: _Workers,
) -> tuple[list[Path], dict[str, Any]]:
    """Write the cleaned training pairs as two aligned text files; return them and the counts."""
    paths = [work / f"train.clean.{cfg.src}", work / f"train.clean.{cfg.tgt}"]
    dropped: Counter[str] = Counter({rule: 0 for rule in DROP_RULES})
    spans: Counter[str] = Counter({"masked": 0, "unmatched": 0})
    keys = array("q")
    kept = 0
    reading = _chunks(_counting(corpus, bar(total=len(corpus), desc="clean train")))
    clean = partial(_clean_chunk, (cfg.max_words, cfg.max_ratio, protector))
    with paths[0].open("w", encoding="utf-8") as fs, paths[1].open("w", encoding="utf-8") as ft:
        for pairs, counts, span_counts in pool.map(clean, reading):
            dropped.update(counts)
            spans.update(span_counts)
            fs.writelines(src + "\n" for src, _ in pairs)
            ft.writelines(tgt + "\n" for _, tgt in pairs)
            kept += len(pairs)
            if cfg.dedup:
                keys.extend(hash(pair) for pair in pairs)
    read = kept + sum(dropped.values())
    if cfg.dedup and kept:
        kept = _filter_lines(paths, first_occurrences(keys))
        dropped["duplicate"] = len(keys) - kept
    if kept == 0:
        raise NmtError(
            f"no training pairs left after cleaning ({read} read; dropped: {dict(dropped)})",
            corpus.name,
            "check the language codes and the limits data.max_words / data.max_ratio",
        )
    report = {"read": read, "kept": kept, "dropped": dict(dropped)}
    if protector.enabled:
        report["spans"] = {"masked": spans["masked"], "unmatched": spans["unmatched"]}
    return paths, report


def _counting(pairs: Iterable[Pair], progress: tqdm) -> Iterator[Pair]:
    with progress:
        for pair in pairs:
            progress.update()
            yield pair


def _filter_lines(paths: list[Path], keep: Any) -> int:
    """Rewrite aligned files keeping only lines where `keep` is True; return lines kept."""
    for path in paths:
        tmp = path.with_name(path.name + ".dedup")
        with path.open("rb") as src, tmp.open("wb") as dst:
            dst.writelines(line for line, k in zip(src, keep) if k)
        tmp.replace(path)
    return int(keep.sum())


def _train_tokenizers(
    clean_paths: list[Path], cfg: DataConfig, work: Path, symbols: list[str]
) -> tuple[dict[str, Tokenizer], dict[str, Any]]:
    """Train one joint model or one per side (`symbols` kept whole); return tokenizers and
    their manifest entries."""
    options = dict(
        vocab_size=cfg.vocab_size,
        model_type=cfg.spm_model_type,
        character_coverage=cfg.character_coverage,
        byte_fallback=cfg.byte_fallback,
        sample_size=cfg.spm_sample_size,
        seed=0,
        threads=cfg.threads,
        symbols=symbols,
    )
    if cfg.joint:
        plan = {"spm.model": clean_paths}
        files = {cfg.src: "spm.model", cfg.tgt: "spm.model"}
    else:
        files = {cfg.src: f"spm.{cfg.src}.model", cfg.tgt: f"spm.{cfg.tgt}.model"}
        plan = {files[cfg.src]: clean_paths[:1], files[cfg.tgt]: clean_paths[1:]}
    models = {}
    for name, inputs in tqdm(plan.items(), desc="train sentencepiece", disable=None, leave=False):
        models[name] = Tokenizer.load(train_sentencepiece(inputs, work / name, **options))
        work.joinpath(name).with_suffix(".vocab").unlink(missing_ok=True)
    tokenizers = {lang: models[name] for lang, name in files.items()}
    info = {
        lang: {"file": name, "sha256": models[name].sha256, "vocab_size": models[name].vocab_size}
        for lang, name in files.items()
    }
    return tokenizers, info


def _read_pairs(paths: list[Path]) -> Iterator[Pair]:
    return zip(read_lines(paths[0]), read_lines(paths[1]))


# What a process that encodes chunks holds: the (source, target) tokenizers, the id dtype, and
# SentencePiece threads. Set by `_load_encoders`, in each worker or in this process.
_ENCODERS: tuple[list[Tokenizer], np.dtype, int] = ([], np.dtype(np.int32), 1)


def _load_encoders(protos: list[bytes], dtype: np.dtype, threads: int) -> None:
    global _ENCODERS
    _ENCODERS = ([Tokenizer(proto) for proto in protos], dtype, threads)


def _encode_chunk(pairs: list[Pair]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(lengths, concatenated ids) of each side of a chunk of pairs."""
    tokenizers, dtype, threads = _ENCODERS
    return [
        flatten(tok.encode([p[side] for p in pairs], threads), dtype)
        for side, tok in enumerate(tokenizers)
    ]


@dataclass
class _SplitEncoder:
    """Encodes splits into the store in `work` (the pool's processes hold the tokenizers)."""

    work: Path
    cfg: DataConfig
    protector: Protector  # masks the sources as translation will
    dtype: np.dtype
    pool: _Workers
    bar: Callable[..., tqdm]

    def encode(self, pairs: Iterable[Pair], split: str, total: int) -> dict[str, Any]:
        """Encode pairs chunk by chunk into SPLIT.SRC/.TGT .bin/.idx; return counts."""
        langs = (self.cfg.src, self.cfg.tgt)
        writers = [TokenArrayWriter(self.work / f"{split}.{lang}", self.dtype) for lang in langs]
        try:
            with self.bar(total=total, desc=f"encode {split}") as progress:
                for sides in self.pool.map(_encode_chunk, _chunks(pairs)):
                    for writer, (lengths, ids) in zip(writers, sides):
                        writer.append(lengths, ids)
                    progress.update(len(sides[0][0]))
        finally:
            for writer in writers:
                writer.close()
        tokens = {lang: w.tokens for lang, w in zip(langs, writers)}
        return {"pairs": writers[0].sentences, "tokens": tokens}

    def encode_eval(self, corpus: Any, split: str) -> dict[str, Any]:
        """Keep dev/test text as given (references) and encode its normalised form, the
        source's spans masked as translation masks them (the target's where they match)."""
        langs = (self.cfg.src, self.cfg.tgt)
        files = [(self.work / f"{split}.{lang}.txt").open("w", encoding="utf-8") for lang in langs]
        protector = self.protector

        def normalised() -> Iterator[Pair]:
            for src, tgt in corpus:
                files[0].write(src + "\n")
                files[1].write(tgt + "\n")
                src, tgt = normalize(src), normalize(tgt)
                yield protector.mask_pair(src, tgt) or (protector.mask(src).text, tgt)

        try:
            return {**self.encode(normalised(), split, len(corpus)), "source": corpus.name}
        finally:
            for fh in files:
                fh.close()
