"""The fault suite's tools: the CLI run as a user runs it, a small trained run, and the checks
every fault must pass (a clean `error:` and exit 2, or correct output; earlier outputs intact).

Faults of the machine are made for real where this machine allows: a read-only filesystem and a
full one are tmpfs mounts (root in a VM or container with CAP_SYS_ADMIN, as here and in CI);
elsewhere a full disk is simulated with RLIMIT_FSIZE (writes fail with EFBIG) and a read-only
directory with its permissions (for a user other than root).
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nmt.config import Config, apply_overrides
from nmt.train import train
from tests.conftest import SAMPLE, with_spans, write_tsv

NMT = [sys.executable, "-m", "nmt"]
TINY = [
    "train.precision=fp32",
    "model.emb_size=16",
    "model.hidden_size=16",
    "train.batch_tokens=400",
    "train.max_steps=4",
    "train.valid_every=2",
    "train.keep_last=2",
    "decode.max_len_a=0.5",
    "decode.max_len_b=3",
    "decode.max_input_len=12",
]


def nmt(*args: object, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `nmt ARGS` in a fresh process, as a user would; text output captured."""
    return subprocess.run(
        [*NMT, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def start(*args: object, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [*NMT, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *names: object) -> str:
    """Exit 2, no traceback, exactly one `error:` line, and it names one of `names`."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Aborted" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert any(str(n) in errors[0] for n in names), (errors[0], names)
    return errors[0]


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under `roots` (hidden ones too) and its bytes."""
    files = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        files.update({str(p): p.read_bytes() for p in paths})
    return files


def leftovers(*roots: Path) -> list[str]:
    """Temporary files and lock files that a finished command should not leave."""
    return [
        str(p)
        for root in roots
        for p in root.rglob("*")
        if ".tmp-" in p.name or p.name == ".nmt.lock"
    ]


@dataclass
class Mount:
    """A directory on its own filesystem (`read_only` or nearly `full`), or None-like."""

    path: Path
    preexec: Callable[[], None] | None = None  # the rlimit fallback of a full disk


def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return result.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[dict[str, bytes]], Path]]:
    """A factory: a read-only directory holding the given files (name → bytes)."""
    mounted: list[Path] = []

    def make(files: dict[str, bytes]) -> Path:
        path = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
        if os.geteuid() != 0:
            path.mkdir()
            _fill(path, files)
            path.chmod(0o555)
            return path
        if not _mount(path, "size=4m"):
            pytest.skip("root, but cannot mount a tmpfs here: no read-only filesystem to test")
        _fill(path, files)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        _umount(path)


def _fill(path: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Callable[[dict[str, bytes]], Mount]]:
    """A factory: a directory holding the given files on a filesystem with no room left (a
    tmpfs filled to the last byte), or, where none can be mounted, a directory whose writers
    run under RLIMIT_FSIZE (pass `preexec_fn=mount.preexec`)."""
    mounted: list[Path] = []

    def make(files: dict[str, bytes]) -> Mount:
        path = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
        if not _mount(path, "size=2m"):
            path.mkdir(exist_ok=True)
            _fill(path, files)
            return Mount(path, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)))
        mounted.append(path)
        _fill(path, files)
        with contextlib.suppress(OSError), open(path / ".filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        return Mount(path)

    yield make
    for path in mounted:
        _umount(path)


# --- a small corpus, its store, and a trained run (shared by the whole suite) ----------------


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train/dev/test TSV files of the shipped sample, cut small (preprocessing in a second),
    a third of the pairs with protected spans (placeholders, tags): the suite's store and run
    are preprocessed with --protect all, so every fault meets the masking and the constraints."""
    root = tmp_path_factory.mktemp("corpus")
    rows = (SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    pairs = with_spans([tuple(r.split("\t")[1:]) for r in rows[:660]])  # type: ignore[misc]
    return {
        "train": write_tsv(root / "train.tsv", pairs[:600]),
        "dev": write_tsv(root / "dev.tsv", pairs[600:640]),
        "test": write_tsv(root / "test.tsv", pairs[640:660]),
    }


def preprocess_args(corpus: dict[str, Path], out: Path, *extra: object) -> list[object]:
    return [
        "preprocess", "--src", "es", "--tgt", "en", "--train", corpus["train"],
        "--dev", corpus["dev"], "--test", corpus["test"], "--vocab-size", 200,
        "--protect", "all", "--out", out, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def store(corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "data"
    proc = nmt(*preprocess_args(corpus, out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def run(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run: best.pt, last.pt, step-2.pt and step-4.pt."""
    out = tmp_path_factory.mktemp("run") / "run"
    train(apply_overrides(Config(), TINY), store, out, progress_bar=False, log=lambda _: None)
    return out


def train_args(store: Path, out: Path, *extra: object) -> list[object]:
    sets = [a for s in TINY for a in ("--set", s)]
    return ["train", "--data", store, "--out", out, *sets, *extra]
