"""Checks a command runs before it starts Spark, so a user mistake costs seconds and one line.

Starting Spark takes tens of seconds (minutes on a loaded machine); an unwritable lakehouse home,
an endpoint that is down, a wrong API key or a model name the server does not serve would
otherwise surface only after that, deep inside a stage, as a stack trace or as a ledger full of
`failed` rows. Each check raises `ConfigError` (printed by the CLI as one line, exit status 2).

- `check_home(home)`: the folder exists or can be created, and a file can be written in it
  (catches read-only mounts, permission errors, a path that is a file, a full disk).
- `check_endpoint(config, stages)`: the endpoints the ledger stages call (`endpoint`, or a stage's
  own, `Config.stage_endpoint`), each distinct one once, and each of its replicas; only configured
  ones (the built-in simulator needs no check). Resolves the API key the way the stage will (a
  missing key is an error), then `GET {base_url}/models` with it through the openai client, once
  per replica, with a short timeout (`check_replica`), one line per server:
    connection refused / DNS / timeout → "endpoint ... is unreachable";
    401 / 403 → the same message the stage's fatal-error rule gives (`udfs.llm_client.stage_fatal_reason`);
    a 200 listing models that does not include `endpoint.model` → "model ... is not served by ...",
    naming what the server does serve (the OpenAI API, vLLM, SGLang, NIM and llama.cpp all list
    their models here);
    404 on /models (gateways that do not implement the listing) and 5xx (transient) → no verdict:
    the stage itself classifies what it gets (a 404 on chat completions stops it with one line).
  A stage's endpoint with no replica that answers and serves its model stops the command (a
  ConfigError naming each); a replica that is out while others answer is one line on stderr and
  the run starts without it (the call step probes it and puts it back when it answers).
  The key is sent in the Authorization header only; no message here contains it.

- `embeddings_endpoint_problems(config)`: the same check of the paraphrase filter's embeddings
  server (`curate.paraphrase.embeddings_endpoint`) when curate calls it.
- `preflight_problems(config, stages)`: for `--dry-run`, every problem of the checks above at once
  (one line each) instead of stopping at the first.

`describe_os_error` words an OS error a user can fix; `os_error_behind` finds one behind a failure
later in a run (the disk filled, a mount turned read-only), for the CLI's one-line report.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from jobs.config import STAGE_ENDPOINT_KEYS, Config, ConfigError

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


def check_endpoint(config: Config, stages: Sequence[str] | None = None,
                   report: Callable[[str], None] | None = None) -> list[str]:
    """Preflight of the endpoints `stages` call (ledger stages: generate, enrich, judge; default
    all three): `check_stage_endpoints`. ConfigError when a stage's endpoint has no replica that
    answers; the lines about replicas that are out (the run starts without them) go to `report`
    (default: stderr) and are returned."""
    from jobs.config import LLM_STAGES

    lines = check_stage_endpoints(config, LLM_STAGES if stages is None else stages)
    for line in lines:
        (report or _to_stderr)(line)
    return lines


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ReplicaVerdict:
    """What `GET /models` said about one server: `problem` is None when it answers and serves the
    model, else one line naming the server and what is wrong (down, key rejected, model not served)."""

    base_url: str
    problem: str | None


def distinct_endpoints(config: Config, stages: Sequence[str]) -> Iterator[tuple[Any, list[str], str]]:
    """(EndpointSettings, replica base URLs, config key naming it) of each distinct configured
    endpoint the ledger `stages` call, once each (stages sharing an endpoint: the first); endpoints
    without base_url/replicas are the simulator and are skipped."""
    from udfs.llm_client import EndpointSettings

    seen: set[tuple] = set()
    for stage in dict.fromkeys(stages):
        ep = config.stage_endpoint(stage)
        if not ep.configured:
            continue
        settings = EndpointSettings.from_config(ep, require_key=bool(ep.api_key_env or ep.secret_scope))
        urls = [spec.base_url for spec in settings.replica_specs()]
        ident = (tuple(urls), settings.model, settings.api_key_env, settings.secret_scope, settings.secret_key)
        if ident in seen:
            continue
        seen.add(ident)
        yield settings, urls, STAGE_ENDPOINT_KEYS.get(stage, "endpoint") if ep != config.endpoint else "endpoint"


def check_stage_endpoints(config: Config, stages: Sequence[str]) -> list[str]:
    """Check every distinct configured endpoint (and each of its replicas) of `stages` once with
    `GET /models` (`check_replica`); endpoints without base_url/replicas are the simulator: nothing
    to check. Raises ConfigError, one line per problem, when some stage's endpoint has no replica
    that answers and serves its model; returns one line per replica that is out while others of
    its endpoint answer ("the run starts without it")."""
    from udfs.llm_client import KeyResolutionError, resolve_api_key

    fatal: list[str] = []
    out: list[str] = []
    for settings, urls, where in distinct_endpoints(config, stages):
        try:
            key = resolve_api_key(settings)
        except KeyResolutionError as exc:
            fatal.append(str(exc) if where == "endpoint" else f"{where}: {exc}")
            continue
        verdicts = [check_replica(url, settings.model, key, min(PREFLIGHT_TIMEOUT_S, settings.timeout_s), where)
                    for url in urls]
        problems = [v.problem for v in verdicts if v.problem]
        if len(problems) == len(verdicts):
            fatal.extend(problems)
        else:
            out.extend(f"{p} — the run starts without it ({len(verdicts) - len(problems)} of {len(verdicts)} "
                       f"replicas of {where} answer)" for p in problems)
    if "judge" in stages:
        fatal.extend(embeddings_endpoint_problems(config))
    if fatal:
        raise ConfigError("\n".join(dict.fromkeys(fatal)))
    return list(dict.fromkeys(out))


EMBEDDINGS_KEY = "curate.paraphrase.embeddings_endpoint"


def embeddings_endpoint_problems(config: Config) -> list[str]:
    """The paraphrase filter's embeddings server (`curate.paraphrase.embeddings_endpoint`, called by
    curate next to the judge) when the filter is on and one is configured: its key resolves and
    `GET /models` answers and lists its model (`check_replica`). One line per problem; [] when
    there is none or no server is configured (the local model needs no check)."""
    from udfs.embeddings_client import embeddings_settings
    from udfs.llm_client import KeyResolutionError, resolve_api_key

    para = config.curate.paraphrase
    if not (para.enabled and para.embeddings_endpoint):
        return []
    ee = para.embeddings_endpoint
    problems: list[str] = []
    key = None
    try:
        key = resolve_api_key(embeddings_settings(ee))
    except KeyResolutionError as exc:
        problems.append(f"{EMBEDDINGS_KEY}: {exc}")
    verdict = check_replica(ee.base_url, ee.model, key, min(PREFLIGHT_TIMEOUT_S, ee.timeout_s), EMBEDDINGS_KEY)
    if verdict.problem and not (problems and _is_key_rejection(verdict.problem)):
        problems.append(verdict.problem)
    return problems


def check_replica(url: str, model: str, key: str | None, timeout_s: float, where: str = "endpoint") -> ReplicaVerdict:
    """`GET {url}/models` once through the openai client (see the module docstring for the
    verdicts); `where` names the config key in the line."""
    import openai

    from udfs.llm_client import stage_fatal_reason

    client = openai.OpenAI(api_key=key or "no-key", base_url=url, timeout=timeout_s, max_retries=1)
    try:
        served = [m.id for m in client.models.list().data]
    except openai.APIConnectionError as exc:  # includes APITimeoutError
        cause = exc.__cause__ or exc.__context__
        reason = "timed out" if isinstance(exc, openai.APITimeoutError) else type(cause or exc).__name__
        return ReplicaVerdict(url, f"endpoint {url} is unreachable ({reason}): check {where}.base_url/replicas and "
                                   "that the server is up")
    except openai.APIStatusError as exc:
        fatal = stage_fatal_reason(f"http_{exc.status_code}") if exc.status_code in (401, 403) else None
        return ReplicaVerdict(url, f"{url}: {fatal}" if fatal else None)  # 404 / 5xx: the stage decides
    finally:
        client.close()
    if served and model not in served:
        shown = ", ".join(served[:_SHOWN_MODELS]) + (f", … ({len(served)} in all)" if len(served) > _SHOWN_MODELS else "")
        return ReplicaVerdict(url, f"model {model!r} is not served by {url} (it serves: {shown}): check {where}.model")
    return ReplicaVerdict(url, None)


def preflight_problems(config: Config, stages: Sequence[str] | None = None) -> list[str]:
    """Every problem the checks before a real run (`check_home`, `check_endpoint`) would stop it
    on, all at once, as one line each (for `--dry-run`, which sends nothing and so must say what
    the run would hit): an unwritable home; for each distinct endpoint the ledger `stages` call
    (default all), an API key that cannot be resolved (e.g. `api_key_env` names a variable that is
    not set) and, checked without the key in that case, replicas that are unreachable, reject the
    key or do not serve the model — a problem only when no replica of that endpoint answers, as
    for the real run (a 401/403 is not reported again when the key is already missing). Empty: the
    real run would pass."""
    from jobs.config import LLM_STAGES
    from udfs.llm_client import KeyResolutionError, resolve_api_key

    problems: list[str] = []
    try:
        check_home(config.home)
    except ConfigError as exc:
        problems.append(str(exc))
    for settings, urls, where in distinct_endpoints(config, LLM_STAGES if stages is None else stages):
        key, key_missing = None, False
        try:
            key = resolve_api_key(settings)
        except KeyResolutionError as exc:
            problems.append(str(exc) if where == "endpoint" else f"{where}: {exc}")
            key_missing = True
        verdicts = [check_replica(url, settings.model, key, min(PREFLIGHT_TIMEOUT_S, settings.timeout_s), where)
                    for url in urls]
        if all(v.problem for v in verdicts):
            problems.extend(v.problem for v in verdicts
                            if not (key_missing and _is_key_rejection(v.problem)))
    if "judge" in (LLM_STAGES if stages is None else stages):
        problems.extend(embeddings_endpoint_problems(config))
    return list(dict.fromkeys(problems))


def _is_key_rejection(problem: str | None) -> bool:
    from udfs.llm_client import stage_fatal_reason

    return any(problem and problem.endswith(stage_fatal_reason(f"http_{code}")) for code in (401, 403))
