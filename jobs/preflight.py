"""Checks a command runs before it starts Spark, so a user mistake costs seconds and one line.

Starting Spark takes tens of seconds (minutes on a loaded machine); an unwritable lakehouse home,
an endpoint that is down, a wrong API key or a model name the server does not serve would
otherwise surface only after that, deep inside a stage, as a stack trace or as a ledger full of
`failed` rows. Each check raises `ConfigError` (printed by the CLI as one line, exit status 2).

- `check_home(home)`: the folder exists or can be created, and a file can be written in it
  (catches read-only mounts, permission errors, a path that is a file, a full disk).
- `check_endpoint(config)`: only for a configured endpoint (`endpoint.base_url`; the built-in
  simulator needs no check). Resolves the API key the way the stage will (a missing key is an
  error), then `GET {base_url}/models` with it through the openai client, once, with a short
  timeout:
    connection refused / DNS / timeout → "endpoint ... is unreachable";
    401 / 403 → the same message the stage's fatal-error rule gives (`udfs.llm_client.stage_fatal_reason`);
    a 200 listing models that does not include `endpoint.model` → "model ... is not served by ...",
    naming what the server does serve (the OpenAI API, vLLM, SGLang, NIM and llama.cpp all list
    their models here);
    404 on /models (gateways that do not implement the listing) and 5xx (transient) → no verdict:
    the stage itself classifies what it gets (a 404 on chat completions stops it with one line).
  The key is sent in the Authorization header only; no message here contains it.

`describe_os_error` words an OS error a user can fix; `os_error_behind` finds one behind a failure
later in a run (the disk filled, a mount turned read-only), for the CLI's one-line report.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from jobs.config import Config, ConfigError

PREFLIGHT_TIMEOUT_S = 10.0
_SHOWN_MODELS = 5
# OS errors that are the user's to fix (space, mounts, permissions): one line, not a traceback.
USER_FIXABLE_ERRNOS = frozenset(e for e in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                                            getattr(errno, "EDQUOT", None)) if e is not None)


def check_home(home: str | Path) -> None:
    """ConfigError unless `home` is a folder taskseed can create and write in."""
    path = Path(home)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".taskseed-write-check-") as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise ConfigError(f"lakehouse home {path} is not writable: {describe_os_error(exc)} "
                          "(choose another folder with --home or `home:` in the config)") from None


def describe_os_error(exc: OSError) -> str:
    """`strerror` plus a hint for the errors a user can fix (disk full, read-only, permissions)."""
    text = exc.strerror or type(exc).__name__
    hints = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
             errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
             errno.ENOTDIR: "a part of the path is a file, not a folder"}
    if getattr(errno, "EDQUOT", None) is not None:
        hints[errno.EDQUOT] = "the disk quota is exceeded"
    hint = hints.get(exc.errno)
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{text}{where}" + (f": {hint}" if hint and hint.lower() != text.lower() else "")


# OS errors a stage can run into once the disk fills or a mount turns read-only, recognised in the
# text of what Spark, Delta, Hadoop or a Python worker raised (the JVM's IOException carries libc's
# strerror, the same text as Python's): strerror → errno. SQLite (MLflow's local store) says
# "database or disk is full" for SQLITE_FULL.
_DISK_STATE_TEXTS = {os.strerror(e): e for e in (errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", None))
                     if e is not None}
_DISK_STATE_TEXTS["database or disk is full"] = errno.ENOSPC


def os_error_behind(exc: BaseException) -> tuple[OSError, BaseException] | None:
    """The user-fixable OS error behind a failure, and the exception in `exc`'s chain (`__cause__`,
    `__context__`) that shows it, or None. An exception shows one when it is an `OSError` whose errno
    is in USER_FIXABLE_ERRNOS, or when its message or JVM stack trace (PySpark's `_stackTrace`)
    names a full disk, a read-only file system or an exceeded quota (see _DISK_STATE_TEXTS): a
    Delta write failing with `java.io.IOException: No space left on device`, a Python worker's
    `OSError: [Errno 28]`, MLflow's SQLite store full. The exception furthest down the chain wins:
    the first failure, not a later cleanup (MLflow ending its run as FAILED) failing the same way."""
    best: tuple[int, OSError, BaseException] | None = None
    seen: set[int] = set()
    stack: list[tuple[BaseException, int]] = [(exc, 0)]
    while stack:
        current, depth = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        err = _os_error_shown_by(current)
        if err is not None and (best is None or depth > best[0]):
            best = (depth, err, current)
        for linked in (current.__context__, current.__cause__):
            if linked is not None:
                stack.append((linked, depth + 1))
    return (best[1], best[2]) if best else None


def _os_error_shown_by(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError) and exc.errno in USER_FIXABLE_ERRNOS:
        return exc
    try:  # str() of a Py4J error asks the JVM for its stack trace; a dead JVM must not hide the rest
        text = f"{exc}\n{getattr(exc, '_stackTrace', None) or ''}"
    except Exception:
        return None
    for needle, code in _DISK_STATE_TEXTS.items():
        if needle in text:
            return OSError(code, os.strerror(code))
    return None


def check_endpoint(config: Config) -> None:
    """ConfigError when the configured endpoint is unreachable, rejects the key, or does not serve
    `endpoint.model` (see the module docstring for what gives no verdict). No-op for the simulator."""
    if not config.endpoint.base_url:
        return
    import openai

    from udfs.llm_client import EndpointSettings, KeyResolutionError, resolve_api_key, stage_fatal_reason

    ep = config.endpoint
    settings = EndpointSettings.from_config(ep, require_key=bool(ep.api_key_env or ep.secret_scope))
    try:
        key = resolve_api_key(settings)
    except KeyResolutionError as exc:
        raise ConfigError(str(exc)) from None
    url = settings.base_url
    client = openai.OpenAI(api_key=key or "no-key", base_url=url, timeout=min(PREFLIGHT_TIMEOUT_S, settings.timeout_s),
                           max_retries=1)
    try:
        served = [m.id for m in client.models.list().data]
    except openai.APIConnectionError as exc:  # includes APITimeoutError
        cause = exc.__cause__ or exc.__context__
        reason = "timed out" if isinstance(exc, openai.APITimeoutError) else type(cause or exc).__name__
        raise ConfigError(f"endpoint {url} is unreachable ({reason}): check endpoint.base_url and that the "
                          "server is up") from None
    except openai.APIStatusError as exc:
        fatal = stage_fatal_reason(f"http_{exc.status_code}") if exc.status_code in (401, 403) else None
        if fatal:
            raise ConfigError(f"{url}: {fatal}") from None
        return  # 404 (no model listing) or a transient error: the stage decides
    finally:
        client.close()
    if served and settings.model not in served:
        shown = ", ".join(served[:_SHOWN_MODELS]) + (f", … ({len(served)} in all)" if len(served) > _SHOWN_MODELS else "")
        raise ConfigError(f"model {settings.model!r} is not served by {url} (it serves: {shown}): "
                          "check endpoint.model")


def preflight_problems(config: Config) -> list[str]:
    """Every problem the checks before a real run (`check_home`, `check_endpoint`) would stop it
    on, all at once, as one line each (for `--dry-run`, which sends nothing and so must say what
    the run would hit): an unwritable home; an API key that cannot be resolved (e.g.
    `endpoint.api_key_env` names a variable that is not set); and, checked without the key in that
    case, an endpoint that is unreachable, rejects the key or does not serve the model (a 401/403
    is not reported again when the key is already missing). Empty: the real run would pass."""
    from udfs.llm_client import EndpointSettings, KeyResolutionError, resolve_api_key

    problems: list[str] = []
    try:
        check_home(config.home)
    except ConfigError as exc:
        problems.append(str(exc))
    ep = config.endpoint
    if not ep.base_url:
        return problems
    probe, key_missing = config, False
    try:
        resolve_api_key(EndpointSettings.from_config(ep, require_key=bool(ep.api_key_env or ep.secret_scope)))
    except KeyResolutionError as exc:
        problems.append(str(exc))
        key_missing = True
        keyless = ep.model_copy(update={"api_key_env": None, "secret_scope": None, "secret_key": None})
        probe = config.model_copy(update={"endpoint": keyless})
    try:
        check_endpoint(probe)
    except ConfigError as exc:
        from udfs.llm_client import stage_fatal_reason

        rejected = {f"{EndpointSettings.from_config(ep).base_url}: {stage_fatal_reason(f'http_{code}')}"
                    for code in (401, 403)}
        if not (key_missing and str(exc) in rejected):
            problems.append(str(exc))
    return problems
