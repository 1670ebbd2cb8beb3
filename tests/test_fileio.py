"""Atomic output files: what a write replaces, what it leaves alone, and what it never leaves."""

import os
import threading

import pytest

from nmt.errors import NmtError
from nmt.fileio import atomic_open


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
