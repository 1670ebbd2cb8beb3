"""Faults a user meets one at a time, each ending in the right output or a clear error: a
second writer, pipes, devices and symlinks as files, a NaN gradient, a flipped checkpoint, cut
references, stale temporaries, shapes too large to build, tracebacks turned into errors. Each
test reproduces a case found by hand (issue 12) and failed on the code before its fix."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time
import zipfile

import pytest
import torch
from typer.testing import CliRunner

from nmt.cli import app
from nmt.config import Config, apply_overrides
from nmt.data.corpus import TsvCorpus
from nmt.errors import NmtError
from nmt.evaluate import corpus_metrics
from nmt.fileio import json_line
from nmt.model.checkpoint import average_checkpoints, load_checkpoint, save_checkpoint
from nmt.train import MAX_SKIPPED, train
from nmt.train import update as train_module
from tests.faults.conftest import (
    NMT,
    TINY,
    assert_clean_error,
    nmt,
    preprocess_args,
    snapshot,
    start,
    train_args,
)

runner = CliRunner()


def _quiet(_: str) -> None:
    pass


def _train(store, out, *overrides, **kwargs):
    cfg = apply_overrides(Config(), [*TINY, *overrides])
    return train(cfg, store, out, progress_bar=False, log=_quiet, **kwargs)


def _cli(*args: object):
    """The CLI in this process (the same error boundary as the console script)."""
    return runner.invoke(app, [str(a) for a in args])


def _assert_cli_error(result, *names: object) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert any(f"error: {n}" in result.output or str(n) in result.output for n in names), (
        result.output
    )


def test_no_pair_fits_max_len_is_an_error_not_a_hang(store, tmp_path):
    proc = nmt(*train_args(store, tmp_path / "r", "--set", "train.max_len=1"), timeout=120)
    assert "no training pair fits train.max_len=1" in assert_clean_error(proc, "train.max_len")


def test_vocabulary_identity_is_content(corpus, tmp_path):
    """Two preprocess runs of one corpus give the same SentencePiece model byte for byte,
    so a run trained on one resumes on the other; a second run into the same --out is
    refused (tests/test_preprocess.py checks that with a different corpus too)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert nmt(*preprocess_args(corpus, out)).returncode == 0
    assert (a / "spm.model").read_bytes() == (b / "spm.model").read_bytes()
    assert str(tmp_path).encode() not in (a / "spm.model").read_bytes()  # no staging path
    _train(a, tmp_path / "r", "train.max_steps=2")
    trainer, _ = _train(b, tmp_path / "r", resume=True, overrides=["train.max_steps=3"])
    assert trainer.progress.step == 3
    before = snapshot(a)
    again = nmt(*preprocess_args(corpus, a))
    assert "already holds a preprocessed corpus" in assert_clean_error(again, a)
    assert snapshot(a) == before


def test_metrics_with_line_separators_blank_and_torn_lines(store, tmp_path):
    run = tmp_path / "r"
    _train(store, run, "train.max_steps=2")
    metrics = run / "metrics.jsonl"
    raw = json.dumps({"event": "x", "step": 1, "hyp": "a\u2028b"}, ensure_ascii=False)
    metrics.write_text(metrics.read_text() + raw + "\n\n" + '{"event": "tr', encoding="utf-8")
    warnings = []
    cfg = Config()
    trainer, _ = train(
        cfg, store, run, resume=True, overrides=["train.max_steps=4"], log=warnings.append
    )
    assert trainer.progress.step == 4
    assert any("unreadable record dropped" in w for w in warnings)
    text = metrics.read_text(encoding="utf-8")
    assert text.splitlines() == text.split("\n")[:-1]  # no splitter finds another line
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["hyp"] for r in records if r["event"] == "x"] == ["a\u2028b"]
    assert json_line({"s": "\u2028\u2029\x85", "x": float("nan")}).count("\n") == 0
    assert json.loads(json_line({"x": float("inf")})) == {"x": None}


