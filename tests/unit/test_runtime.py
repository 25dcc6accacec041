"""The Java check gives one clear sentence instead of Spark's JAVA_GATEWAY_EXITED trace."""

import os
import stat

import pytest

from jobs.config import ConfigError
from jobs.runtime import java_major_version, require_java


def _fake_java(tmp_path, version_line: str):
    bin_dir = tmp_path / "jdk" / "bin"
    bin_dir.mkdir(parents=True)
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return tmp_path / "jdk"


@pytest.mark.parametrize(
    "line, major",
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "11.0.2" 2019-01-15', 11),
    ],
)
def test_java_version_is_read_from_java_home(tmp_path, monkeypatch, line, major):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, line)))
    assert java_major_version() == major


def test_old_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, 'openjdk version "11.0.2" 2019-01-15')))
    with pytest.raises(ConfigError, match="needs Java 17 or newer, found Java 11"):
        require_java()


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="Java 17 is required by Spark but no `java` was found"):
        require_java()


def test_this_machine_has_java_17_or_newer():
    assert (java_major_version() or 0) >= 17, os.environ.get("JAVA_HOME")
