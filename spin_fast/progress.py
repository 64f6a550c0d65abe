"""Progress display for every long loop: a tqdm bar on a terminal, plain log lines elsewhere.

    from spin_fast.progress import Progress

    with Progress(total=len(samples), desc="fit", unit="img") as bar:
        for batch in batches:
            ...                                   # the work
            bar.update(len(batch), phases={"data": t_data, "smplify": t_fit}, loss=0.12)

Every display shows the count against the total, the elapsed time, the ETA, the rate in images/s
(`unit="img"`, or `images=` passed to `update` when the loop counts steps) and, when given, the
phase split of the latest update in ms (`phases`: name -> seconds) and a few numbers (`**values`).

- Terminal (stderr is a TTY): one tqdm bar, redrawn in place.
- Not a terminal (CI logs, `2> file`): plain, complete lines, e.g.
  `train: 5/40 steps (12%) | elapsed 0:00:03 | ETA 0:00:21 | 8.1 img/s | data 12 ms  network 300 ms | loss 1.234`
  printed on the first update, then at most every `every_s` seconds, on `update(..., force=True)`
  and on the last update.
- Only the rank-0 process of a multi-process run (torchrun's `RANK`) shows anything; the others are
  silent (`enabled=` overrides).
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def is_rank_zero() -> bool:
    """True unless this is a non-zero rank of a torchrun / torch.distributed launch."""
    return int(os.environ.get("RANK", "0")) == 0


def format_duration(seconds: float | None) -> str:
    """0:01:05 style (h:mm:ss); '?' when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_phases(phases: Mapping[str, float] | None) -> str:
    """{'data': 0.012, 'smplify': 0.8} (seconds) -> 'data 12 ms  smplify 800 ms'."""
    if not phases:
        return ""
    return "  ".join(f"{k} {1000 * v:.0f} ms" for k, v in phases.items())


def format_values(values: Mapping[str, Any]) -> str:
    """{'loss': 1.23456} -> 'loss 1.235' (numbers to 4 significant digits)."""
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in values.items())


class Progress:
    """Progress of a loop of `total` units (steps, images, files); see the module docstring.

    total: number of units (None when unknown: no ETA); desc: the label; unit: 'img' makes the
    rate images/s, any other unit ('step', 'file') shows images/s only from `update(images=)`;
    initial: units already done (a resumed run; they count neither for the rate nor the ETA);
    stream: default sys.stderr; plain: force plain lines (True) or the bar (False), default: plain
    unless the stream is a TTY; enabled: default `is_rank_zero()`; every_s: seconds between plain lines.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "step", initial: int = 0,
                 stream: IO[str] | None = None, plain: bool | None = None, enabled: bool | None = None,
                 every_s: float = 30.0):
        self.total, self.desc, self.unit, self.initial = total, desc, unit, initial
        self.n = initial
        self.enabled = is_rank_zero() if enabled is None else enabled
        self.stream = sys.stderr if stream is None else stream
        if plain is None:
            isatty = getattr(self.stream, "isatty", None)
            plain = not (callable(isatty) and isatty())
        self.plain, self.every_s = plain, every_s
        self.images = 0            # images counted since the start (for img/s)
        self.phases: dict[str, float] = {}
        self.values: dict[str, Any] = {}
        self.last_line = ""        # the latest plain line (or bar postfix) shown
        self._t0 = time.perf_counter()
        self._last_print = None
        self._bar = None
        if self.enabled and not self.plain:
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream,
                             dynamic_ncols=True, smoothing=0.1)

    # --- numbers ---------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def rate(self) -> float | None:
        """Units per second since the start (None before any progress)."""
        done, dt = self.n - self.initial, self.elapsed
        return done / dt if done > 0 and dt > 0 else None

    def images_per_s(self) -> float | None:
        imgs = self.n - self.initial if self.unit == "img" else self.images
        dt = self.elapsed
        return imgs / dt if imgs > 0 and dt > 0 else None

    def eta(self) -> float | None:
        """Seconds left at the average rate so far (None when the total or the rate is unknown)."""
        r = self.rate()
        if self.total is None or r is None:
            return None
        return max(self.total - self.n, 0) / r

    # --- display ---------------------------------------------------------------------------------
    def line(self) -> str:
        """The plain progress line of the current state."""
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {count} {self.unit}s{pct}", f"elapsed {format_duration(self.elapsed)}",
                 f"ETA {format_duration(self.eta())}"]
        ips = self.images_per_s()
        parts.append(f"{ips:.1f} img/s" if ips is not None else "? img/s")
        for extra in (format_phases(self.phases), format_values(self.values)):
            if extra:
                parts.append(extra)
        return " | ".join(parts)

    def _postfix(self) -> str:
        ips = self.images_per_s()
        parts = [f"{ips:.1f} img/s"] if ips is not None and self.unit != "img" else []
        parts += [p for p in (format_phases(self.phases), format_values(self.values)) if p]
        return " | ".join(parts)

    def update(self, n: int = 1, *, images: int | None = None, phases: Mapping[str, float] | None = None,
               force: bool = False, **values: Any) -> None:
        """Advance by n units; `images` processed in them, the latest `phases` (name -> seconds) and
        `values` (shown as they are given; replaces the previous ones when given)."""
        self.n += n
        if images is not None:
            self.images += images
        if phases is not None:
            self.phases = dict(phases)
        if values:
            self.values = dict(values)
        if not self.enabled:
            return
        if self._bar is not None:
            self.last_line = self._postfix()
            self._bar.set_postfix_str(self.last_line, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        last = self.total is not None and self.n >= self.total
        if force or last or self._last_print is None or now - self._last_print >= self.every_s:
            self.last_line = self.line()
            print(self.last_line, file=self.stream, flush=True)
            self._last_print = now

    def write(self, message: str) -> None:
        """A message that does not break the bar (rank 0 only)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "img", **kwargs) -> Iterator[T]:
    """Iterate with a Progress advancing one unit per item (`total` defaults to len(iterable))."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total=total, desc=desc, unit=unit, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update(1)
