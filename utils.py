"""Small helpers every script shares: one-line errors, the command line, and writing files safely.

    UserError, CommandLineParser, run_command_line    a mistake in the flags or the files they name
                                                      is one line `error: ...` and exit code 2
    atomic_torch_save                                 a file is always whole, even if the process dies
    write_with_retries, WriteFailed                   ride out a network drive that drops for seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch


class UserError(Exception):
    """A mistake in the command line or the files it names: reported in one line, no traceback."""


class CommandLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake becomes a UserError (one line, exit code 2) instead of usage + exit."""

    def error(self, message: str):
        raise UserError(f"{message} (see python {self.prog} --help)")


def run_command_line(main: Callable[..., int | None], *args) -> int:
    """Run a script's main(*args) and return its exit code: a UserError becomes one line `error: ...`
    on stderr and exit code 2. Every script ends with `sys.exit(run_command_line(main))`."""
    try:
        return main(*args) or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """torch.save through a temporary file and a rename, so `path` is always whole.

    os.replace is atomic on POSIX and Windows: a reader sees the old file or the new one,
    never half of one, even if this process dies mid-write.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it a normal file's permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class WriteFailed(UserError):
    """A file could not be written even after retries (a full disk, a dropped network mount)."""


def write_with_retries(write: Callable[[], None], path: str | Path, tries: int = 3, first_wait: float = 2.0) -> None:
    """Call `write()`; on an OSError wait and try again (2 s, then 4 s, ...), `tries` times in all.

    A Google Drive or network mount can drop for a few seconds; a retry rides that out.

    Raises:
        WriteFailed: every try failed; one line naming `path`, the last error and the tries.
    """
    waited = 0.0
    for attempt in range(tries):
        try:
            write()
            return
        except OSError as error:
            last = error
            if attempt + 1 < tries:
                wait = first_wait * 2**attempt
                time.sleep(wait)
                waited += wait
    reason = last.strerror or str(last) or type(last).__name__
    raise WriteFailed(f"cannot write {path} ({reason}), tried {tries} times over {waited:.0f} s")

