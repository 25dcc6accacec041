"""Progress with rates and an ETA for long steps, through the `progress(str)` callbacks stages take.

Stages never print: they call the `progress` callback they were given (jobs.stage.quiet by
default; the CLI's printer writes stderr). This module makes the lines those callbacks receive:

- `progress_line(label, done, total, elapsed_s, unit)`: one line, "ingest: normalizing 120/400
  tasks (30%), 3.2 tasks/s, ETA 1:27" (pure; the ETA assumes the rate so far holds).
- `Meter`: the same for a step that reports its own counts (micro-batches of an LLM stage, SQL
  models of curate); it throttles to one line per `interval_s` and always emits the last one.
- `spark_counter(spark)` + `accumulator_progress(counter, label, progress, total, unit)`: for a step
  that is one big Spark action (ingest's normalization), counts the user's units (benchmark rows
  read) that executors add to an accumulator, polled from a daemon thread, through a Meter. Spark tasks
  are never the unit: "0/4 tasks" next to benchmark tasks reads as the wrong thing (issue 29).
  Without a SparkContext (Spark Connect, Databricks serverless) it reports nothing.

Lines are `ProgressLine` strings: a printer that knows its terminal may redraw them in place
(the CLI does on a TTY); anywhere else they are ordinary lines.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterator


class ProgressLine(str):
    """A progress update (superseded by the next one), as opposed to a message to keep."""


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 item`, `0 items`, `2,000 items`; `many` for irregular plurals (`plural(2, "family",
    "families")`). The one plural rule of every line and card taskseed prints (English: n == 1 is
    singular)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def format_duration(seconds: float | None) -> str:
    """`0:07`, `12:30`, `1:02:03`; `?` when unknown (no rate yet) or not finite."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


# An ETA is shown only once the rate is known: after ETA_MIN_DONE completions and ETA_MIN_SECONDS
# seconds. Before that the first completions (a warming JVM, the first micro-batch, a slow start of
# the endpoint) give wild ETAs ("ETA 42:56" for 18 requests, issue 29).
ETA_MIN_DONE = 5
ETA_MIN_SECONDS = 10.0


def eta_seconds(done: float, total: float | None, elapsed_s: float, min_done: float = ETA_MIN_DONE,
                min_seconds: float = ETA_MIN_SECONDS) -> float | None:
    """Seconds left if the mean rate so far holds: (total - done) / (done / elapsed). None when
    the total is unknown or the rate is not known yet (fewer than `min_done` done or less than
    `min_seconds` elapsed); 0 when done >= total."""
    if total is None or elapsed_s <= 0:
        return None
    if done >= total:
        return 0.0
    if done <= 0 or done < min_done or elapsed_s < min_seconds:
        return None
    return (total - done) * elapsed_s / done


def _rate_text(rate: float) -> str:
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 1 else f"{rate:.2f}"


def progress_line(label: str, done: int, total: int | None, elapsed_s: float, unit: str = "rows",
                  extra: str = "") -> ProgressLine:
    """`<label> <done>/<total> <unit> (<pct>%), <rate> <unit>/s, ETA <h:mm:ss>[, <extra>]`;
    without a total: `<label> <done> <unit>, <rate> <unit>/s, elapsed <h:mm:ss>`. The ETA is left
    out until the rate is known (`eta_seconds`); when done reaches the total it is replaced by the
    elapsed time."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if total is None:
        text = f"{label} {done} {unit}, {_rate_text(rate)} {unit}/s, elapsed {format_duration(elapsed_s)}"
    else:
        pct = 100.0 * done / total if total else 100.0
        eta = eta_seconds(done, total, elapsed_s)
        tail = (f", done in {format_duration(elapsed_s)}" if done >= total
                else f", ETA {format_duration(eta)}" if eta is not None else "")
        text = f"{label} {done}/{total} {unit} ({pct:.0f}%), {_rate_text(rate)} {unit}/s{tail}"
    return ProgressLine(f"{text}, {extra}" if extra else text)


class Meter:
    """Rate and ETA of one step, reported through `progress` at most once per `interval_s`.

    `update(done, total=None, extra="")` records the counts and emits a line when the interval
    has passed, when the total changed, or when done reaches the total (that last line is never
    dropped). `clock` is injectable for tests."""

    def __init__(self, label: str, progress: Callable[[str], None], total: int | None = None,
                 unit: str = "rows", interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.label, self.progress, self.total, self.unit = label, progress, total, unit
        self.interval_s, self.clock = interval_s, clock
        self.started = clock()
        self.done = 0
        self._last_emit: float | None = None
        self._last_line: str | None = None

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def update(self, done: int, total: int | None = None, extra: str = "") -> bool:
        """Record progress; → whether a line was emitted."""
        changed_total = total is not None and total != self.total
        if total is not None:
            self.total = total
        self.done = done
        now = self.clock()
        finished = self.total is not None and done >= self.total
        due = self._last_emit is None or now - self._last_emit >= self.interval_s
        if not (due or finished or changed_total):
            return False
        line = progress_line(self.label, done, self.total, now - self.started, self.unit, extra)
        if finished and line == self._last_line:
            return False
        self._last_emit, self._last_line = now, line
        self.progress(line)
        return True


def spark_counter(spark) -> Any:
    """A Spark accumulator (starting at 0) for executors to `add()` finished units of work to, for
    `accumulator_progress`; None without a SparkContext (Spark Connect, Databricks serverless)."""
    try:
        return spark.sparkContext.accumulator(0)
    except Exception:  # noqa: BLE001 - no SparkContext: no progress, never a failure
        return None


@contextlib.contextmanager
def accumulator_progress(counter, label: str, progress: Callable[[str], None], total: int, unit: str = "rows",
                         interval_s: float = 5.0, poll_s: float = 0.5) -> Iterator[Meter | None]:
    """Report `done/total <unit>` of the Spark action run inside the block in the user's units
    (benchmark rows, not Spark tasks): `counter` is a `spark_counter` the executors `add()` their
    finished units of work to (its value reaches the driver as each Spark task ends); a daemon
    thread polls it into a Meter. A retried Spark task can add twice, so the count is capped at
    `total`; a block that printed a line ends with the complete one. counter None: nothing."""
    if counter is None:
        yield None
        return
    meter = Meter(label, progress, total=total, unit=unit, interval_s=interval_s)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(poll_s):
            with contextlib.suppress(Exception):
                done = min(int(counter.value), total)
                if 0 < done < total:  # nothing finished yet: nothing to say (the caller announced the step)
                    meter.update(done)

    watcher = threading.Thread(target=poll, name="taskseed-progress", daemon=True)
    watcher.start()
    try:
        yield meter
    finally:
        stop.set()
        watcher.join(timeout=5)
    if meter._last_line is not None and meter.done < total:
        meter.update(total)
