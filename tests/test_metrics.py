"""Progress reports: a summary line now and then, never a line per item, off a terminal."""

from __future__ import annotations

import io

from itk_rl.metrics import ProgressReport


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_long_run_off_a_terminal_prints_a_line_per_period_not_per_item():
    stream, clock = io.StringIO(), Clock()
    progress = ProgressReport(1000, "[build] prompts", stream=stream, every_s=30.0, clock=clock)
    for item in range(1000):
        clock.now = item * 0.1  # 100 s in all: a line at 30, 60 and 90 s
        progress.advance(ok=item % 100 != 0)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("[build] prompts: 301/1000 (30 %), 4 failed, 10.0/s, about 1 min")
    assert lines[-1] == "[build] prompts: 1000/1000 (100 %), 10 failed, 10.0/s"  # 1000 in 99.9 s


def test_a_terminal_gets_a_live_bar_instead():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = ProgressReport(3, "work", stream=stream)
    for _ in range(3):
        progress.advance()
    progress.close()
    text = stream.getvalue()
    assert "\r" in text and "3/3" in text
    assert "work: 3/3 (100 %)" not in text
