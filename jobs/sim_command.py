"""`taskseed sim`: the built-in OpenAI-compatible simulator as a command. Every simulator setting
is a flag; a flag left out takes the config's `simulator.*` value, so a standalone simulator
behaves like the one `taskseed run` starts when `endpoint.base_url` is null. The simulator itself
is simulator/."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from jobs.config import Config, ConfigError, EndpointConfig, SimulatorConfig

def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
    return value


def _kind_rate(text: str) -> tuple[str, float]:
    from simulator import FAULT_KINDS

    kind, sep, rate = text.partition("=")
    if not sep or kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE with KIND one of {', '.join(FAULT_KINDS)}")
    return kind, _rate(rate)


def add_sim_parser(subparsers) -> argparse.ArgumentParser:
    """`taskseed sim`: every simulator setting is a flag; a flag left out takes the config's
    `simulator.*` value (defaults in jobs.config.SimulatorConfig), so a standalone simulator
    behaves like the one `taskseed run` starts when `endpoint.base_url` is null."""
    from simulator import DEFAULT_FAULT_KINDS, FAULT_KINDS

    d = SimulatorConfig()
    p = subparsers.add_parser(
        "sim",
        help="run the built-in OpenAI-compatible simulator (not a model)",
        description="Serve /v1/chat/completions and /v1/models with deterministic answers to "
                    "taskseed's prompts, realistic latency, concurrency limits, rate limits and "
                    "injected faults. It is a simulator for exercising the pipeline, not a model. "
                    "Flags left out take the config's simulator.* values.",
    )

    def config_flag(flag: str, help_text: str, **kwargs) -> None:
        key = flag.lstrip("-").replace("-", "_")
        p.add_argument(flag, default=None, help=f"{help_text} (simulator.{key}, default {getattr(d, key)})", **kwargs)

    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    config_flag("--seed", "same seed, same behaviour", type=int)
    p.add_argument("--model", default=None, help="model id reported by /v1/models (default: endpoint.model)")
    config_flag("--latency-ms", "median service time", type=float)
    config_flag("--latency-jitter-ms", "spread of the service time", type=float)
    config_flag("--latency-dist", "service time distribution", choices=("fixed", "uniform", "lognormal"))
    config_flag("--max-concurrency", "requests processed at once; the rest queue", type=int)
    config_flag("--rate-limit-rps", "token-bucket rate (0 = off); excess gets 429", type=float)
    config_flag("--rate-limit-burst", "token-bucket size", type=float)
    config_flag("--retry-after-s", "Retry-After of injected 429s", type=float)
    config_flag("--fault-rate", "total injected-fault probability, split over --fault-kinds", type=_rate)
    p.add_argument("--fault-kinds", default=None,
                   help=f"comma-separated kinds --fault-rate covers (default {','.join(DEFAULT_FAULT_KINDS)}; "
                        f"all: {','.join(FAULT_KINDS)})")
    p.add_argument("--fault", type=_kind_rate, action="append", default=[], metavar="KIND=RATE",
                   help="rate of one fault kind (repeatable; overrides its share of --fault-rate)")
    config_flag("--hang-s", "how long a 'hang' fault stalls", type=float)
    config_flag("--wrong-answer-rate", "probability of a deliberately wrong answer", type=_rate)
    config_flag("--duplicate-rate", "probability of a duplicate generated item", type=_rate)
    config_flag("--heldout-copy-rate", "probability of copying a held-out item", type=_rate)
    config_flag("--seed-copy-rate", "probability of a generated item that is its seed's question with the gold "
                                    "answer changed", type=_rate)
    config_flag("--prompt-leak-rate", "probability of a generated item that repeats a sentence of its prompt",
                type=_rate)
    config_flag("--self-reference-rate", "probability of a trivial self-referential generated item", type=_rate)
    config_flag("--heldout-file", "JSONL of {question, choices, answer_text} that generation may copy from")
    config_flag("--reasoning", "reasoning output like vLLM/SGLang reasoning parsers: split = thoughts in the "
                               "reasoning field and the answer in content; only = everything in the reasoning "
                               "field, content null", choices=("off", "split", "only"))
    config_flag("--reasoning-field", "the message field reasoning text goes in",
                choices=("reasoning_content", "reasoning"))
    config_flag("--reject-json-schema", "answer requests with response_format json_schema with this HTTP error "
                                        "status (e.g. 400 or 500, as llama.cpp servers do; 0 = accept)", type=int)
    config_flag("--batch-seconds", "Batch API: simulated seconds from a batch's creation to completed", type=float)
    config_flag("--batch-expire-rate", "Batch API: share of batches that expire (seeded per input file)", type=_rate)
    config_flag("--batch-error-rate", "Batch API: share of a batch's lines that go to its error file", type=_rate)
    p.add_argument("--require-key-env", default=None,
                   help="answer 401 unless requests carry the key held in this environment variable")
    p.set_defaults(handler=cmd_sim)
    return p


_SIM_FLAGS = ("seed", "latency_ms", "latency_jitter_ms", "latency_dist", "max_concurrency", "rate_limit_rps",
              "rate_limit_burst", "retry_after_s", "fault_rate", "hang_s", "wrong_answer_rate", "duplicate_rate",
              "heldout_copy_rate", "seed_copy_rate", "prompt_leak_rate", "self_reference_rate", "heldout_file",
              "reasoning", "reasoning_field", "reject_json_schema", "batch_seconds", "batch_expire_rate",
              "batch_error_rate")


def settings_from_args(args: argparse.Namespace, sim_config: SimulatorConfig | None = None,
                       model: str | None = None):
    """Validated `simulator.SimSettings`: the flags given, else `sim_config`'s values (default
    SimulatorConfig()), the model from --model, else `model`, else endpoint.model's default.
    ConfigError on bad values."""
    from simulator import SimSettings

    overrides: dict[str, Any] = {k: getattr(args, k) for k in _SIM_FLAGS if getattr(args, k, None) is not None}
    overrides["model"] = args.model or model or EndpointConfig().model
    if args.fault_kinds is not None:
        overrides["fault_kinds"] = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip())
    overrides["fault_rates"] = tuple(args.fault)
    if args.require_key_env:
        overrides["require_api_key"] = os.environ.get(args.require_key_env)
        if not overrides["require_api_key"]:
            raise ConfigError(f"--require-key-env: environment variable {args.require_key_env} is not set")
    heldout_file = overrides.get("heldout_file") or (sim_config.heldout_file if sim_config else None)
    if heldout_file and not os.path.isfile(heldout_file):
        raise ConfigError(f"--heldout-file: no such file {heldout_file}")
    try:
        return SimSettings.from_config(sim_config or SimulatorConfig(), **overrides).validated()
    except ValueError as exc:
        raise ConfigError(f"sim: {exc}") from None


def cmd_sim(args, config: Config) -> int:
    """Serve until Ctrl-C."""
    from simulator import run_simulator

    settings = settings_from_args(args, config.simulator, config.endpoint.model)
    # one `taskseed sim` answers every stage of the config: it lists each stage endpoint's model too
    from dataclasses import replace

    from jobs.config import LLM_STAGES

    others = tuple(dict.fromkeys(m for m in (config.stage_endpoint(s).model for s in LLM_STAGES)
                                 if m != settings.model))
    settings = replace(settings, served_models=tuple(dict.fromkeys((*settings.served_models, *others))))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    run_simulator(args.host, args.port, settings)
    return 0
