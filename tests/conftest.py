"""Shared fixtures: the shipped sample, preprocessed once per test session, and small corpora."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

# Tests never reach the network, and keep the datasets cache out of the user's home.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="nmt-tests-hf-")

import pytest
import torch

from nmt.config import DataConfig
from nmt.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test` runs one worker per CPU), each worker keeps to a CPU of
    its own, and so do the processes its tests start: tests run with one thread each and never
    make another worker's threads wait. (A 2-thread torch process beside a busy one loses far
    more than half its speed: docs/notes/2026-11-27-shared-machine-threads.md.)"""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[int(worker.removeprefix("gw")) % len(cpus)]})
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first, the quality gate's first of all: the longest ones start at once,
    and the short ones fill the other workers around them."""
    items.sort(
        key=lambda item: (item.get_closest_marker("slow") is None, "quality" not in item.nodeid)
    )


def write_tsv(path: Path, pairs: list[tuple[str, str]], header: str = "id\tes\ten") -> Path:
    rows = [header] + [f"{i}\t{s}\t{t}" for i, (s, t) in enumerate(pairs)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def reversal_pairs(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """A toy task: random sequences of 3 to 10 symbols, and the same reversed."""
    symbols = [chr(97 + i) for i in range(20)]
    out = []
    for _ in range(n):
        seq = [rng.choice(symbols) for _ in range(rng.randint(3, 10))]
        out.append((" ".join(seq), " ".join(reversed(seq))))
    return out


SPAN_GROUPS = [["%s"], ["{0}", "%d"], ["<b>", "</b>"], ["${HOME}"], ["%1$s", "%2$s"], ["a@b.org"]]


def with_spans(
    pairs: list[tuple[str, str]], every: int = 3, seed: int = 0
) -> list[tuple[str, str]]:
    """Software-like pairs: every `every`-th pair gets one group of protected spans, the same
    on both sides, each side at its own random word positions (in order: tags stay nested)."""
    rng = random.Random(seed)

    def insert(text: str, spans: list[str]) -> str:
        words = text.split(" ")
        slots = sorted(rng.sample(range(len(words) + 1), min(len(spans), len(words) + 1)))
        for offset, (slot, span) in enumerate(zip(slots, spans)):
            words.insert(slot + offset, span)
        return " ".join(words)

    out = []
    for i, (src, tgt) in enumerate(pairs):
        if i % every == 0:
            spans = rng.choice(SPAN_GROUPS)
            src, tgt = insert(src, spans), insert(tgt, spans)
        out.append((src, tgt))
    return out


# A small, fast training setup for tests on the toy task (toy_dir).
SMALL = [
    "train.precision=fp32",  # the fp32 paths are exact; bf16 is tested in test_attention_gru
    "model.emb_size=32",
    "model.hidden_size=48",
    "train.batch_tokens=800",
    "train.valid_every=1000",
    "train.log_every=2",
    "decode.max_len_a=1",
    "decode.max_len_b=3",
]


def data_config(**overrides) -> DataConfig:
    """A DataConfig over the shipped sample with a small vocabulary (fast to train)."""
    base = dict(
        src="es",
        tgt="en",
        train=str(SAMPLE / "train.tsv"),
        dev=str(SAMPLE / "dev.tsv"),
        test=str(SAMPLE / "test.tsv"),
        vocab_size=1000,
    )
    return DataConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "data"
    preprocess(data_config(), out, progress=False)
    return out


@pytest.fixture
def toy_pairs() -> list[tuple[str, str]]:
    """Twenty short real pairs from the sample: enough for a tiny vocabulary."""
    lines = (SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()[1:21]
    return [tuple(line.split("\t")[1:]) for line in lines]  # type: ignore[misc]


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reverse random symbol sequences: a task an attention model must solve exactly."""
    rng = random.Random(0)

    root = tmp_path_factory.mktemp("toy")
    cfg = data_config(
        train=str(write_tsv(root / "train.tsv", reversal_pairs(6000, rng))),
        dev=str(write_tsv(root / "dev.tsv", reversal_pairs(200, rng))),
        test="",
        vocab_size=45,
    )
    preprocess(cfg, root / "data", progress=False)
    return root / "data"


def away_from_init(module: torch.nn.Module) -> None:
    """Layer-norm gains (initialised to 1) to U(0.5, 1.5), and biases (0) to U(-0.5, 0.5): a
    test of the GRU options then sees each of them, as a missing gain or bias would show."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.rpartition(".")[2].startswith("ln_"):
                param.uniform_(0.5, 1.5)
            elif "bias" in name:
                param.uniform_(-0.5, 0.5)
