"""The translator: one model or an ensemble loaded from checkpoints, and the API that decodes
with it (`translate`, `translate_nbest`, and `translate_prepared` and `batch` for callers that
prepare lines themselves, as the server does). Preparing lines is `nmt.translate.inputs`'s job,
searching `nmt.translate.batch`'s, assembling results `nmt.translate.outputs`'s."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from nmt.config import Config
from nmt.data.batching import length_batches
from nmt.data.protect import Masked, Protector, model_protection
from nmt.data.shortlist import Shortlist
from nmt.data.tokenizer import Tokenizer
from nmt.decode.constraints import Constraints
from nmt.decode.hypothesis import Hypothesis
from nmt.device import Runtime, resolve_runtime
from nmt.errors import NmtError
from nmt.model import Seq2Seq
from nmt.model.checkpoint import (
    checkpoint_config,
    load_checkpoint,
    model_from_checkpoint,
    vocabulary_id,
)
from nmt.model.compiled import compile_search
from nmt.model.int8 import quantize
from nmt.translate.batch import TranslationBatch, sample_lines
from nmt.translate.inputs import Prepared, add_prefixes, as_texts, prepare_lines
from nmt.translate.options import DecodeOptions
from nmt.translate.outputs import Result, assemble, empty_result, join_parts, no_translation


def ensemble_models(
    paths: Sequence[str | Path], checkpoints: Sequence[dict], runtime: Runtime
) -> list[Seq2Seq]:
    """The checkpoints' models, on the runtime's device for inference (int8 where it says
    so); all must share the first one's vocabulary."""
    vocab, models = checkpoints[0]["vocab"], []
    for path, checkpoint in zip(paths, checkpoints):
        if vocabulary_id(checkpoint["vocab"]) != vocabulary_id(vocab):
            raise NmtError(
                "an ensemble needs one vocabulary, and this checkpoint's differs",
                str(path),
                f"ensemble only models trained on the same preprocessed data as {paths[0]}",
            )
        cfg = checkpoint_config(checkpoint, str(path))
        model = model_from_checkpoint(checkpoint, cfg, str(path)).to(runtime.device).eval()
        models.append(quantize(model) if runtime.precision == "int8" else model)
    return models


