"""Atomic writes: a file or a directory appears complete or not at all.

Everything a user keeps (preprocessed corpora, manifests, later checkpoints and translations) is
written to a temporary sibling first and renamed into place, so an interrupted or failed run never
leaves a half-written file where a good one was or is expected.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from nmt.errors import NmtError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `target`; on success it replaces `target`.

    On any failure or interrupt the temporary directory is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / "d")
    os.replace(tmp, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file (text in UTF-8, or binary with mode "wb") written to a temporary sibling that
    replaces `path` only when the block completes; on any error or interrupt it is removed.

    A symlink keeps pointing where it did (its target is replaced); a device or a named pipe
    (e.g. /dev/null) is written in place, as it cannot be replaced; missing parent directories
    are created."""
    given, path = str(path), Path(os.path.realpath(path))
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    if path.is_dir():
        raise NmtError("this output path is a directory", given, "name a file to write")
    if path.exists() and not path.is_file():
        with open(path, mode, **text) as fh:
            yield fh
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NmtError(
            f"cannot create the output's directory ({exc.strerror})",
            given,
            "choose another output path",
        ) from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
