"""jobs.progress without Spark: ETA arithmetic, the line format, throttling, the TTY redraw of the
CLI printer."""

from __future__ import annotations

import io

import pytest

from jobs.progress import Meter, ProgressLine, eta_seconds, format_duration, progress_line


@pytest.mark.parametrize("seconds, text", [
    (0, "0:00"), (7.4, "0:07"), (59.6, "1:00"), (750, "12:30"), (3723, "1:02:03"), (None, "?"),
    (float("inf"), "?"), (float("nan"), "?"), (-1, "?"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("done, total, elapsed, eta", [
    (25, 100, 10.0, 30.0),     # 2.5/s, 75 left
    (6, 18, 60.0, 120.0),
    (1, 18, 60.0, None),       # one completion: no rate yet (issue 29's "ETA 42:56" for 18 requests)
    (4, 18, 60.0, None),       # fewer than ETA_MIN_DONE
    (9, 18, 9.0, None),        # less than ETA_MIN_SECONDS
    (100, 100, 10.0, 0.0),     # finished
    (120, 100, 10.0, 0.0),     # more than planned (a total that grew late): never negative
    (0, 100, 10.0, None),      # no rate yet
    (5, None, 10.0, None),     # unknown total
    (5, 10, 0.0, None),        # no time elapsed
])
def test_eta_is_what_is_left_at_the_rate_so_far(done, total, elapsed, eta):
    assert eta_seconds(done, total, elapsed) == eta


def test_progress_line_states_count_percent_rate_and_eta():
    line = progress_line("ingest: normalizing", 120, 400, 40.0, "tasks")
    assert isinstance(line, ProgressLine)
    assert line == "ingest: normalizing 120/400 tasks (30%), 3.0 tasks/s, ETA 1:33"
    assert progress_line("x", 400, 400, 125.0, "tasks") == "x 400/400 tasks (100%), 3.2 tasks/s, done in 2:05"
    assert progress_line("x", 50, None, 10.0, "rows", "3 errors") == "x 50 rows, 5.0 rows/s, elapsed 0:10, 3 errors"
    assert progress_line("x", 0, 0, 0.0) == "x 0/0 rows (100%), 0.00 rows/s, done in 0:00"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_meter_throttles_but_never_drops_the_last_line():
    clock, lines = Clock(), []
    meter = Meter("[generate]", lines.append, total=100, unit="requests", interval_s=5, clock=clock)
    for done in range(1, 100):
        clock.t += 0.5  # an update every half second: a line at most every 5 s
        meter.update(done)
    clock.t += 0.5
    assert meter.update(100) is True
    assert len(lines) == 11  # first update, one per 5 s over 49.5 s, and the final one
    assert lines[0].startswith("[generate] 1/100 requests (1%)")
    assert lines[-1] == "[generate] 100/100 requests (100%), 2.0 requests/s, done in 0:50"
    assert meter.update(100) is False  # the same final line is not repeated


def test_meter_shows_an_eta_only_once_the_rate_is_known():
    """A fake clock: 18 requests, the first done after 2.3 s (a cold start), then one every 0.5 s."""
    clock, lines = Clock(), []
    meter = Meter("[enrich]", lines.append, total=18, unit="requests", interval_s=0, clock=clock)
    clock.t += 2.3
    meter.update(1)
    for done in range(2, 18):
        clock.t += 0.5
        meter.update(done)
    with_eta = [i + 1 for i, line in enumerate(lines) if "ETA" in line]
    assert "ETA" not in lines[0]  # after one completion the rate is not known
    # the first ETA comes once ETA_MIN_DONE requests are done and ETA_MIN_SECONDS have passed
    assert with_eta[0] == 17 and lines[16].endswith("ETA 0:01")  # 10.3 s, 17 done: 1 left at 1.65/s


def test_meter_emits_when_the_total_changes():
    clock, lines = Clock(), []
    meter = Meter("m", lines.append, interval_s=60, clock=clock)
    meter.update(1, 10)
    clock.t += 1
    assert meter.update(2) is False
    assert meter.update(2, 20) is True  # more work was planned: say so at once
    assert lines[-1].startswith("m 2/20 rows (10%)")


def _printer(monkeypatch, tty: bool):
    import jobs.console as cli

    stream = io.StringIO()
    stream.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr(cli.sys, "stderr", stream)
    monkeypatch.setattr(cli, "_open_update", False)
    return cli, stream


def test_cli_printer_redraws_updates_in_place_on_a_terminal(monkeypatch):
    cli, stream = _printer(monkeypatch, tty=True)
    cli.progress(progress_line("a", 1, 4, 1.0))
    cli.progress(progress_line("a", 2, 4, 2.0))
    cli.progress("a: merged")
    cli.progress(progress_line("b", 1, 2, 1.0))
    cli.end_update_line()
    out = stream.getvalue()
    assert out == ("\r\x1b[Ka 1/4 rows (25%), 1.0 rows/s"
                   "\r\x1b[Ka 2/4 rows (50%), 1.0 rows/s\na: merged\n"
                   "\r\x1b[Kb 1/2 rows (50%), 1.0 rows/s\n")


def test_cli_printer_writes_one_line_per_update_elsewhere(monkeypatch):
    cli, stream = _printer(monkeypatch, tty=False)
    cli.progress(progress_line("a", 1, 4, 1.0))
    cli.progress(progress_line("a", 2, 4, 2.0))
    cli.progress("a: merged")
    assert stream.getvalue().splitlines() == [
        "a 1/4 rows (25%), 1.0 rows/s", "a 2/4 rows (50%), 1.0 rows/s", "a: merged"]
