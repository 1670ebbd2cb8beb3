"""Translation with trained checkpoints: the Python API behind `nmt translate`.

    translator = Translator.from_checkpoint("runs/x/best.pt")
    translator.translate(["Hola, mundo."], beam=5)  # ["Hello, world."]

Several checkpoints with the same vocabulary decode as an ensemble. Input lines are normalised
like the training data, their protected spans masked (`nmt.data.protect`: as preprocessing masked
them, plus glossary terms and markup when asked), split into subwords, sorted by length and cut
into batches of at most `batch_tokens` source tokens (counting every beam), decoded with
`nmt.decode.beam` (constrained to keep every placeholder, `nmt.decode.constraints`; or sampled,
`nmt.decode.sampling`), put back together and returned in input order. An empty line gives an empty
translation; a line longer than the model's limit is truncated, with a warning naming its
position. Files and pipes, line for line: `nmt.translate.files`.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from nmt.config import Config, DecodeConfig, checked
from nmt.data.batching import length_batches
from nmt.data.corpus import normalize
from nmt.data.protect import MAX_SPANS, PLACEHOLDER, Masked, Protector, model_protection
from nmt.data.tokenizer import EOS_ID, PAD_ID, Tokenizer
from nmt.decode.beam import BeamBatch
from nmt.decode.constraints import Constraints
from nmt.decode.greedy import greedy_search
from nmt.decode.hypothesis import Hypothesis, length_penalty
from nmt.decode.sampling import Sampler
from nmt.device import Runtime, resolve_runtime
from nmt.errors import NmtError
from nmt.model import Seq2Seq
from nmt.model.checkpoint import (
    checkpoint_config,
    load_checkpoint,
    model_from_checkpoint,
    vocabulary_id,
)


@dataclass
class Translation:
    """One hypothesis for one input line."""

    text: str  # detokenised output
    score: float  # log-probability divided by the length penalty
    pieces: list[str]  # output subwords (without eos)
    attention: list[list[float]] | None = None  # [len(pieces) + 1][len(source pieces) + 1]


@dataclass
class Result:
    """Everything decoded for one input line: its subwords and its n-best list (best first)."""

    source_pieces: list[str]
    hypotheses: list[Translation]
    terms: list[tuple[str, str]] | None = None  # glossary terms applied; None: no glossary


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
    ) -> Translator:
        """Load one checkpoint, or several (an ensemble) trained on the same vocabulary.

        The first checkpoint's decode settings are the defaults of `translate`."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise NmtError("no checkpoint given", "nmt translate", "name a .pt file")
        runtime = resolve_runtime(device, precision)
        checkpoints = [load_checkpoint(Path(p)) for p in paths]
        vocab = checkpoints[0]["vocab"]
        tokenizers = {
            lang: Tokenizer(entry["proto"], f"{paths[0]} (vocabulary {lang})")
            for lang, entry in vocab["tokenizers"].items()
        }
        models = []
        for path, checkpoint in zip(paths, checkpoints):
            if vocabulary_id(checkpoint["vocab"]) != vocabulary_id(vocab):
                raise NmtError(
                    "an ensemble needs one vocabulary, and this checkpoint's differs",
                    str(path),
                    f"ensemble only models trained on the same preprocessed data as {paths[0]}",
                )
            cfg = checkpoint_config(checkpoint, str(path))
            model = model_from_checkpoint(checkpoint, cfg, str(path))
            models.append(model.to(runtime.device).eval())
        cfg = checkpoint_config(checkpoints[0], str(paths[0]))
        src, tgt = tokenizers[vocab["src"]], tokenizers[vocab["tgt"]]
        translator = cls(models, src, tgt, cfg, runtime, vocab.get("protect"))
        translator.languages = (vocab["src"], vocab["tgt"])
        translator.checkpoints = [
            {"path": str(p), "sha256": c.get("sha256", "")} for p, c in zip(paths, checkpoints)
        ]
        return translator

    def translate(self, texts: Sequence[str], beam: int | None = None, **options) -> list[str]:
        """The best translation of each text (options as in `translate_nbest`)."""
        results = self.translate_nbest(texts, beam=beam, **options)
        return [r.hypotheses[0].text if r.hypotheses else "" for r in results]

    def translate_nbest(
        self,
        texts: Sequence[str],
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
    ) -> DecodeOptions:
        """Search settings, each validated like its config key; None: the checkpoint's. With
        `sampling` (`Sampler.parse`), one translation drawn per line instead of the beam's."""
        return DecodeOptions.build(
            self.cfg.decode, beam, nbest, alpha, penalty, batch_tokens, attention, sampling,
            temperature, seed,
        )  # fmt: skip

    def prepare(
        self, texts: Sequence[str], first_line: int = 1, prefixes: Sequence[str] | None = None
    ) -> list[Prepared]:
        """Normalise, mask the protected spans and split into subwords, truncated to the
        model's limit; what was cut or left unprotected is in each item's warnings. A text's
        prefix (target language) is masked like its text, normalised and split into target
        subwords."""
        limit = self.cfg.decode.max_input_len or self.cfg.train.max_len
        masked = [self.protector.mask(normalize(t)) for t in texts]
        ids = self.src_tokenizer.encode([m.text for m in masked])
        items = []
        for line, m, seq in zip(range(first_line, first_line + len(texts)), masked, ids):
            warnings = []
            if m.unprotected:
                warnings.append(
                    f"line {line} has more than {MAX_SPANS} protected spans; the last "
                    f"{m.unprotected} are translated as ordinary text"
                )
            if self.markup == "xml" and (unpaired := m.unpaired_tags()):
                warnings.append(
                    f"line {line}: {', '.join(unpaired)} has no partner tag; the line is not "
                    "well-formed XML, and its translation will not be either"
                )
            if len(seq) > limit:
                warnings.append(
                    f"line {line} has {len(seq)} subwords; truncated to the first {limit} "
                    "(decode.max_input_len)"
                )
                seq = seq[:limit]
            items.append(Prepared(m, seq, warnings, line))
        if prefixes is not None:
            for item, prefix in zip(items, prefixes, strict=True):
                item.prefix_text = self._masked_prefix(item, prefix)
            encoded = self.tgt_tokenizer.encode([normalize(item.prefix_text) for item in items])
            for item, prefix_ids in zip(items, encoded):
                item.prefix = prefix_ids
        return items

    def _masked_prefix(self, item: Prepared, prefix: str) -> str:
        """A prefix with its source line's placeholders: forced as given, its spans count as
        emitted, and the search places the rest."""
        if self.symbols is None:
            return prefix
        masked = (
            None if PLACEHOLDER.search(prefix) else self.protector.mask_prefix(item.masked, prefix)
        )
        if masked is None:
            raise NmtError(
                "the prefix holds a protected span (placeholder, tag, URL, term) that its "
                "source line does not hold as often, or a placeholder symbol",
                f"the prefix of line {item.line}",
                "give a prefix whose spans all come from its source line",
            )
        return masked

    def _texts(self, item: Prepared, hyps: list[Hypothesis]) -> list[str]:
        """The hypotheses' texts (placeholders in), each beginning with the line's prefix as
        given, where the subwords spell the prefix normalised, with unknown characters as ⁇."""
        texts = [self.tgt_tokenizer.decode(h.tokens) for h in hyps]
        if not item.prefix:
            return texts
        head = self.tgt_tokenizer.decode(item.prefix)
        return [_as_given(item.prefix_text, head, text) for text in texts]

    def translate_prepared(self, items: Sequence[Prepared], options: DecodeOptions) -> list[Result]:
        """Decode prepared lines in length-sorted batches; results in input order. An empty
        line gets empty translations (n-best of them); a line whose search found nothing (non-finite
        scores), an empty n-best list."""
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
        terms = [] if self.protector.glossary else None
        empty = [Translation("", 0.0, [])] * options.nbest  # an n-best list of the same shape
        return [r or Result([], empty, terms) for r in results]

    def batch(self, options: DecodeOptions) -> TranslationBatch:
        """An empty search that prepared lines can join at any step (continuous batching);
        use it as a context (`with translator.batch(options) as batch:`)."""
        return TranslationBatch(self, options)

    def result(self, item: Prepared, hyps: list[Hypothesis], nbest: int) -> Result:
        """One line's result: its n-best list with the spans put back. With placeholders, a
        hypothesis that spells out a span of its own from ordinary subwords (`%` then `d`,
        which a printf would read as an argument) goes after those that do not."""
        masked = item.masked
        texts = self._texts(item, hyps)
        if self.symbols is not None:
            spelled = [not self.protector.keeps(masked, masked.restore(t)) for t in texts]
            order = sorted(range(len(hyps)), key=spelled.__getitem__)  # stable: by score
            hyps, texts = [hyps[i] for i in order], [texts[i] for i in order]
        translations = [
            Translation(
                masked.restore(text, escape_xml=self.markup == "xml"),
                h.score,
                self.tgt_tokenizer.pieces(h.tokens),
                None if h.attention is None else h.attention.tolist(),
            )
            for text, h in zip(texts, hyps[:nbest])
        ]
        terms = [(s.source, s.target) for s in masked.spans if s.term]
        return Result(
            self.src_tokenizer.pieces(item.ids) + ["</s>"],
            translations,
            terms if self.protector.glossary else None,
        )

    def constraints(self, batch: list[list[int]], masked: list[Masked]) -> Constraints | None:
        """What the search must emit for this batch; None for a model without placeholders."""
        if self.symbols is None:
            return None
        return Constraints.for_sources(batch, masked, self.symbols, self.runtime.device)


