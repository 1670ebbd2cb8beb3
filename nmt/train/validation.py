"""Validation during training: the dev split's teacher-forced loss and its greedy translations
scored with BLEU/chrF against the raw references, as `nmt train` logs them every
`train.valid_every` updates (progress.py decides what the score changes)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from nmt.config import Config
from nmt.data.batching import ParallelDataset, TokenBatchSampler, length_batches
from nmt.data.corpus import normalize, read_lines
from nmt.data.protect import model_protection
from nmt.data.shortlist import Shortlist
from nmt.data.store import verify_file
from nmt.data.tokenizer import Tokenizer
from nmt.decode.constraints import Constraints
from nmt.decode.greedy import greedy_search
from nmt.device import Runtime
from nmt.errors import NmtError
from nmt.evaluate import corpus_metrics


class DevSet:
    """The dev split of a preprocessed directory, in length-sorted batches, with its raw text
    (references and the samples shown in the log)."""

    def __init__(
        self,
        data_dir: Path,
        manifest: dict[str, Any],
        cfg: Config,
        tokenizers: tuple[Tokenizer, Tokenizer],
        protect: Any,
        shortlist: Shortlist | None = None,
    ):
        """`shortlist`: the run's (decode.shortlist: the dev search scores each sentence's
        list alone, as `nmt translate` will)."""
        self.cfg, self.tokenizers, self.protect = cfg, tokenizers, protect
        self.shortlist = shortlist if cfg.decode.shortlist else None
        self.data = ParallelDataset(data_dir, "dev")
        if not len(self.data):
            raise NmtError(
                "the dev split has no pairs", str(data_dir), "preprocess with a non-empty --dev"
            )
        longest = int(max(self.data.src_sizes.max(), self.data.tgt_sizes.max()))
        self.batches = TokenBatchSampler(
            self.data.src_sizes,
            self.data.tgt_sizes,
            max(cfg.train.batch_tokens, longest),
            shuffle=False,
        )
        self.text = {
            side: list(read_lines(verify_file(data_dir, manifest, f"dev.{manifest[lang]}.txt")))
            for side, lang in (("src", "src"), ("ref", "tgt"))
        }
        for side, lines in self.text.items():
            if len(lines) != len(self.data):
                raise NmtError(
                    f"the dev text ({side}) has {len(lines)} lines but the dev split "
                    f"{len(self.data)} pairs",
                    str(data_dir),
                    "run `nmt preprocess` again (with --overwrite) to rebuild it",
                )

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, runtime: Runtime, samples: int = 3
    ) -> tuple[dict[str, Any], list[str]]:
        """Teacher-forced dev loss and greedy-decoded BLEU/chrF against the raw references (the
        source's protected spans masked as preprocessing stored them, kept by the search and
        put back); also returns the dev translations."""
        model.eval()
        nll = tokens = 0.0
        for indices in self.batches.batches(0):
            batch = self.data.batch(indices).to(runtime.device)
            with runtime.autocast():
                _, batch_nll = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
            nll += float(batch_nll)
            tokens += batch.target_tokens
        hyps = self._decode(model, runtime)
        scores = {s.name: s.score for s in corpus_metrics(hyps, [self.text["ref"]])}
        loss = nll / max(tokens, 1)
        shown = [
            {"src": self.text["src"][i], "ref": self.text["ref"][i], "hyp": hyps[i]}
            for i in range(min(samples, len(self.data)))
        ]
        return {"loss": loss, "ppl": math.exp(min(loss, 50)), **scores, "samples": shown}, hyps

    def _decode(self, model: torch.nn.Module, runtime: Runtime) -> list[str]:
        """Greedy translations of the dev sources, in batches of `decode.batch_tokens` source
        subwords as `nmt translate` makes them (the training batch size, far smaller, would cut
        the dev set into many short searches whose per-step costs dominate)."""
        dc = self.cfg.decode
        protector, symbols = model_protection(self.tokenizers, self.protect)
        masked = [protector.mask(normalize(text)) for text in self.text["src"]]  # as stored
        hyps = [""] * len(self.data)
        for indices in length_batches(self.data.src.lengths.tolist(), dc.batch_tokens):
            batch = self.data.batch(indices).to(runtime.device)
            constraints = None
            if symbols is not None:
                lines = [masked[i] for i in indices]
                constraints = Constraints.for_sources(batch.src.tolist(), lines, symbols)
            vocab = None
            if self.shortlist is not None:
                shortlist = self.shortlist.to(batch.src.device)
                vocab = shortlist.masks(batch.src, dc.shortlist_k, dc.shortlist_frequent)
            with runtime.autocast():
                outputs, _ = greedy_search(
                    model, batch.src, batch.src_lengths, dc.max_len_a, dc.max_len_b, constraints,
                    vocab=vocab,
                )  # fmt: skip
            for i, ids in zip(indices, outputs):
                hyps[i] = masked[i].restore(self.tokenizers[1].decode(ids))
        return hyps
