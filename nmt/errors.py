"""The one exception type users see.

Every error caused by the user's input (a missing file, a bad config value, a corpus that cannot be
used) is raised as `NmtError` with three parts: what was wrong, where (file, line, key), and what to
do about it. The CLI prints it without a traceback and exits with code 2.
"""

from __future__ import annotations


class NmtError(Exception):
    """A user-facing error: `what` went wrong, `where` (file:line or key), and the `fix`."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"{self.where}: {self.what}" if self.where else self.what
        return f"{head}\n  fix: {self.fix}" if self.fix else head