class TranslationBatch:
    """Prepared lines in one running beam search (`nmt.decode.BeamBatch`): lines join with
    `add` while others are being decoded, and `step` hands back each line's result as soon as its
    search is done. `translate_prepared` and the server's scheduler both decode through it.

    It is a context: the runtime's precision holds from `with` to its end, on the thread that
    entered it. Autocast forgets its casts of the weights when its context exits, so entered
    per step it cast the output layer anew at every step (2 ms of a 6 ms step, one sentence
    of the Bible model in bf16)."""

    def __init__(self, translator: Translator, options: DecodeOptions):
        self.translator, self.options = translator, options
        dc = translator.cfg.decode
        self.search = BeamBatch(
            translator.models,
            beam=options.beam,
            nbest=options.beam if translator.symbols else options.nbest,
            alpha=options.alpha,
            penalty=options.penalty,
            max_len_a=dc.max_len_a,
            max_len_b=dc.max_len_b,
            attention=options.attention,
        )
        self.items: dict[Hashable, Prepared] = {}
        self.tokens = 0  # source subwords (with eos) of the lines in the search
        self._context = contextlib.ExitStack()

    def __enter__(self) -> TranslationBatch:
        self._context.enter_context(self.translator.runtime.autocast())
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.close()

    def __len__(self) -> int:
        return len(self.items)

    @torch.no_grad()
    def add(self, keys: Sequence[Hashable], items: Sequence[Prepared]) -> None:
        """Non-empty lines join the search; `step` hands each back under its key."""
        runtime = self.translator.runtime
        src, lengths = source_tensors(items, runtime.device)
        batch = [item.ids for item in items]
        constraints = self.translator.constraints(batch, [item.masked for item in items])
        runtime.share_cores()
        self.search.add(keys, src, lengths, constraints, prefix_tensor(items))
        self.items.update(zip(keys, items))
        self.tokens += int(lengths.sum())

    def step(self) -> list[tuple[Hashable, Result]]:
        """One search step; the lines it finished, with their results."""
        return [(key, self._result(key, hyps)) for key, hyps in self.search.step()]

    def drop(self, keys: Sequence[Hashable]) -> None:
        """Take lines out unfinished."""
        self.search.drop(keys)
        for key in keys:
            self._forget(key)

    def _result(self, key: Hashable, hyps: list[Hypothesis]) -> Result:
        item = self._forget(key)
        return self.translator.result(item, hyps, self.options.nbest)

    def _forget(self, key: Hashable) -> Prepared:
        item = self.items.pop(key)
        self.tokens -= len(item.ids) + 1
        return item


