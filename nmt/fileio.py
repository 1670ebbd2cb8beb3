"""Writing files so that nothing a user keeps is ever half-written, mixed or lost.

- `atomic_open`: a file is written to a temporary sibling and renamed into place, so the path
  holds the old file or the complete new one; pipes and devices are written in place.
- `staged_dir`: a directory's files are built in a hidden staging directory inside it and moved
  into place when all succeeded, the one the caller names last (a manifest) last of all.
- `locked_dir` / `DirLock`: one writer per output directory (an advisory `flock`, released by
  the kernel when its process dies, so a killed run leaves no stale lock).
- Temporary names carry the writer's pid, so the next writer of the same output removes what a
  killed process left behind (`_remove_stale`), and never a live process's work.
- `json_line` / `read_json_lines`: JSON Lines that no line splitter can split, read back by
  `\\n` alone, with torn or unreadable records dropped with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from nmt.errors import NmtError

LOCK_NAME = ".nmt.lock"
# a temporary of ours: `.NAME.tmp-PID-XXXX` (atomic_open) or `.tmp-PID-XXXX` (staged_dir)
_TMP = re.compile(r"\.(?:.+\.)?tmp-(\d+)-[a-z0-9_]+")
# errno of a write that failed for lack of room: the file is named, the fix is the same
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def os_error(exc: OSError, path: str | Path | None = None) -> NmtError:
    """An OSError as a user-facing error naming the file (`path` when the error names none)."""
    where = exc.filename if exc.filename is not None else path
    if exc.errno in _NO_ROOM:
        fix = "free some space on that filesystem (or raise the quota), or write elsewhere"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "check the permissions (or mount), or choose another path"
    else:
        fix = "check the path and the filesystem"
    return NmtError(exc.strerror or str(exc), str(where) if where is not None else None, fix)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_internal(name: str) -> bool:
    """Whether a directory entry is nmt's own bookkeeping (a lock file or a temporary), not
    an output or a file of the user's."""
    return name == LOCK_NAME or _TMP.fullmatch(name) is not None


def _remove_stale(directory: Path, prefix: str) -> None:
    """Remove `PREFIX<pid>-*` temporaries in `directory` whose writing process is dead."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _TMP.fullmatch(entry.name)
        if not entry.name.startswith(prefix) or not match or _alive(int(match[1])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def refuse_input_as_output(output: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """An output that is one of the command's input files (the same file under any name)
    would replace it when the command completes: an error, before any work."""
    try:
        written = os.stat(output)
    except OSError:
        return  # not there yet (or unreadable: the write will say so)
    for given in inputs:
        if given is None or str(given) == "-":
            continue
        with contextlib.suppress(OSError):  # a missing input is reported where it is read
            read = os.stat(given)
            if stat.S_ISREG(read.st_mode) and os.path.samestat(read, written):
                raise NmtError(
                    f"the output is also an input ({given}): it would be replaced",
                    str(output),
                    "write to another file (and rename it afterwards if you mean to)",
                )


@contextmanager
def atomic_open(path: Path | str, mode: str = "w") -> Iterator[IO]:
    """A file (text in UTF-8, or binary with mode "wb") written to a temporary sibling that
    replaces `path` only when the block completes; on any error or interrupt it is removed.

    A symlink keeps pointing where it did (its target is replaced); a device or a pipe (e.g.
    /dev/stdout, `>(cmd)`) is written in place, as it cannot be replaced; missing parent
    directories are created. A write that fails for lack of room or permission is an
    NmtError naming `path`."""
    given = str(path)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    try:
        mode_bits = os.stat(given).st_mode  # follows links: /dev/stdout is the pipe itself
    except FileNotFoundError:
        mode_bits = None
    except OSError as exc:
        raise os_error(exc, given) from None
    if mode_bits is not None and stat.S_ISDIR(mode_bits):
        raise NmtError("this output path is a directory", given, "name a file to write")
    if mode_bits is not None and not stat.S_ISREG(mode_bits):
        with _named_errors(given), open(given, mode, **text) as fh:
            yield fh
        return
    target = Path(os.path.realpath(given))
    prefix = f".{target.name}.tmp-"
    tmp = _temp_name(target.parent, prefix)  # named first: cleanup holds from its creation on
    fd: int | None = None
    fh = None
    try:
        with _writing(given):
            target.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(target.parent, prefix)
            fd = _create(tmp, given)
            fh = os.fdopen(fd, mode, **text)
        with _named_errors(given):
            yield fh
        with _writing(given):
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(tmp, target)
    except BaseException:
        if fh is not None or fd is not None:
            _close_quietly(fh if fh is not None else fd)
        with contextlib.suppress(OSError):  # never made (a read-only directory), or gone
            tmp.unlink()
        raise


def _temp_name(directory: Path, prefix: str) -> Path:
    """A temporary's name, chosen before it is created, so that an interrupt (SIGTERM,
    Ctrl-C) arriving just after the creation still finds it to remove. Our pid and 64 random
    bits: no live writer can hold it, and a dead one's was removed by `_remove_stale`."""
    return directory / f"{prefix}{os.getpid()}-{secrets.token_hex(8)}"


