"""spin_fast.progress: plain lines with elapsed / ETA / img/s off a terminal, a tqdm bar on one,
silence on non-zero ranks."""
import io

import pytest

from spin_fast import progress as P


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(P.time, "perf_counter", c)
    monkeypatch.delenv("RANK", raising=False)
    return c


def test_plain_lines_with_eta_on_a_non_terminal_stream(clock):
    out = io.StringIO()
    bar = P.Progress(total=40, desc="train", unit="step", stream=out, every_s=0)
    assert bar.plain  # StringIO is not a TTY
    for _ in range(5):
        clock.t += 1.0  # one step a second, 8 images a step
        bar.update(1, images=8, phases={"data": 0.012, "network": 0.3}, loss=1.23456)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 5
    # 5 of 40 steps in 5 s: 35 s left, 8 img/s
    assert lines[-1] == ("train: 5/40 steps (12%) | elapsed 0:00:05 | ETA 0:00:35 | 8.0 img/s | "
                         "data 12 ms  network 300 ms | loss 1.235")
    assert lines[0].startswith("train: 1/40 steps (2%) | elapsed 0:00:01 | ETA 0:00:39 |")


def test_plain_lines_are_throttled_but_first_last_and_forced_ones_print(clock):
    out = io.StringIO()
    bar = P.Progress(total=10, desc="eval", unit="img", stream=out, every_s=30)
    for i in range(10):
        clock.t += 1.0
        bar.update(1, force=(i == 4))
    lines = out.getvalue().splitlines()
    assert [ln.split(" |")[0] for ln in lines] == ["eval: 1/10 imgs (10%)", "eval: 5/10 imgs (50%)",
                                                     "eval: 10/10 imgs (100%)"]
    assert "ETA 0:00:00 | 1.0 img/s" in lines[-1]  # unit img: the rate is images/s


def test_resumed_initial_steps_do_not_count_for_the_rate(clock):
    out = io.StringIO()
    bar = P.Progress(total=100, desc="train", initial=50, stream=out, every_s=0)
    clock.t += 2.0
    bar.update(1, images=4)
    assert bar.eta() == pytest.approx(49 * 2.0)
    assert "51/100 steps" in out.getvalue() and "2.0 img/s" in out.getvalue()


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_tqdm_bar(clock):
    out = TTY()
    with P.Progress(total=4, desc="synth", unit="img", stream=out) as bar:
        assert not bar.plain
        for _ in range(4):
            clock.t += 0.5
            bar.update(1, phases={"render": 0.004})
    text = out.getvalue()
    assert "\r" in text and "synth" in text and "4/4" in text and "render 4 ms" in text


def test_non_zero_ranks_are_silent(clock, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    out = io.StringIO()
    bar = P.Progress(total=3, desc="train", stream=out, every_s=0)
    bar.update(1)
    bar.write("hello")
    assert out.getvalue() == ""
    monkeypatch.setenv("RANK", "0")
    P.Progress(total=3, desc="train", stream=out, every_s=0).update(1)
    assert out.getvalue().startswith("train: 1/3")


def test_track_counts_every_item(clock):
    out = io.StringIO()
    assert list(P.track(range(3), "check", unit="file", stream=out, every_s=0)) == [0, 1, 2]
    assert out.getvalue().splitlines()[-1].startswith("check: 3/3 files (100%)")


def test_format_duration():
    assert P.format_duration(3725.4) == "1:02:05"
    assert P.format_duration(None) == "?"
