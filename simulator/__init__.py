"""The taskseed simulator: an OpenAI-compatible HTTP server that is not a model (see server.py)."""

from simulator.server import (
    FAULT_KINDS,
    SimSettings,
    SimulatorProcess,
    SimulatorServer,
    SimulatorState,
    approx_tokens,
    build_app,
    free_port,
    parse_contract,
    run_simulator,
    sim_answer,
    sim_truth,
)

__all__ = [
    "FAULT_KINDS", "SimSettings", "SimulatorProcess", "SimulatorServer", "SimulatorState", "approx_tokens",
    "build_app", "free_port", "parse_contract", "run_simulator", "sim_answer", "sim_truth",
]
