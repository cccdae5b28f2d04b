"""Progress display: in-place bar on a TTY, periodic plain lines otherwise, quiet mode."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from vecpg.run.progress import ProgressCallback, format_duration, format_status


class FakeStream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rows(count: int, steps_per_update: int = 1000):
    for update in range(count):
        step = (update + 1) * steps_per_update
        yield {
            "global_step": step,
            "update": update,
            "sps": 2000.0,
            "episode_return_mean": float(update),
        }


def run(callback, clock, count, seconds_per_update):
    trainer = SimpleNamespace(config=SimpleNamespace(total_steps=count * 1000))
    callback.on_start(trainer)
    for row in rows(count):
        clock.now += seconds_per_update
        callback.on_update(trainer, row)
    callback.on_end(trainer, {})


def test_tty_redraws_one_line_in_place():
    stream, clock = FakeStream(tty=True), FakeClock()
    run(ProgressCallback(stream=stream, clock=clock, refresh_s=0.1), clock, 10, 0.5)
    text = stream.getvalue()
    assert "\n" not in text[:-1] and text.endswith("\n")  # one line, finished at the end
    frames = text.rstrip("\n").split("\r")[1:]
    assert len(frames) == 10
    assert frames[-1].startswith("[########################] 100% 10,000/10,000")
    assert "2,000 sps" in frames[-1] and "return 9.0" in frames[-1] and "ETA 0:00" in frames[-1]
    assert "ETA 0:05" in frames[0]  # 9,000 steps left at 2,000 sps (rounded)
    # each frame is padded to cover every character of the one before
    assert all(len(b) >= len(a.rstrip()) for a, b in zip(frames, frames[1:], strict=False))


def test_tty_redraw_is_rate_limited_but_final_state_shown():
    stream, clock = FakeStream(tty=True), FakeClock()
    run(ProgressCallback(stream=stream, clock=clock, refresh_s=1.0), clock, 100, 0.01)
    frames = stream.getvalue().rstrip("\n").split("\r")[1:]
    assert len(frames) == 2  # the first update, then the final state at on_end
    assert "100,000/100,000" in frames[-1]


def test_shorter_line_covers_previous_one():
    stream = FakeStream(tty=True)
    callback = ProgressCallback(stream=stream, refresh_s=0)
    callback.on_update(None, {"global_step": 10, "sps": 1e9, "episode_return_mean": 123456.0})
    callback.on_update(None, {"global_step": 20, "sps": 1.0})
    first, second = stream.getvalue().split("\r")[1:]
    assert len(second) >= len(first)


def test_plain_lines_every_interval_when_not_a_tty():
    stream, clock = FakeStream(tty=False), FakeClock()
    run(ProgressCallback(stream=stream, clock=clock, interval_s=10.0), clock, 50, 1.0)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    # the first update, then every 10 s (updates 11, 21, 31, 41), then the last one
    assert len(lines) == 6
    assert lines[0] == "step 1,000/50,000 (2%) | 2,000 sps | return 0.0 | ETA 0:25"
    assert lines[-1].startswith("step 50,000/50,000 (100%)")


def test_quiet_writes_nothing():
    stream, clock = FakeStream(tty=True), FakeClock()
    run(ProgressCallback(stream=stream, clock=clock, quiet=True), clock, 10, 1.0)
    assert stream.getvalue() == ""


def test_unknown_total_and_missing_values():
    assert format_status({"global_step": 5, "sps": float("nan")}, None, bar=True) == (
        "step 5 | - sps | return -"
    )
    assert format_status({"global_step": 5, "sps": 0.0}, 10, bar=False).endswith("ETA ?")
    assert format_duration(-1) == "?"


def test_invalid_interval():
    with pytest.raises(ValueError):
        ProgressCallback(interval_s=-1)