@pytest.mark.parametrize("command", ["train", "preprocess"])
def test_a_second_writer_is_refused(command, store, corpus, tmp_path):
    """The second starts while the first holds the directory (stopped there with SIGSTOP,
    as a stalled writer would be), even with --overwrite: it is refused, and the first, let
    go on, finishes undisturbed."""
    out = tmp_path / "out"
    args = train_args(store, out) if command == "train" else preprocess_args(corpus, out)
    first = start(*args)
    deadline = time.monotonic() + 60

    def holds_lock() -> bool:
        locks = [p for p in tmp_path.rglob(".nmt.lock") if p.is_file()]
        return any(p.read_text(errors="replace").strip() == str(first.pid) for p in locks)

    while not holds_lock():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)
    try:
        second = nmt(*args, "--overwrite")
    finally:
        first.send_signal(signal.SIGCONT)
    assert "another nmt process (pid" in assert_clean_error(second, out)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert not (out / ".nmt.lock").exists()


def test_rotation_ignores_files_it_did_not_write(store, tmp_path):
    run = tmp_path / "r"
    _train(store, run, "train.max_steps=4")
    average_checkpoints([run / "step-2.pt", run / "step-4.pt"], run / "step-avg.pt")
    avg = (run / "step-avg.pt").read_bytes()
    trainer, _ = _train(store, run, resume=True, overrides=["train.max_steps=8"])
    assert trainer.progress.step == 8
    assert load_checkpoint(run / "last.pt")["train"]["progress"]["step"] == 8
    assert sorted(p.name for p in run.glob("step-*.pt")) == [
        "step-6.pt",
        "step-8.pt",
        "step-avg.pt",
    ]
    assert (run / "step-avg.pt").read_bytes() == avg


def test_preprocess_into_the_current_directory(corpus, tmp_path):
    here = tmp_path / "empty"
    here.mkdir()
    proc = nmt(*preprocess_args(corpus, "."), cwd=here)
    assert proc.returncode == 0, proc.stderr
    assert (here / "manifest.json").is_file()
    assert not [p.name for p in here.iterdir() if p.name.startswith(".")]


def test_overwrite_deletes_only_the_runs_files(store, tmp_path):
    run = tmp_path / "r"
    _train(store, run, "train.max_steps=2")
    (run / "my-final-model.pt").write_bytes(b"mine")
    (run / "notes.txt").write_text("mine")
    _train(store, run, "train.max_steps=1", overwrite=True)
    assert (run / "my-final-model.pt").read_bytes() == b"mine"
    assert (run / "notes.txt").read_text() == "mine"
    assert load_checkpoint(run / "last.pt")["train"]["progress"]["step"] == 1


def test_pipes_and_devices_as_input_and_output(run, tmp_path):
    src = tmp_path / "in.es"
    src.write_text("hola\nmundo\n")
    best = run / "best.pt"
    script = (
        f"{' '.join(NMT)} translate {best} -i {src} -o /dev/stdout | cat > {tmp_path}/a.txt && "
        f"{' '.join(NMT)} translate {best} -i <(cat {src}) -o >(cat > {tmp_path}/b.txt) && "
        f"sleep 0.5 && {' '.join(NMT)} evaluate <(cat {tmp_path}/a.txt) <(cat {tmp_path}/a.txt)"
    )
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    a, b = (tmp_path / "a.txt").read_text(), (tmp_path / "b.txt").read_text()
    assert a == b and a.count("\n") == 2
    assert "chrF2 = 100.00" in proc.stdout  # (BLEU needs 4-grams: these lines are short)


def test_output_through_a_symlink_keeps_the_link(corpus, tmp_path):
    target, link = tmp_path / "real", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    assert nmt(*preprocess_args(corpus, link)).returncode == 0
    assert link.is_symlink() and (target / "manifest.json").is_file()