class Translator:
    """One model or an ensemble, its tokenizers, and the device it runs on."""

    def __init__(
        self,
        models: Sequence[Seq2Seq],
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer,
        cfg: Config,
        runtime: Runtime,
        protect: dict[str, str] | None = None,
    ):
        self.models, self.cfg, self.runtime = list(models), cfg, runtime
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        self.warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr)
        self.protector, self.symbols = model_protection((src_tokenizer, tgt_tokenizer), protect)
        self.markup: str | None = None
        self.checkpoints: list[dict[str, str]] = []  # {"path", "sha256"} of each model loaded
        self.languages = ("", "")  # (source, target) codes, as preprocessing named them
        self.shortlist: Shortlist | None = None  # the first checkpoint's, if it has one

    def protect(
        self,
        glossary: dict[str, str] | None = None,
        ignore_case: bool = False,
        markup: str | None = None,
    ) -> None:
        """Also protect glossary terms (each translated as given) and, with markup="xml", XML
        tags and entities (the output stays well-formed); replaces what an earlier call set.
        Needs a model trained with protected spans (`nmt preprocess --protect`), whose
        placeholders carry them."""
        if self.symbols is None:
            raise NmtError(
                "this model was trained without protected spans, so it cannot carry glossary "
                "terms or markup",
                "--glossary/--markup",
                "preprocess with --protect all (or data.protect) and train again",
            )
        patterns, regex = self.protector.patterns, self.protector.user_regex
        if markup == "xml":
            patterns = ",".join(filter(None, [patterns, "xml"]))
        self.protector = Protector(patterns, regex, glossary, ignore_case)
        self.markup = markup

    @classmethod
    def from_checkpoint(
        cls,
        paths: str | Path | Sequence[str | Path],
        device: str | None = None,
        precision: str = "fp32",
        compile: bool = False,
    ) -> Translator:
        """Load one checkpoint, or several (an ensemble) trained on the same vocabulary.

        The first checkpoint's decode settings are the defaults of `translate`. With `compile`,
        each model's search step is compiled on first use (`nmt.model.compiled`)."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise NmtError("no checkpoint given", "nmt translate", "name a .pt file")
        runtime = resolve_runtime(device, precision, int8=True)
        checkpoints = [load_checkpoint(Path(p)) for p in paths]
        vocab = checkpoints[0]["vocab"]
        tokenizers = {
            lang: Tokenizer(entry["proto"], f"{paths[0]} (vocabulary {lang})")
            for lang, entry in vocab["tokenizers"].items()
        }
        models = ensemble_models(paths, checkpoints, runtime)
        cfg = checkpoint_config(checkpoints[0], str(paths[0]))
        src, tgt = tokenizers[vocab["src"]], tokenizers[vocab["tgt"]]
        translator = cls(models, src, tgt, cfg, runtime, vocab.get("protect"))
        if compile:
            for model in models:
                compile_search(model, lambda message: translator.warn(message))
        translator.languages = (vocab["src"], vocab["tgt"])
        if vocab.get("shortlist") is not None:
            shortlist = Shortlist.from_entry(
                vocab["shortlist"], vocab["src_size"], vocab["tgt_size"], str(paths[0])
            )
            translator.shortlist = shortlist.to(runtime.device)
        translator.checkpoints = [
            {"path": str(p), "sha256": c.get("sha256", "")} for p, c in zip(paths, checkpoints)
        ]
        return translator

    def translate(self, texts: Iterable[str], beam: int | None = None, **options) -> list[str]:
        """The best translation of each text (options as in `translate_nbest`)."""
        results = self.translate_nbest(texts, beam=beam, **options)
        return [r.hypotheses[0].text if r.hypotheses else "" for r in results]

    def translate_nbest(
        self,
        texts: Iterable[str],
        beam: int | None = None,
        nbest: int = 1,
        alpha: float | None = None,
        penalty: str | None = None,
        batch_tokens: int | None = None,
        attention: bool = False,
        first_line: int = 1,
        prefixes: Sequence[str] | None = None,
        **sampling: Any,
    ) -> list[Result]:
        """Decode `texts`; None means the checkpoint's `decode` setting. `first_line` is the
        line number of texts[0], used in warnings and by sampling (`sampling`, `temperature`,
        `seed`: see `decode_options`). With `prefixes` (one per text, "" for none), each
        translation begins with its prefix (forced decoding, then search)."""
        options = self.decode_options(
            beam, nbest, alpha, penalty, batch_tokens, attention, **sampling
        )
        items = self.prepare(texts, first_line, prefixes)
        for item in items:
            if item.cuts and options.attention:
                item.warnings.append(
                    f"line {item.line}: a line translated in parts has no attention weights"
                )
            for message in item.warnings:
                self.warn(f"warning: {message}")
        results = self.translate_prepared(items, options)
        for i, result in enumerate(results):
            if not result.hypotheses:
                self.warn(f"warning: {no_translation(first_line + i)}")
        return results

    @property
    def has_attention(self) -> bool:
        """Whether every model attends (rnnenc's decoder reads a fixed summary instead)."""
        return all(hasattr(model.decoder, "attention") for model in self.models)

    def decode_options(
        self,
        beam: int | None = None,
        nbest: int = 1,
        alpha: float | None = None,
        penalty: str | None = None,
        batch_tokens: int | None = None,
        attention: bool = False,
        sampling: str | None = None,
        temperature: float = 1.0,
        seed: int = 1,
        shortlist: bool | None = None,
    ) -> DecodeOptions:
        """Search settings, each validated like its config key; None: the checkpoint's. With
        `sampling` (`Sampler.parse`), one translation drawn per line instead of the beam's;
        `shortlist` (None: decode.shortlist) scores each line's shortlist alone where the
        checkpoint has one."""
        return DecodeOptions.build(
            self.cfg.decode, beam, nbest, alpha, penalty, batch_tokens, attention, sampling,
            temperature, seed, shortlist,
        )  # fmt: skip

    def prepare(
        self,
        texts: Iterable[str],
        first_line: int = 1,
        prefixes: Iterable[str] | None = None,
        long_lines: str | None = None,
    ) -> list[Prepared]:
        """Normalise, mask the protected spans and split into subwords; a text over the
        model's limit is split into parts that each fit, translated and joined (`long_lines`
        "split"), or truncated ("truncate"; None: `decode.long_lines`). What was split, cut or
        left unprotected is in each item's warnings. A text's prefix (target language) is
        masked like its text, normalised and split into target subwords; it begins the first
        part of a split text."""
        limit = self.cfg.decode.max_input_len or self.cfg.train.max_len
        xml = self.markup == "xml"
        texts = as_texts(texts, "texts", first_line)
        items = prepare_lines(
            texts, first_line, self.protector, self.src_tokenizer, limit, xml,
            long_lines or self.cfg.decode.long_lines,
        )  # fmt: skip
        if prefixes is not None:
            prefixes = as_texts(prefixes, "prefixes", first_line, (len(texts), "text"))
            protector = None if self.symbols is None else self.protector
            add_prefixes(items, prefixes, protector, self.tgt_tokenizer)
        return items

    def translate_prepared(self, items: Sequence[Prepared], options: DecodeOptions) -> list[Result]:
        """Decode prepared lines in length-sorted batches (a split line's parts in its batch,
        `TranslationBatch`); results in input order. An empty line gets empty translations
        (n-best of them); a line whose search found nothing (non-finite scores), an empty n-best
        list."""
        results: list[Result | None] = [None] * len(items)
        lengths = [len(item.ids) for item in items]
        batches = length_batches(lengths, options.batch_tokens // options.beam)
        if options.sampler is not None:
            for lines in batches:
                sampled = sample_lines(self, [items[i] for i in lines], options)
                for i, result in zip(lines, sampled):
                    results[i] = result
        else:
            with self.batch(options) as batch:
                for lines in batches:
                    batch.add(lines, [items[i] for i in lines])
                    while len(batch):
                        for i, result in batch.step():
                            results[i] = result  # type: ignore[index]
        glossary = bool(self.protector.glossary)
        return [r or empty_result(options.nbest, glossary) for r in results]

    def batch(self, options: DecodeOptions) -> TranslationBatch:
        """An empty search that prepared lines can join at any step (continuous batching);
        use it as a context (`with translator.batch(options) as batch:`)."""
        return TranslationBatch(self, options)

    def result(
        self, item: Prepared, hyps: list[Hypothesis], nbest: int, texts: list[str] | None = None
    ) -> Result:
        """One line's result: its n-best list with the spans put back (`outputs.assemble`)."""
        return assemble(
            item,
            hyps,
            nbest,
            (self.src_tokenizer, self.tgt_tokenizer),
            self.protector,
            placeholders=self.symbols is not None,
            xml=self.markup == "xml",
            texts=texts,
        )

    def joined(
        self, item: Prepared, parts: Sequence[list[Hypothesis]], options: DecodeOptions
    ) -> Result:
        """A split line's result: its parts' translations joined (`outputs.join_parts`)."""
        hyps, texts = join_parts(
            item, parts, self.tgt_tokenizer, options.penalty, options.alpha, options.nbest
        )
        return self.result(item, hyps, options.nbest, texts)

    def constraints(self, batch: list[list[int]], masked: list[Masked]) -> Constraints | None:
        """What the search must emit for this batch; None for a model without placeholders."""
        if self.symbols is None:
            return None
        return Constraints.for_sources(batch, masked, self.symbols, self.runtime.device)

    def vocab(self, src: torch.Tensor, options: DecodeOptions) -> torch.Tensor | None:
        """Each sentence's shortlist [n, V] (bool) from its source src [n, S] (padded); None
        without one (or with options.shortlist off)."""
        if self.shortlist is None or not options.shortlist:
            return None
        dc = self.cfg.decode
        return self.shortlist.masks(src, dc.shortlist_k, dc.shortlist_frequent)
