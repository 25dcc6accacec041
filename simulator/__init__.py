"""The taskseed simulator: an OpenAI-compatible HTTP server that is not a model.

- settings.py  `SimSettings` (latency, concurrency, rate limits, fault rates) and the seeded hashes
               every random decision comes from;
- contract.py  what it answers: deterministic JSON for taskseed's prompts (pure functions);
- server.py    how it serves: aiohttp app, queueing, faults, in-thread / child-process servers;
- batch_files.py / batch_api.py  `vllm run-batch` over files, and the OpenAI Batch API (/v1/files, /v1/batches).
"""

from simulator.contract import approx_tokens, parse_contract, sim_answer, sim_thought, sim_truth
from simulator.server import SimulatorProcess, SimulatorServer, SimulatorState, build_app, free_port, run_simulator
from simulator.settings import DEFAULT_FAULT_KINDS, FAULT_KINDS, REASONING_MODES, SimSettings

__all__ = [
    "DEFAULT_FAULT_KINDS", "FAULT_KINDS", "REASONING_MODES", "SimSettings", "SimulatorProcess", "SimulatorServer", "SimulatorState", "approx_tokens",
    "build_app", "free_port", "parse_contract", "run_simulator", "sim_answer", "sim_thought", "sim_truth",
]
