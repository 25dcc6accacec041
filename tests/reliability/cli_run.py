"""Run the `taskseed` console script in a subprocess, as a user would, and read what it printed."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TASKSEED = str(Path(sys.executable).with_name("taskseed"))


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """stderr lines that are neither Spark/Ivy start-up chatter nor progress lines."""
        return [line for line in self.stderr.splitlines() if line.startswith("taskseed: error:")]


def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid` (a process started with `start_new_session=True` has sid =
    its pid; its JVM and PySpark's daemon and workers inherit it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # field 6 of /proc/pid/stat: session id
                pids.append(int(entry.name))
    return pids


def run_cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 900, cwd: str | Path | None = None
            ) -> CliResult:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([TASKSEED, *argv], capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=cwd)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_clear_line(result: CliResult, *, must_mention: str, status: int = 2, only_line: bool = True) -> str:
    """The user-mistake contract: exit `status`, exactly one `taskseed: error:` message mentioning
    `must_mention` (a config with several invalid keys lists them on indented lines below it), and
    no Python traceback anywhere in the output. `only_line`: that message is all that was printed
    (the mistake was caught before Spark started). Returns the message."""
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]
    assert result.returncode == status, (result.returncode, result.stderr[-3000:])
    assert len(result.error_lines) == 1, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    start = lines.index(result.error_lines[0])
    end = start + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    message = "\n".join(lines[start:end])
    if only_line:
        assert [line for line in lines if line.strip()] == lines[start:end], result.stderr[-3000:]
    assert must_mention.lower() in message.lower(), message
    return message