def test_nan_is_refused_and_a_non_finite_gradient_never_reaches_a_checkpoint(
    store, run, tmp_path, monkeypatch
):
    _assert_cli_error(
        _cli(*train_args(store, tmp_path / "x", "--set", "train.label_smoothing=nan")),
        "finite number",
    )
    ref = run / "dev.hyp.txt"
    _assert_cli_error(_cli("evaluate", ref, ref, "--min-bleu", "nan"), "--min-bleu")
    for alpha in ("nan", "-5", "inf"):
        result = _cli("translate", run / "best.pt", "--alpha", alpha, "-i", run / "dev.hyp.txt")
        _assert_cli_error(result, "--alpha")
    original = train_module._Loss.forward
    calls = {"n": 0}

    def poisoned(self, *batch):  # the 2nd update, then every update from the 5th on
        loss, nll = original(self, *batch)
        calls["n"] += 1
        return (loss * float("nan"), nll) if calls["n"] == 2 or calls["n"] >= 5 else (loss, nll)

    monkeypatch.setattr(train_module._Loss, "forward", poisoned)
    out, log = tmp_path / "r", []
    cfg = apply_overrides(Config(), [*TINY, "train.max_steps=100"])
    with pytest.raises(NmtError, match=f"diverged: {MAX_SKIPPED} batches in a row") as err:
        train(cfg, store, out, progress_bar=False, log=log.append)
    assert "then --resume" in str(err.value)
    assert sum("the gradient is not finite" in m for m in log) == 1 + MAX_SKIPPED
    assert f"({MAX_SKIPPED} in a row)" in log[-1]
    last = load_checkpoint(out / "last.pt")  # saved at the validation of step 2 (3 calls)
    assert last["train"]["progress"]["step"] == 2
    assert all(torch.isfinite(w).all() for w in last["model"].values())
    assert "NaN" not in (out / "metrics.jsonl").read_text()
    # diverged before any checkpoint: both messages lead to --overwrite, which works
    fresh = tmp_path / "fresh"
    with pytest.raises(NmtError, match="no checkpoint was saved yet") as err:
        train(cfg, store, fresh, progress_bar=False, log=log.append)
    assert "start again with --overwrite" in str(err.value)
    with pytest.raises(NmtError, match=r"with --overwrite \(instead of --resume\)"):
        train(cfg, store, fresh, resume=True, progress_bar=False, log=log.append)
    monkeypatch.setattr(train_module._Loss, "forward", original)
    cfg = apply_overrides(cfg, ["train.max_steps=1"])
    train(cfg, store, fresh, overwrite=True, progress_bar=False, log=log.append)
    assert load_checkpoint(fresh / "last.pt")["train"]["progress"]["step"] == 1