def _create(tmp: Path, given: str) -> int:
    """Create the new file `tmp` (permissions as the umask gives any new file)."""
    try:
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileNotFoundError:  # the directory is there but takes no new files (/proc)
        raise NmtError(
            f"cannot create a file in {tmp.parent}: its filesystem takes no new files",
            given,
            "write the output to a regular directory",
        ) from None


def _close_quietly(file: IO | int) -> None:
    """Close a file being abandoned. Its buffered data may fail to flush again (a full disk);
    Python closes the descriptor even then, so that error is dropped."""
    with contextlib.suppress(OSError):
        if isinstance(file, int):
            os.close(file)
        else:
            file.close()


@contextmanager
def _writing(path: str) -> Iterator[None]:
    """OSErrors of our own work on the output `path` as NmtErrors naming it."""
    try:
        yield
    except OSError as exc:
        raise os_error(_unnamed(exc), path) from None


def _unnamed(exc: OSError) -> OSError:
    return OSError(exc.errno, exc.strerror)


@contextmanager
def _named_errors(path: str) -> Iterator[None]:
    """OSErrors in a block that writes `path`: lack of room, or one that names no file, as
    NmtErrors naming `path`; one that names another file (an input) passes through."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None or exc.errno in _NO_ROOM:
            raise os_error(_unnamed(exc), path) from None
        raise


class DirLock:
    """An exclusive advisory lock on an output directory: a second writer fails at once with
    an error naming the holder's pid. The kernel drops the lock when its process dies, so a
    lock is never stale; the lock file is removed on release."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> DirLock:
        for _ in range(3):  # the file may be replaced between open and flock: retry
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise NmtError(
                    f"another nmt process (pid {holder}) is writing to this directory",
                    str(self.path.parent),
                    "wait for it to finish, or choose another output",
                ) from None
            if self._same_file(fd):
                with contextlib.suppress(OSError):  # the pid informs; a full disk may refuse it
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return self
            os.close(fd)
        raise NmtError("could not lock the directory", str(self.path.parent), "try again")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise os_error(exc, self.path.parent) from None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # still locked: no one else holds this file
            os.close(self.fd)
            self.fd = None


@contextmanager
def locked_dir(path: Path) -> Iterator[Path]:
    """An output directory (created if missing, a symlink followed), held under `DirLock`
    for the block; on failure it is removed again if this call created it and it is empty."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_dir():
        raise NmtError("exists and is not a directory", str(path), "choose another output")
    created = not target.exists()
    with _writing(str(path)):
        target.mkdir(parents=True, exist_ok=True)
    try:
        with DirLock(target):
            yield target
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                target.rmdir()
        raise


@contextmanager
def staged_dir(target: Path, owned: Callable[[str], bool], last: str) -> Iterator[Path]:
    """Yield a staging directory inside the existing directory `target`; when the block
    succeeds, its files are moved into `target`, the one named `last` last of all.

    The files of `target` that `owned` claims (the output being replaced) are removed first,
    `last` before the others, so a commit torn by a crash leaves no `last`: a reader that
    trusts only a directory with `last` in it never sees a mix. Other files are left alone.
    Staging inside `target` keeps every move on one filesystem (mount points, the current
    directory). On failure or interrupt the staging directory is removed. The caller holds
    the directory's lock (`locked_dir`).
    """
    tmp = _temp_name(target, ".tmp-")
    try:
        with _writing(str(target)):
            _remove_stale(target, ".tmp-")
            tmp.mkdir(0o777)  # as the umask gives any new directory
        with _named_errors(str(target)):
            yield tmp
        old = sorted((p for p in target.iterdir() if owned(p.name)), key=lambda p: p.name != last)
        new = sorted(tmp.iterdir(), key=lambda p: p.name == last)
        with _writing(str(target)):
            for path in old:
                path.unlink()
            for path in new:
                os.replace(path, target / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# JSON Lines: str.splitlines() also splits at these, and json.dumps leaves them raw
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _finite(value: Any) -> Any:
    """NaN and infinities as null (JSON has no such numbers), in nested records."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_line(record: Any) -> str:
    """One JSON Lines record (no newline): valid JSON, and one line for any line splitter."""
    text = json.dumps(_finite(record), ensure_ascii=False, allow_nan=False)
    return text.translate(_LINE_BREAKS)


def read_json_lines(path: Path, warn: Callable[[str], None]) -> list[Any]:
    """The records of a JSON Lines file, split at `\\n` only; a blank line is skipped, and a
    record that does not parse (a last line torn by a crash or a full disk) is dropped with
    a warning naming its line."""
    records = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                records.append(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                warn(f"warning: {path}:{lineno}: unreadable record dropped (torn by a crash?)")
    return records
