"""Atomic file writes: nothing is ever half-written.

Every file spin_fast writes (checkpoints, fits, model assets, datasets, results, pictures) goes through
`atomic_write`: the bytes go to a temporary file `.<name>.<pid>.<random>.tmp` in the destination's
folder, are flushed and fsynced, and the file is renamed over the destination (`os.replace`, atomic on
POSIX). On any error the temporary file is removed and the old destination, if any, is untouched.

- The file gets the mode a plain `open()` would give it (0666 minus the process umask), not the
  temporary file's private 0600.
- A temporary file left by a killed write (its process is gone) is removed the next time the same
  target is written; `remove_stale_temporaries(folder)` sweeps a whole folder (a run's start).
- A full disk is an `OSError(ENOSPC, "no space left on device while writing FILE")`.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Callable

_UMASK_LOCK = threading.Lock()
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _file_mode() -> int:
    """0666 minus the umask: what open() would create. Linux shows the umask in /proc; elsewhere it
    can only be read by setting it (briefly, under a lock)."""
    try:
        with open("/proc/self/status") as fh:
            umask = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        with _UMASK_LOCK:
            umask = os.umask(0o022)
            os.umask(umask)
    return 0o666 & ~umask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _is_stale(tmp: Path, target_name: str | None = None) -> bool:
    """`.<target>.<pid>.<random>.tmp` whose writer is gone, or is this process (it never leaves one
    behind: the file is from before a pid reuse, as in a restarted container)."""
    parts = tmp.name[:-len(".tmp")].rsplit(".", 2) if tmp.name.endswith(".tmp") else []
    if len(parts) != 3 or not parts[0].startswith(".") or (target_name is not None and parts[0] != f".{target_name}"):
        return False
    if not parts[1].isdigit():  # no pid: an older spin_fast's temporary file, never renamed
        return True
    pid = int(parts[1])
    return pid == os.getpid() or not _pid_alive(pid)


def remove_stale_temporaries(folder: str | os.PathLike, target_name: str | None = None) -> list[Path]:
    """Remove the temporary files of killed writes in `folder` (of one target, or all); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    pattern = f".{target_name}.*.tmp" if target_name is not None else ".*.tmp"
    for tmp in folder.glob(pattern):
        if tmp.is_file() and _is_stale(tmp, target_name):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _no_space(e: OSError, path: Path) -> OSError:
    return OSError(e.errno, f"no space left on device while writing {path}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call write(binary file handle) on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            raise _no_space(e, path) from e
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make `path` the same file as `source` (a hard link, swapped in atomically); where the file
    system has no hard links, an atomic copy."""
    source, path = Path(source), Path(path)
    remove_stale_temporaries(path.parent, path.name)
    tmp = path.parent / f".{path.name}.{os.getpid()}.link.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
            raise
        with open(source, "rb") as src:
            return atomic_write(path, lambda fh: shutil.copyfileobj(src, fh))
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `folder` if needed and prove a file can be written there (SystemExit naming it if not),
    so a long run does not find out at its end."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise SystemExit(f"{what} {folder}: cannot write there ({e.strerror or e})") from None
    return folder
