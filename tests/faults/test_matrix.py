"""Faults injected systematically: every command that writes × {read-only output, full disk,
SIGKILL at several points, a concurrent second process}, and every kind of input × {truncated,
bit-flipped}. Each run must end in exit 0 with correct output, or exit 2 with one `error:` line
naming the file; every earlier output stays intact and loadable, and nothing temporary is left.

`evaluate` and `config` write nothing, so they meet only the input faults. Runs are in this
process (the same error boundary as the console script) except where a fault needs a process
of its own: SIGKILL, concurrency, and the RLIMIT_FSIZE stand-in for a full disk.
"""

from __future__ import annotations

import gzip
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from nmt.cli import app
from nmt.config import Config, apply_overrides
from nmt.data.store import open_split, read_manifest
from nmt.fileio import read_json_lines
from nmt.model.checkpoint import load_checkpoint, save_checkpoint
from nmt.train import train
from tests.conftest import write_tsv
from tests.faults.conftest import (
    TINY,
    assert_clean_error,
    leftovers,
    nmt,
    preprocess_args,
    snapshot,
    start,
    train_args,
)

runner = CliRunner()
SOURCE = (
    "En el principio creó Dios los cielos y la tierra.\nY la tierra %s estaba <b>desordenada</b>.\n"
) * 3
GLOSSARY = "tierra\tearth\ncielos\theavens\n"