@dataclass
class Prepared:
    """One input line ready for the search."""

    masked: Masked  # the normalised line with its protected spans replaced by placeholders
    ids: list[int]  # its subwords, truncated to the model's limit
    warnings: list[str]  # what was truncated or left unprotected ("line N ...")
    line: int = 1  # its line number in the input (sampling draws by it)
    prefix: list[int] = field(default_factory=list)  # what its translation must begin with
    prefix_text: str = ""  # the prefix as given, its spans masked


def _as_given(prefix: str, head: str, text: str) -> str:
    """`text` with its start `head` (the prefix as its subwords spell it) replaced by the
    prefix as given; unchanged if it does not start so."""
    if not text.startswith(head):
        return text
    rest = text[len(head) :]
    return prefix + (rest.lstrip() if prefix[-1:].isspace() else rest)


@torch.no_grad()
def sample_lines(
    translator: Translator, items: list[Prepared], options: DecodeOptions
) -> list[Result]:
    """One translation drawn per line of one batch (`nmt.decode.sampling`), scored like a search's
    hypothesis."""
    src, lengths = source_tensors(items, translator.runtime.device)
    masked = [item.masked for item in items]
    constraints = translator.constraints([item.ids for item in items], masked)
    lines = torch.tensor([item.line for item in items])
    dc, runtime = translator.cfg.decode, translator.runtime
    runtime.share_cores()
    with runtime.autocast():
        outputs, totals = greedy_search(
            translator.models, src, lengths, dc.max_len_a, dc.max_len_b, constraints,
            options.sampler, lines, prefix_tensor(items),
        )  # fmt: skip
    results = []
    for item, tokens, total in zip(items, outputs, totals.tolist()):
        score = total / length_penalty(len(tokens) + 1, options.penalty, options.alpha)
        hyps = [Hypothesis(tokens, score)] if math.isfinite(score) else []
        results.append(translator.result(item, hyps, 1))
    return results