def test_flipped_checkpoint_and_cut_references_are_errors(store, run, tmp_path):
    data = bytearray((run / "best.pt").read_bytes())
    start, end = _largest_member(run / "best.pt")  # a tensor's bytes: torch checks no CRC
    for i in range(start, end, max(1, (end - start) // 50)):
        data[i] ^= 0x10
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(NmtError, match="checksum mismatch"):
        load_checkpoint(tmp_path / "flipped.pt")
    cut = tmp_path / "data"
    cut.mkdir()
    for p in store.iterdir():
        (cut / p.name).write_bytes(p.read_bytes())
    ref = cut / "dev.en.txt"
    ref.write_text("".join(ref.read_text().splitlines(keepends=True)[:10]))
    with pytest.raises(NmtError, match="dev.en.txt: holds .* bytes, the manifest says"):
        _train(cut, tmp_path / "r")
    with pytest.raises(NmtError, match="3 hypotheses but 2 references"):
        corpus_metrics(["a", "b", "c"], [["a", "b"]])


def _largest_member(path) -> tuple[int, int]:
    """The byte range of the largest member's data in a zip file (a checkpoint)."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    header = path.read_bytes()[info.header_offset : info.header_offset + 30]
    start = info.header_offset + 30 + int.from_bytes(header[26:28], "little")
    start += int.from_bytes(header[28:30], "little")
    return start, start + info.compress_size


def _corrupt_checkpoint(run, tmp_path, name, edit) -> str:
    checkpoint = load_checkpoint(run / "best.pt")
    edit(checkpoint)
    checkpoint.pop("sha256", None)
    torch.save(checkpoint, tmp_path / name)  # as a buggy or foreign writer would
    return str(tmp_path / name)


def test_tracebacks_become_errors(store, run, corpus, tmp_path):
    def spm(c):
        c["vocab"]["tokenizers"]["es"]["proto"] = b"\x0a\x05junk!" * 40

    def shape(c):
        c["model"]["decoder.output.bias"] = torch.zeros(3)

    cases = {
        "spm.pt": spm,
        "novocab.pt": lambda c: c.pop("vocab"),
        "nomodel.pt": lambda c: c.pop("model"),
        "shape.pt": shape,
    }
    for name, edit in cases.items():
        path = _corrupt_checkpoint(run, tmp_path, name, edit)
        _assert_cli_error(_cli("translate", path, "-i", run / "dev.hyp.txt"), path)
    # a weights-only last.pt and --resume
    r = tmp_path / "r"
    _train(store, r, "train.max_steps=2")
    average_checkpoints([r / "last.pt", r / "step-2.pt"], r / "last.pt")
    _assert_cli_error(_cli(*train_args(store, r, "--resume")), "holds weights only")
    # truncated store files
    for name in ("train.es.bin", "train.en.idx", "spm.model", "manifest.json"):
        cut = tmp_path / f"cut-{name}"
        cut.mkdir()
        for p in store.iterdir():
            (cut / p.name).write_bytes(p.read_bytes())
        (cut / name).write_bytes((cut / name).read_bytes()[:-3])
        _assert_cli_error(_cli(*train_args(cut, tmp_path / f"r-{name}")), cut / name)
    # a language code with `/` (a column of that name), a .gz that is not gzip, a truncated
    # .tsv.gz, an empty dev
    slash = tmp_path / "slash.tsv"
    slash.write_text(corpus["train"].read_text().replace("id\tes\ten", "id\te/s\ten", 1))
    slashed = {"train": slash, "dev": slash, "test": slash}
    _assert_cli_error(_cli(*preprocess_args(slashed, tmp_path / "o1"), "--src", "e/s"), "--src")
    fake = tmp_path / "fake.tsv.gz"
    fake.write_bytes(corpus["train"].read_bytes())
    cut_gz = tmp_path / "cut.tsv.gz"
    cut_gz.write_bytes(gzip.compress(corpus["train"].read_bytes())[:-200])
    empty_dev = tmp_path / "dev.tsv"
    empty_dev.write_text("id\tes\ten\n")
    for bad in (fake, cut_gz):
        _assert_cli_error(_cli(*preprocess_args(corpus, tmp_path / "o2"), "--train", bad), bad)
    dev = _cli(*preprocess_args(corpus, tmp_path / "o3"), "--dev", empty_dev)
    _assert_cli_error(dev, "the dev corpus has no pairs")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    _assert_cli_error(_cli("bench", "preprocess", "--corpus", tmp_path / "none.tsv"), "none.tsv")
    closed = subprocess.run(
        ["bash", "-c", f"{' '.join(NMT)} translate {run / 'best.pt'} <&-"],
        capture_output=True,
        text=True,
    )
    assert_clean_error(closed, "standard input is closed")


def test_warnings_go_to_stderr_with_an_output_file(run, tmp_path):
    src = tmp_path / "in.es"
    src.write_text("hola " * 40 + "\n")  # over decode.max_input_len: a warning
    proc = nmt("translate", run / "best.pt", "-i", src, "-o", tmp_path / "out.en")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and "warning: line 1" in proc.stderr


def test_evaluate_stdin_bom_invalid_utf8_and_no_metrics(tmp_path):
    ref = tmp_path / "ref.txt"
    ref.write_text("the cat sat on the mat\n")
    bom = subprocess.run(
        [*NMT, "evaluate", "-", ref, "--metrics", "chrf"],
        input=b"\xef\xbb\xbfthe cat sat on the mat\n",
        capture_output=True,
    )
    assert bom.returncode == 0 and b"chrF2 = 100.00" in bom.stdout, bom
    bad = runner.invoke(app, ["evaluate", "-", str(ref)], input=b"the \xff cat\n")
    _assert_cli_error(bad, "<stdin>:1: invalid UTF-8")
    _assert_cli_error(_cli("evaluate", ref, ref, "--metrics", ""), "no metric given")


def test_stale_temporaries_of_a_dead_process_are_removed(run, tmp_path):
    src = tmp_path / "in.es"
    src.write_text("hola\n")
    stale = tmp_path / ".out.en.tmp-999999999-abc"  # no such pid
    live = tmp_path / f".out.en.tmp-{1}-abc"  # pid 1 is alive
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    assert nmt("translate", run / "best.pt", "-i", src, "-o", tmp_path / "out.en").returncode == 0
    assert not stale.exists() and live.exists()


def test_a_tsv_may_end_in_blank_lines(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("id\tes\ten\n1\thola\thello\n\n\n")
    corpus = TsvCorpus(str(path), "es", "en")
    assert list(corpus) == [("hola", "hello")] and len(corpus) == 1
    path.write_text("id\tes\ten\n1\thola\thello\n\n2\tsi\tyes\n")
    with pytest.raises(NmtError, match=r"c.tsv:3: a blank line where a row"):
        list(TsvCorpus(str(path), "es", "en"))


def test_shapes_are_checked_before_allocating(run, tmp_path):
    def huge(c):
        c["config"]["model"]["hidden_size"] = 200_000

    def wide(c):
        c["config"]["model"]["hidden_size"] = 4096  # within the bounds: the shapes differ

    started = time.monotonic()
    path = _corrupt_checkpoint(run, tmp_path, "huge.pt", huge)
    result = _cli("translate", path, "-i", run / "dev.hyp.txt")
    _assert_cli_error(result, "`model.hidden_size` must be between 1 and 16384; got 200000")
    path = _corrupt_checkpoint(run, tmp_path, "wide.pt", wide)
    result = _cli("translate", path, "-i", run / "dev.hyp.txt")
    _assert_cli_error(result, "the config needs")
    assert time.monotonic() - started < 30


def test_average_needs_two_finite_checkpoints_of_one_run(store, run, tmp_path):
    with pytest.raises(NmtError, match="needs two or more checkpoints, got 1"):
        average_checkpoints([run / "best.pt"], tmp_path / "avg.pt")
    other = tmp_path / "other"
    _train(store, other, "train.max_steps=2")
    with pytest.raises(NmtError, match="of another training run"):
        average_checkpoints([run / "step-4.pt", other / "step-2.pt"], tmp_path / "avg.pt")
    checkpoint = load_checkpoint(run / "step-2.pt")
    name = next(iter(checkpoint["model"]))
    checkpoint["model"][name] = checkpoint["model"][name] * float("nan")
    checkpoint.pop("sha256")
    torch.save(checkpoint, tmp_path / "nan.pt")
    with pytest.raises(NmtError, match="not finite"):
        average_checkpoints([run / "step-4.pt", tmp_path / "nan.pt"], tmp_path / "avg.pt")
    with pytest.raises(NmtError, match="not finite"):
        save_checkpoint(tmp_path / "nan2.pt", checkpoint)
    assert not (tmp_path / "avg.pt").exists() and not (tmp_path / "nan2.pt").exists()
