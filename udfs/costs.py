"""Cost arithmetic of endpoint calls (issue 26): pure functions over token counts and prices.

Prices come from the `costs` section of the config, keyed by model id (`jobs.config.ModelPrice`):

- per token: `input_per_mtok` per 1,000,000 prompt tokens + `output_per_mtok` per 1,000,000
  completion tokens (the way hosted APIs bill);
- per GPU-hour: `gpu_hour` × `gpus` per hour of serving, and the hours a call took are its tokens
  (prompt + completion) divided by the deployment's throughput: `tokens_per_second` when given,
  else the throughput measured from the ledger (`measured_tokens_per_second`: the model's tokens
  over the wall-clock span of its calls). A self-hosted model costs its GPU time whether busy or
  not; the measured rate spreads that time over the tokens the run got out of it.

- in batch mode (OpenAI Batch API; calls with a `batch_id`): a per-token price less its
  `batch_discount` (the share taken off; OpenAI bills batches at half the online rate: 0.5). A
  GPU-hour price is the GPU's time either way: no discount.

Cost is linear in the tokens for a given price and rate, so sums of tokens per group can be priced
at once (`tokens_cost`). Token counts the server did not send (`usage` missing) are estimated by
the caller and marked so (jobs/costs.py); `estimate_tokens` is the estimate of a text.
Currency: whatever the prices are written in.
"""

from __future__ import annotations

import math
from typing import Any

CHARS_PER_TOKEN = 4  # as udfs.llm_rows: the usual rule of thumb for English with BPE tokenizers
MTOK = 1_000_000


def estimate_tokens(text: str | None) -> int:
    """Tokens of a text the server did not count: ceil(characters / CHARS_PER_TOKEN); 0 for None."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def tokens_cost(prompt_tokens: float, completion_tokens: float, price: Any,
                measured_tokens_per_second: float | None = None, batch: bool = False) -> float | None:
    """The cost of `prompt_tokens` + `completion_tokens` at `price` (a `jobs.config.ModelPrice` or
    any object with its fields); None when `price` is None (an unpriced model) or a GPU-hour price
    has no throughput (none configured, none measured). `batch`: the calls went through a Batch
    API (a per-token price less `price.batch_discount`). ValueError for negative token counts."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got {prompt_tokens}, {completion_tokens}")
    if price is None:
        return None
    if getattr(price, "gpu_hour", None) is not None:
        rate = getattr(price, "tokens_per_second", None) or measured_tokens_per_second
        if not rate:
            return None
        return price.gpu_hour * getattr(price, "gpus", 1) * (prompt_tokens + completion_tokens) / rate / 3600.0
    online = (prompt_tokens * (price.input_per_mtok or 0.0) + completion_tokens * (price.output_per_mtok or 0.0)) / MTOK
    return online * (1.0 - getattr(price, "batch_discount", 0.0)) if batch else online


def ratio(part: float | None, whole: float | None) -> float | None:
    """part / whole, None when either is None or whole is 0."""
    if part is None or not whole:
        return None
    return part / whole