def source_tensors(items: Sequence[Prepared], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Prepared lines as the search takes them: padded ids with eos [n, S], lengths [n]."""
    lengths = torch.tensor([len(item.ids) + 1 for item in items])
    sentences = [torch.tensor([*item.ids, EOS_ID]) for item in items]
    src = pad_sequence(sentences, batch_first=True, padding_value=PAD_ID)
    return src.to(device), lengths.to(device)


def prefix_tensor(items: Sequence[Prepared]) -> torch.Tensor | None:
    """The lines' prefixes [n, P], -1 after each one's end; None when none has one."""
    if not any(item.prefix for item in items):
        return None
    width = max(len(item.prefix) for item in items)
    return torch.tensor([[*item.prefix, *[-1] * (width - len(item.prefix))] for item in items])


def no_translation(line: int) -> str:
    return (
        f"line {line}: no translation found (the model's scores are not finite: NaN or "
        "overflowing weights?); it is left empty"
    )


@dataclass
class DecodeOptions:
    """How a request's lines are decoded (`Translator.decode_options`)."""

    beam: int
    nbest: int
    alpha: float
    penalty: str
    batch_tokens: int
    attention: bool
    sampler: Sampler | None = None  # draw one translation per line instead of searching

    @classmethod
    def build(
        cls,
        dc: DecodeConfig,
        beam: int | None,
        nbest: int,
        alpha: float | None,
        penalty: str | None,
        batch_tokens: int | None,
        attention: bool,
        sampling: str | None,
        temperature: float,
        seed: int,
    ) -> DecodeOptions:
        """Each setting validated like its config key and named by its flag; None: dc's."""

        def option(key: str, value: object, flag: str) -> Any:
            return getattr(dc, key) if value is None else checked(f"decode.{key}", value, flag)

        options = cls(
            beam=option("beam_size", beam, "--beam"),
            nbest=nbest,
            alpha=option("alpha", alpha, "--alpha"),
            penalty=option("length_penalty", penalty, "--penalty"),
            batch_tokens=option("batch_tokens", batch_tokens, "--batch-tokens"),
            attention=attention,
        )
        if sampling is not None:
            for flag, value in (("--beam", beam or 1), ("--nbest", nbest)):
                if value > 1:
                    raise NmtError(
                        "sampling draws one translation per line, without a beam",
                        flag,
                        f"leave out {flag} (or --sampling)",
                    )
            options.beam, options.sampler = 1, Sampler.parse(sampling, temperature, seed)
        if nbest < 1:
            raise NmtError(f"an n-best list of {nbest}", "--nbest", "ask for 1 or more")
        if nbest > options.beam:
            raise NmtError(
                f"an n-best list of {nbest} needs a beam of at least {nbest}, not {options.beam}",
                "--nbest",
                f"add --beam {nbest}",
            )
        return options