def invoke(args: list[object], preexec: Callable[[], None] | None = None) -> SimpleNamespace:
    """Run the CLI in this process, or in a child under `preexec` (e.g. an rlimit)."""
    if preexec is not None:
        proc = nmt(*args, preexec_fn=preexec)
        return SimpleNamespace(returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


@dataclass
class Job:
    """A command that writes `output` (a path it is given), and how to tell it is right."""

    args: Callable[[Path], list[object]]
    output: str
    check: Callable[[Path], None]
    earlier: bytes | None = None  # an earlier version of a file output, which must survive


def _lines(n: int) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        assert path.read_text(encoding="utf-8").count("\n") == n

    return check


def _scores(n: int) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        scores = [float(x) for x in path.read_text(encoding="utf-8").splitlines()]
        assert len(scores) == n and all(x <= 0 for x in scores)

    return check


def _store_ok(path: Path) -> None:
    open_split(path, "train", read_manifest(path))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "in.es"
    path.write_text(SOURCE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def glossary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("glossary") / "terms.tsv"
    path.write_text(GLOSSARY, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def jobs(corpus, store, run, source, glossary, tmp_path_factory) -> dict[str, Job]:
    scratch = tmp_path_factory.mktemp("scratch")
    best, n = run / "best.pt", SOURCE.count("\n")
    return {
        "preprocess": Job(lambda out: preprocess_args(corpus, out), "data", _store_ok),
        "train": Job(
            lambda out: train_args(store, out, "--set", "train.max_steps=2"),
            "run",
            lambda p: load_checkpoint(p / "last.pt"),
        ),
        "translate": Job(
            lambda out: ["translate", best, "-i", source, "-o", out], "out.en", _lines(n), b"old\n"
        ),
        "translate --glossary --markup xml": Job(
            lambda out: [
                "translate",
                best,
                "-i",
                source,
                "-o",
                out,
                "--glossary",
                glossary,
                "--markup",
                "xml",
                "--format",
                "jsonl",
            ],  # fmt: skip
            "out.jsonl",
            _lines(n),
            b"old\n",
        ),
        "translate --plot-attention": Job(
            lambda out: (
                ["translate", best, "-i", source, "-o", scratch / "x.en"]
                + ["--plot-attention", out, "--plot-lines", 1]
                + ["--long-lines", "truncate"]  # a line translated in parts has no attention
            ),
            "plots",
            lambda p: (p / "line-1.png").stat(),
        ),
        "score": Job(
            lambda out: ["score", best, "-s", source, "-t", source, "-o", out],
            "out.txt",
            _scores(n),
            b"old\n",
        ),  # fmt: skip
        "average": Job(
            lambda out: ["average", run / "step-2.pt", run / "step-4.pt", "-o", out],
            "avg.pt",
            load_checkpoint,
            b"old",
        ),
        "shortlist": Job(
            lambda out: ["shortlist", run / "step-2.pt", "--data", store, "-o", out],
            "sl.pt",
            lambda p: load_checkpoint(p)["vocab"]["shortlist"],
            b"old",
        ),
        "bench batching": Job(
            lambda out: (
                ["bench", "batching", "--data", store, "--out", out]
                + ["--caps", 500, "--pools", 100]
            ),
            "bench",
            lambda p: (p / "batching.json").stat(),
        ),
    }


COMMANDS = [
    "preprocess",
    "train",
    "translate",
    "translate --glossary --markup xml",
    "translate --plot-attention",
    "score",
    "average",
    "shortlist",
    "bench batching",
]


def _earlier(job: Job) -> dict[str, bytes]:
    files = {"keep.txt": b"an earlier output"}
    if job.earlier is not None:
        files[job.output] = job.earlier
    return files


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_output(command, jobs, read_only):
    job = jobs[command]
    directory = read_only(_earlier(job))
    before = snapshot(directory)
    outcome = invoke(job.args(directory / job.output))
    assert_clean_error(outcome, directory / job.output)
    assert snapshot(directory) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_full_disk(command, jobs, full_disk):
    job = jobs[command]
    disk = full_disk(_earlier(job))
    before = snapshot(disk.path)
    outcome = invoke(job.args(disk.path / job.output), disk.preexec)
    message = assert_clean_error(outcome, disk.path / job.output, disk.path)
    assert "No space left" in message or "File too large" in message
    assert snapshot(disk.path) == before
    assert not leftovers(disk.path)
    (disk.path / ".filler").unlink(missing_ok=True)  # room again: the same command succeeds
    if disk.preexec is None:
        assert invoke(job.args(disk.path / job.output)).returncode == 0
        job.check(disk.path / job.output)


def _kill_when(proc, ready: Callable[[], bool], delay: float) -> None:
    """SIGKILL `proc` `delay` seconds after `ready()` first holds (or when it ends)."""
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.7, 2.0])
def test_sigkill_preprocess(delay, corpus, tmp_path):
    """Killed while replacing a corpus (--overwrite): the old corpus or the complete new one,
    never a mix; the next run (on the small corpus again) cleans up what the kill left and
    succeeds."""
    out = tmp_path / "data"
    assert nmt(*preprocess_args(corpus, out)).returncode == 0
    old = snapshot(out)
    big = [(f"hola mundo {i}", f"hello world {i}") for i in range(60_000)]
    args = preprocess_args({**corpus, "train": write_tsv(tmp_path / "big.tsv", big)}, out)
    proc = start(*args, "--overwrite")
    _kill_when(proc, lambda: any(p.name.startswith(".tmp-") for p in out.iterdir()), delay)
    now = {k: v for k, v in snapshot(out).items() if ".tmp-" not in k and ".nmt.lock" not in k}
    if now != old:  # it got to the end: the new corpus is whole
        _store_ok(out)
    assert nmt(*preprocess_args(corpus, out), "--overwrite").returncode == 0  # small: quick
    _store_ok(out)
    assert not leftovers(out)


@pytest.mark.slow
def test_sigkill_train_then_resume_equals_an_unbroken_run(store, tmp_path):
    """Killed at several points of a run that saves last.pt at every update: each time
    last.pt and metrics.jsonl are readable, and the resumed run ends with exactly the weights
    of a run that never stopped."""
    steps = ["train.max_steps=24", "train.valid_every=1", "train.keep_last=1"]
    unbroken = tmp_path / "unbroken"
    cfg = apply_overrides(Config(), [*TINY, *steps])
    train(cfg, store, unbroken, progress_bar=False, log=lambda _: None)
    out = tmp_path / "run"
    sets = [a for s in steps for a in ("--set", s)]
    for delay in (0.3, 1.5):
        resume = ["--resume"] if (out / "last.pt").exists() else []
        proc = start(*train_args(store, out, *sets, *resume))
        _kill_when(proc, lambda: (out / "last.pt").exists(), delay)
        assert proc.returncode in (0, -signal.SIGKILL)
        load_checkpoint(out / "last.pt")
        read_json_lines(out / "metrics.jsonl", warn=lambda _: None)
    proc = nmt(*train_args(store, out, *sets, "--resume"))
    assert proc.returncode == 0, proc.stderr
    a, b = load_checkpoint(unbroken / "last.pt"), load_checkpoint(out / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert not leftovers(out)


@pytest.mark.slow
@pytest.mark.parametrize("command, delay", [("translate", 0.0), ("translate", 0.5), ("score", 0.0)])
def test_sigkill_translate_and_score(command, delay, run, tmp_path):
    src, out = tmp_path / "in.es", tmp_path / "out.en"
    src.write_text(SOURCE * 100, encoding="utf-8")
    out.write_text("old\n")
    args = ["-i", src] if command == "translate" else ["-s", src, "-t", src]
    proc = start(command, run / "best.pt", *args, "-o", out, "--batch-tokens", 200)
    _kill_when(proc, lambda: any(".out.en.tmp-" in p.name for p in tmp_path.iterdir()), delay)
    if proc.returncode == -signal.SIGKILL:
        assert out.read_text() == "old\n"
    assert nmt(command, run / "best.pt", *args, "-o", out).returncode == 0
    check = _lines if command == "translate" else _scores
    check(SOURCE.count("\n") * 100)(out)
    assert not leftovers(tmp_path)


@pytest.mark.slow
def test_sigkill_while_compiling_then_compile_again(run, tmp_path):
    """`translate --compile` killed while inductor compiles the step into an empty cache: the
    earlier output stays, and the next --compile run compiles and translates every line."""
    src, out, cache = tmp_path / "in.es", tmp_path / "out.en", tmp_path / "inductor"
    src.write_text(SOURCE * 10, encoding="utf-8")
    out.write_text("old\n")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    args = ["translate", run / "best.pt", "-i", src, "-o", out, "--compile"]
    proc = start(*args, env=env)
    _kill_when(proc, lambda: cache.exists() and any(cache.rglob("*.py")), 0.5)
    assert proc.returncode == -signal.SIGKILL and out.read_text() == "old\n"
    again = nmt(*args, env=env)
    assert again.returncode == 0 and "could not compile" not in again.stderr, again.stderr
    _lines(SOURCE.count("\n") * 10)(out)
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("command", ["translate", "score", "average", "shortlist"])
def test_concurrent_writers_of_one_file(command, jobs, tmp_path):
    """Two processes write the same file at once: both finish, and the file is whole (the
    directory-writing commands refuse a second writer: test_user_faults.py,
    test_a_second_writer_is_refused)."""
    job = jobs[command]
    out = tmp_path / job.output
    procs = [start(*job.args(out)) for _ in range(2)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    job.check(out)
    assert not leftovers(tmp_path)


# --- truncated and bit-flipped inputs -----------------------------------------------------


def _damaged(data: bytes, rng: random.Random) -> list[bytes]:
    """Cut short at three points, and five copies with 1-8 bytes flipped."""
    cuts = [data[:0], data[: len(data) // 2], data[:-1]]
    flips = []
    for _ in range(5):
        copy = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            copy[rng.randrange(len(copy))] ^= 1 << rng.randrange(8)
        flips.append(bytes(copy))
    return cuts + flips


def _copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_damaged_checkpoints(run, store, source, tmp_path):
    """translate: a clean error naming the checkpoint, or exactly the intact output; shortlist:
    a clean error naming it, or a checkpoint that translates exactly as the intact one."""
    good = invoke(["translate", run / "best.pt", "-i", source])
    assert good.returncode == 0
    rng = random.Random(12)
    for i, data in enumerate(_damaged((run / "best.pt").read_bytes(), rng)):
        path = tmp_path / f"damaged-{i}.pt"
        path.write_bytes(data)
        outcome = invoke(["translate", path, "-i", source])
        if outcome.returncode != 0:
            assert_clean_error(outcome, path)
        else:
            assert outcome.stdout == good.stdout, i
        out = tmp_path / f"added-{i}.pt"
        added = invoke(["shortlist", path, "--data", store, "-o", out])
        if added.returncode != 0:
            assert_clean_error(added, path)
            assert not out.exists()
        else:
            assert invoke(["translate", out, "-i", source]).stdout == good.stdout, i


def test_a_damaged_shortlist_in_an_intact_checkpoint(run, source, tmp_path):
    """A shortlist whose pieces are out of range (the file's checksum made to match): a clean
    error naming the checkpoint, before any line is translated."""
    checkpoint = load_checkpoint(run / "best.pt")
    checkpoint["vocab"]["shortlist"]["table"][0, 0] = 10**6
    del checkpoint["sha256"]
    save_checkpoint(tmp_path / "bad.pt", checkpoint)
    assert_clean_error(invoke(["translate", tmp_path / "bad.pt", "-i", source]), "bad.pt")


def test_damaged_last_pt_on_resume(store, tmp_path):
    run = tmp_path / "run"
    assert invoke(train_args(store, run, "--set", "train.max_steps=2")).returncode == 0
    data = (run / "last.pt").read_bytes()
    for i, damaged in enumerate(_damaged(data, random.Random(3))[1:5]):
        (run / "last.pt").write_bytes(damaged)
        outcome = invoke([*train_args(store, run, "--set", "train.max_steps=3"), "--resume"])
        assert_clean_error(outcome, run / "last.pt")
        assert (run / "last.pt").read_bytes() == damaged, i  # left as it was found


STORE_FILES = ["manifest.json", "spm.model", "train.es.bin", "train.en.idx", "dev.en.txt"]
SAMPLING = ("--set", "data.sampling_alpha=0.5")  # reads the training text (train.LANG.txt)


@pytest.mark.parametrize(
    "name, sets", [*((name, ()) for name in STORE_FILES), ("train.en.txt", SAMPLING)]
)
def test_damaged_store(name, sets, store, tmp_path):
    """train: a clean error naming the file (sizes and checksums in the manifest), or a run
    that is right because the damage changed nothing the store means."""
    rng = random.Random(name)
    for i, data in enumerate(_damaged((store / name).read_bytes(), rng)[1:6]):
        damaged = _copy_dir(store, tmp_path / f"data-{i}")
        (damaged / name).write_bytes(data)
        args = train_args(damaged, tmp_path / f"run-{i}", "--set", "train.max_steps=1", *sets)
        outcome = invoke(args)
        if outcome.returncode != 0:
            assert_clean_error(outcome, damaged / name, damaged)
        else:
            load_checkpoint(tmp_path / f"run-{i}" / "last.pt")


@pytest.mark.parametrize("gz", [False, True])
def test_damaged_corpus(gz, corpus, tmp_path):
    """preprocess: a clean error naming the corpus, or a complete, loadable store."""
    data = corpus["train"].read_bytes()
    data = gzip.compress(data, mtime=0) if gz else data
    for i, damaged in enumerate(_damaged(data, random.Random(int(gz)))):
        path = tmp_path / f"train-{i}.tsv{'.gz' if gz else ''}"
        path.write_bytes(damaged)
        out = tmp_path / f"data-{i}"
        outcome = invoke(preprocess_args({**corpus, "train": path}, out))
        if outcome.returncode != 0:
            assert_clean_error(outcome, path, "data.vocab_size")
            assert not out.exists()
        else:
            _store_ok(out)


def test_damaged_text_inputs(run, source, glossary, tmp_path):
    """translate: one output line per input line, or a clean error naming the input line (or
    the glossary file); score (the damaged file as the target): a score per line, or a clean
    error naming it; evaluate: scores, or a clean error naming the file; config: a config,
    or an error naming the file."""
    rng = random.Random(5)
    config = Path("configs/sample.yaml").read_bytes()
    for i, data in enumerate(_damaged(source.read_bytes(), rng)):
        path = tmp_path / f"in-{i}.es"
        path.write_bytes(data)
        lines = data.count(b"\n") + (not data.endswith(b"\n") and bool(data))
        outcome = invoke(["translate", run / "best.pt", "-i", path])
        if outcome.returncode != 0:
            assert_clean_error(outcome, path)
        else:
            assert outcome.stdout.count("\n") == lines
        scored = invoke(["score", run / "best.pt", "-s", source, "-t", path])  # as the target
        if scored.returncode != 0:
            assert_clean_error(scored, path)
        else:
            assert len([float(x) for x in scored.stdout.splitlines()]) == lines
            assert lines == SOURCE.count("\n")
        evaluated = invoke(["evaluate", path, source])
        if evaluated.returncode != 0:
            assert_clean_error(evaluated, path)
    for i, data in enumerate(_damaged(glossary.read_bytes(), rng)):
        path = tmp_path / f"glossary-{i}.tsv"
        path.write_bytes(data)
        outcome = invoke(["translate", run / "best.pt", "-i", source, "--glossary", path])
        if outcome.returncode != 0:
            assert_clean_error(outcome, path)
        else:
            assert outcome.stdout.count("\n") == SOURCE.count("\n")
    for i, data in enumerate(_damaged(config, rng)):
        path = tmp_path / f"config-{i}.yaml"
        path.write_bytes(data)
        outcome = invoke(["config", path])
        if outcome.returncode != 0:
            assert_clean_error(outcome, path)
