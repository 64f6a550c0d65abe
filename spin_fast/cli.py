"""The one top-level handler every command's `main` goes through.

`run_command(cmd, main, argv)` runs `main(argv)` and reports, as ONE line on stderr
(`spin_fast.<cmd>: error: ...`) with exit status 2, every error that is the user's to fix:

- the project's own errors (`spin_fast.errors.SpinFastError`: config, data file, checkpoint, asset,
  work dir, loader backend, ...; their messages name the file, the key and the sample);
- the expected OS errors: a missing file or folder, no permission, a file where a folder is needed
  (and the reverse), a full disk or quota, a read-only file system;
- a `SystemExit` carrying a message.

Ctrl-C (KeyboardInterrupt) says where the command stopped and how to continue (`resume`), exit 130.
Anything else is a bug and keeps its traceback. Before `main` runs, the environment settings are
checked (`spin_fast.config.check_environment`), so a bad one fails before any work or file is made.
"""
from __future__ import annotations

import errno
import sys
from typing import Callable

from spin_fast.errors import SpinFastError

# OSErrors that are the user's to fix (anything else from the OS keeps its traceback)
USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.ENOENT, errno.EACCES)


def one_line(text: str) -> str:
    """A message on one line: its lines joined ('; ' between sentences, ' ' after a colon)."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    out = ""
    for p in parts:
        out += p if not out else (" " if out.endswith(":") else "; ") + p
    return out


def message(e: BaseException) -> str:
    """The error's own text (a KeyError's without repr quotes; an OSError's as 'strerror: file')."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.strerror}: {e.filename}"
    if isinstance(e, OSError) and e.strerror and len(e.args) == 2:  # OSError(errno, "our message")
        return e.strerror
    if len(e.args) == 1 and isinstance(e.args[0], str):
        return e.args[0]
    return str(e)


def is_user_error(e: BaseException) -> bool:
    if isinstance(e, SpinFastError):
        return True
    return isinstance(e, USER_OS_ERRORS) or (isinstance(e, OSError) and e.errno in USER_ERRNOS)


def report(cmd: str, text: str) -> None:
    lead = "\n" if sys.stderr.isatty() else ""  # past a progress bar's unfinished line
    print(f"{lead}spin_fast.{cmd}: error: {one_line(text)}", file=sys.stderr)


def run_command(cmd: str, main: Callable, argv=None, resume: Callable[[], str | None] | None = None,
                user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """`main(argv)`'s exit status (0 when it returns a non-int), or 2 after a one-line report of a user
    error, or 130 after Ctrl-C. `resume()`: how to continue an interrupted run (a command line), or
    None; `user_errors`: further classes this command reports as user errors."""
    try:
        from spin_fast.config import check_environment

        check_environment()
        rc = main(argv)
    except KeyboardInterrupt as e:
        where = getattr(e, "where", None)
        how = None
        try:
            how = resume() if resume is not None else None
        except Exception:  # noqa: BLE001 - the interrupt is what to report
            how = None
        lead = "\n" if sys.stderr.isatty() else ""
        print(f"{lead}spin_fast.{cmd}: interrupted" + (f" at {where}" if where else "")
              + (f"; continue with: {how}" if how else ""), file=sys.stderr)
        return 130
    except SystemExit as e:
        if isinstance(e.code, str):
            report(cmd, e.code)
            return 2
        raise
    except Exception as e:  # noqa: BLE001 - user errors become one line, bugs are re-raised below
        if not (is_user_error(e) or isinstance(e, user_errors)):
            raise
        report(cmd, message(e))
        return 2
    return rc if isinstance(rc, int) else 0
