"""`taskseed sim`: run the built-in OpenAI-compatible simulator in the foreground.

Registered by jobs/cli.py:  `add_sim_parser(subparsers)` adds the sub-command, `run_sim(args)`
runs it. Defaults for the shared settings come from `SimulatorConfig`, so a standalone simulator
behaves like the one `taskseed run` starts when `endpoint.base_url` is null.
"""

from __future__ import annotations

import argparse
import logging
import os

from jobs.config import ConfigError, SimulatorConfig
from simulator import FAULT_KINDS, SimSettings, run_simulator


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
    return value


def _kind_rate(text: str) -> tuple[str, float]:
    kind, sep, rate = text.partition("=")
    if not sep or kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE with KIND one of {', '.join(FAULT_KINDS)}")
    return kind, _rate(rate)


def add_sim_parser(subparsers) -> argparse.ArgumentParser:
    """Add `sim` to the CLI's sub-parsers; every simulator setting is a flag."""
    d = SimulatorConfig()
    p = subparsers.add_parser(
        "sim",
        help="run the built-in OpenAI-compatible simulator (not a model)",
        description="Serve /v1/chat/completions and /v1/models with deterministic answers to "
                    "taskseed's prompts, realistic latency, concurrency limits, rate limits and "
                    "injected faults. It is a simulator for exercising the pipeline, not a model.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--seed", type=int, default=d.seed, help="same seed, same behaviour")
    p.add_argument("--model", default="taskseed-sim", help="model id reported by /v1/models")
    p.add_argument("--latency-ms", type=float, default=d.latency_ms, help="median service time")
    p.add_argument("--latency-jitter-ms", type=float, default=d.latency_jitter_ms)
    p.add_argument("--latency-dist", choices=("fixed", "uniform", "lognormal"), default="uniform")
    p.add_argument("--max-concurrency", type=int, default=d.max_concurrency,
                   help="requests processed at once; the rest queue")
    p.add_argument("--rate-limit-rps", type=float, default=0.0, help="token-bucket rate (0 = off); excess gets 429")
    p.add_argument("--rate-limit-burst", type=float, default=None)
    p.add_argument("--retry-after-s", type=float, default=1.0, help="Retry-After of injected 429s")
    p.add_argument("--fault-rate", type=_rate, default=d.fault_rate,
                   help=f"total injected-fault probability, split over --fault-kinds ({','.join(FAULT_KINDS)})")
    p.add_argument("--fault-kinds", default=",".join(FAULT_KINDS), help="comma-separated kinds --fault-rate covers")
    p.add_argument("--fault", type=_kind_rate, action="append", default=[], metavar="KIND=RATE",
                   help="rate of one fault kind (repeatable; overrides its share of --fault-rate)")
    p.add_argument("--hang-s", type=float, default=120.0, help="how long a 'hang' fault stalls")
    p.add_argument("--wrong-answer-rate", type=_rate, default=d.wrong_answer_rate)
    p.add_argument("--duplicate-rate", type=_rate, default=d.duplicate_rate)
    p.add_argument("--heldout-copy-rate", type=_rate, default=d.heldout_copy_rate)
    p.add_argument("--heldout-file", default=None,
                   help="JSONL of {question, choices, answer_text} that generation may copy from")
    p.add_argument("--require-key-env", default=None,
                   help="answer 401 unless requests carry the key held in this environment variable")
    p.set_defaults(func=run_sim)
    return p


def settings_from_args(args: argparse.Namespace) -> SimSettings:
    """Validated SimSettings from parsed flags (ConfigError on bad values)."""
    required_key = None
    if args.require_key_env:
        required_key = os.environ.get(args.require_key_env)
        if not required_key:
            raise ConfigError(f"--require-key-env: environment variable {args.require_key_env} is not set")
    if args.heldout_file and not os.path.isfile(args.heldout_file):
        raise ConfigError(f"--heldout-file: no such file {args.heldout_file}")
    try:
        return SimSettings(
            seed=args.seed, model=args.model, latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms, latency_dist=args.latency_dist,
            max_concurrency=args.max_concurrency, rate_limit_rps=args.rate_limit_rps,
            rate_limit_burst=args.rate_limit_burst, retry_after_s=args.retry_after_s,
            fault_rate=args.fault_rate,
            fault_kinds=tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip()),
            fault_rates=tuple(args.fault), hang_s=args.hang_s,
            wrong_answer_rate=args.wrong_answer_rate, duplicate_rate=args.duplicate_rate,
            heldout_copy_rate=args.heldout_copy_rate, heldout_file=args.heldout_file,
            require_api_key=required_key,
        ).validated()
    except ValueError as exc:
        raise ConfigError(f"sim: {exc}") from None


def run_sim(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C. Returns the process exit code."""
    settings = settings_from_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    run_simulator(args.host, args.port, settings)
    return 0
