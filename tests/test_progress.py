"""tabvlm.progress: a tqdm bar on a terminal, plain lines in a log file."""

from __future__ import annotations

import io

from tqdm import tqdm

from tabvlm.progress import LineProgress, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_a_bar_and_a_file_gets_lines() -> None:
    bar = progress(total=3, file=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress(total=3, file=io.StringIO()), LineProgress)
    assert isinstance(progress(total=3, file=Terminal(), disable=True), LineProgress)


def test_lines_every_tenth_of_the_total_and_one_at_the_end() -> None:
    log, clock = io.StringIO(), Clock()
    bar = LineProgress(total=25, desc="predict", unit="img", file=log, clock=clock)  # every 3 items
    for _ in range(25):
        clock.now += 0.5
        bar.update(1)
    bar.close()
    bar.close()  # a second close adds nothing
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [line.split(" img")[0] for line in lines] == [f"predict: {n}/25" for n in (*range(3, 25, 3), 25)]
    assert lines[0] == "predict: 3/25 img (12%) | 2 img/s | 0:01 elapsed, ~0:11 left"
    assert lines[-1] == "predict: 25/25 img (100%) | 2 img/s | 0:12 elapsed"


def test_a_slow_loop_gets_a_line_every_few_seconds_with_its_postfix() -> None:
    log, clock = io.StringIO(), Clock()
    bar = LineProgress(
        total=1000, initial=100, desc="vlm-sft", unit="step", file=log, seconds=30, clock=clock
    )
    for _ in range(4):
        clock.now += 20.0  # 1 step every 20 s: far from 100 steps, so time decides
        bar.update(1)
        bar.set_postfix(loss="0.1234")
    bar.close()
    lines = log.getvalue().splitlines()
    assert [line.split(" step")[0] for line in lines] == ["vlm-sft: 102/1000", "vlm-sft: 104/1000"]
    assert lines[0].endswith("| 0.05 step/s | 0:40 elapsed, ~4:59:20 left | loss=0.1234")


def test_disabled_draws_nothing_but_still_writes() -> None:
    log = io.StringIO()
    bar = progress(total=5, file=log, disable=True)
    bar.update(5)
    bar.write("a message")
    bar.close()
    assert log.getvalue() == "a message\n"


def test_progress_forwards_every_option_to_line_progress() -> None:
    log, clock = io.StringIO(), Clock()
    bar = progress(total=10, desc="eval", unit="img", file=log, every=5, seconds=99, clock=clock)
    assert (bar.every, bar.seconds, bar.clock, bar.desc) == (5, 99, clock, "eval")
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert [line.split(" img")[0] for line in log.getvalue().splitlines()] == ["eval: 5/10", "eval: 10/10"]
    terminal = progress(total=3, desc="eval", unit="img", initial=1, file=Terminal(), every=5)
    assert isinstance(terminal, tqdm) and (terminal.desc, terminal.unit, terminal.n) == ("eval", "img", 1)
    terminal.close()
