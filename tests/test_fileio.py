"""Atomic output files: what a write replaces, what it leaves alone, and what it never leaves."""

import os
import threading

import pytest

from nmt.errors import NmtError
from nmt.fileio import atomic_open, refuse_input_as_output


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(out) as fh:
        fh.write("half")
        raise RuntimeError("stopped")
    assert out.read_text() == "old\n" and os.listdir(tmp_path) == ["out.txt"]


def test_a_symlink_keeps_pointing_at_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target, link = tmp_path / "real" / "target.txt", tmp_path / "link.txt"
    target.write_text("old\n")
    link.symlink_to(target)
    with atomic_open(link) as fh:
        fh.write("new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_a_named_pipe_is_written_in_place(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()))
    reader.start()
    with atomic_open(pipe) as fh:
        fh.write("through the pipe\n")
    reader.join(timeout=10)
    assert received == ["through the pipe\n"] and pipe.is_fifo()


def test_missing_directories_are_created_and_a_directory_is_refused(tmp_path):
    with atomic_open(tmp_path / "a" / "b" / "out.txt") as fh:
        fh.write("x\n")
    assert (tmp_path / "a" / "b" / "out.txt").read_text() == "x\n"
    with pytest.raises(NmtError, match="is a directory"), atomic_open(tmp_path / "a") as fh:
        fh.write("never")
    assert os.listdir(tmp_path / "a") == ["b"]


def test_an_output_that_is_an_input_is_refused_under_any_name(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("hola\n", encoding="utf-8")
    (tmp_path / "hard.txt").hardlink_to(source)
    (tmp_path / "soft.txt").symlink_to(source)
    for name in ("in.txt", "hard.txt", "soft.txt", "./in.txt"):
        with pytest.raises(NmtError, match="the output is also an input"):
            refuse_input_as_output(tmp_path / name, [None, "-", tmp_path / "other", source])
    (tmp_path / "copy.txt").write_text("hola\n", encoding="utf-8")
    refuse_input_as_output(tmp_path / "copy.txt", [source])  # equal, not the same file
    refuse_input_as_output(tmp_path / "new.txt", [source])
    refuse_input_as_output("/dev/stdout", [source, "-"])


def test_commands_refuse_to_write_over_their_inputs(tmp_path):
    """translate, score and average: `error:`, exit 2, the input unchanged (it was replaced
    by the output, exit 0)."""
    from typer.testing import CliRunner

    from nmt.cli import app

    text = tmp_path / "text.txt"
    text.write_text("hola\n", encoding="utf-8")
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    cases = [
        ["translate", str(model), "-i", str(text), "-o", str(text)],
        ["score", str(model), "-s", str(text), "-t", str(text), "-o", str(text)],
        ["score", str(model), "-s", "-", "-t", str(text), "-o", str(text)],
        ["average", str(model), str(model), "-o", str(model)],
    ]
    for args in cases:
        result = CliRunner().invoke(app, args, input="hola\n")
        assert result.exit_code == 2, (args, result.output)
        assert "the output is also an input" in result.output, result.output
    assert text.read_text(encoding="utf-8") == "hola\n"
    assert model.read_bytes() == b"weights"


@pytest.mark.skipif(not os.path.isfile("/proc/version"), reason="needs Linux's /proc")
def test_a_directory_that_takes_no_new_files_is_named_as_such():
    """`-o /proc/version` said "No such file or directory" of a file that exists: the error
    was the temporary sibling's, which /proc cannot hold."""
    refused = pytest.raises(NmtError, match="cannot create a file in /proc: its filesystem takes")
    with refused, atomic_open("/proc/version") as fh:
        fh.write("x")


def test_an_interrupt_as_the_temporary_is_created_leaves_nothing(tmp_path, monkeypatch):
    """SIGTERM or Ctrl-C can land just after the temporary file (or staging directory) is
    made, before the code that owns it runs: it is removed all the same. (With mkstemp, the
    name was known only once it returned, and a fresh-clone CI run found `.out.tmp-*` left
    behind by `nmt translate` stopped by SIGTERM.)"""
    from nmt.fileio import staged_dir

    real_open, real_mkdir = os.open, os.mkdir

    def interrupted(real):
        def create(path, *args, **kwargs):
            real(path, *args, **kwargs)
            raise KeyboardInterrupt  # the signal's handler, run right after the syscall

        return create

    out = tmp_path / "out.txt"
    out.write_text("old\n")
    monkeypatch.setattr(os, "open", interrupted(real_open))
    with pytest.raises(KeyboardInterrupt), atomic_open(out) as fh:
        fh.write("never")
    monkeypatch.setattr(os, "open", real_open)
    assert os.listdir(tmp_path) == ["out.txt"] and out.read_text() == "old\n"
    monkeypatch.setattr(os, "mkdir", interrupted(real_mkdir))
    with pytest.raises(KeyboardInterrupt), staged_dir(tmp_path, lambda name: False, "x"):
        pass
    monkeypatch.setattr(os, "mkdir", real_mkdir)
    assert os.listdir(tmp_path) == ["out.txt"]


def test_new_files_and_directories_get_the_umask_permissions(tmp_path):
    from nmt.fileio import staged_dir

    old = os.umask(0o027)
    try:
        with atomic_open(tmp_path / "out.txt") as fh:
            fh.write("x\n")
        with staged_dir(tmp_path, lambda name: False, "sub") as stage:
            (stage / "sub").mkdir()
            seen = stage.stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o640
    assert seen == 0o750
