"""One run an output: an OS file lock held for a run's whole life.

`RunLock(path, what)` takes `fcntl.flock(LOCK_EX | LOCK_NB)` on the file `path`. A second process
asking for the same lock is refused at once (`LockHeld`, naming `what` and the holder's pid, which the
holder writes into the file). The kernel drops a flock lock when its process ends, however it ends
(SIGKILL included), so a lock is never stale: the file a killed run leaves behind is taken by the
next run without any clean-up. `release()` removes the file; a taker checks after locking that the
file it locked is still the one at `path` (and retries if not), so removing it cannot let two runs in.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
from pathlib import Path

from spin_fast.errors import SpinFastError


class LockHeld(SpinFastError):
    """Another live process holds the lock of this output."""


class RunLock:
    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.what = Path(path), what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock (creating its folder and file) or raise LockHeld; OSError when the folder
        cannot be written (the caller names the output)."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # a holder releasing (removing the file) between our open and lock: retry
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise LockHeld(f"{self.what} is in use by process {self._holder()} (lock file {self.path}); "
                               "wait for that run to end, or stop it (its lock goes with it), or choose "
                               "another output") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n{' '.join(sys.argv)[:500]}\n".encode())
                self._fd = fd
                return self
            os.close(fd)
        raise LockHeld(f"{self.what}: could not take the lock file {self.path} (it keeps changing)")

    def in_use(self) -> bool:
        """Whether another process holds this lock now (nothing is created to find out)."""
        if self._fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)  # drops the probe's shared lock, if it got one

    def _holder(self) -> str:
        """'1234' (and its command when /proc shows it), read from the lock file."""
        for _ in range(50):  # the holder writes its pid right after locking
            try:
                first = self.path.read_text().split("\n", 1)[0].strip()
            except OSError:
                first = ""
            if first.isdigit():
                try:
                    cmd = Path(f"/proc/{first}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                except OSError:
                    cmd = ""
                return f"{first} ({cmd[:120]})" if cmd else first
            import time

            time.sleep(0.01)
        return "(another process)"

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
