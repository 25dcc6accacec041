"""Cost arithmetic (udfs/costs.py) and the `costs` config section (issue 26)."""

from __future__ import annotations

import pytest

from jobs.config import ConfigError, ModelPrice, load_config
from udfs.costs import estimate_tokens, ratio, tokens_cost


@pytest.mark.parametrize("price, p, c, rate, expected", [
    ({"input_per_mtok": 0.6, "output_per_mtok": 2.4}, 1_000_000, 500_000, None, 0.6 + 1.2),
    ({"input_per_mtok": 3.0}, 2_000, 1_000, None, 0.006),                       # output free
    ({"gpu_hour": 2.0, "tokens_per_second": 1000.0}, 1_800_000, 1_800_000, None, 2.0),  # 3.6M tokens = 1 hour
    ({"gpu_hour": 2.0, "gpus": 4}, 360_000, 0, 100.0, 8.0),                      # measured rate: 1 hour × 4 GPUs
    ({"gpu_hour": 2.0, "tokens_per_second": 1000.0}, 3_600_000, 0, 10.0, 2.0),   # configured rate wins
    ({"gpu_hour": 2.0}, 1_000, 0, None, None),                                   # no rate: unknown
    (None, 1_000, 1_000, None, None),                                            # no price: unknown
])
def test_tokens_cost(price, p, c, rate, expected):
    cost = tokens_cost(p, c, ModelPrice(**price) if price else None, rate)
    assert cost == (pytest.approx(expected) if expected is not None else None)


def test_tokens_cost_is_linear_so_sums_can_be_priced_at_once():
    price = ModelPrice(input_per_mtok=0.15, output_per_mtok=0.6)
    parts = [(120, 80), (3_000, 17), (0, 512)]
    assert sum(tokens_cost(p, c, price) for p, c in parts) == pytest.approx(
        tokens_cost(sum(p for p, _ in parts), sum(c for _, c in parts), price))
    with pytest.raises(ValueError):
        tokens_cost(-1, 0, price)


def test_estimates_and_ratios():
    assert (estimate_tokens(None), estimate_tokens(""), estimate_tokens("abcde")) == (0, 0, 2)
    assert (ratio(1.0, 4), ratio(1.0, 0), ratio(None, 3)) == (0.25, None, None)


@pytest.mark.parametrize("override, message", [
    ("costs={m: {input_per_mtok: 1, gpu_hour: 2}}", "one kind of price"),
    ("costs={m: {}}", "one kind of price"),
    ("costs={m: {input_per_mtok: -1}}", "greater than or equal to 0"),
    ("costs={m: {gpu_hour: 1, tokens_per_second: 0}}", "greater than 0"),
    ("curate.min_agreement=1.5", "min_agreement"),
    ("curate.min_agreement={auto: 1.5}", r"curate.min_agreement: .*\{auto: <target"),
    ("curate.min_agreement={target: 0.9}", "curate.min_agreement: .*must be a share"),
    ("curate.min_agreement=auto", "curate.min_agreement: .*must be a share"),
])
def test_config_rejects_bad_prices_and_agreement(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_config_min_agreement_forms():
    assert load_config(overrides=["curate.min_agreement={auto: 0.95}"]).curate.auto_target == 0.95
    fixed = load_config(overrides=["curate.min_agreement=0.75"]).curate
    assert (fixed.fixed_min_agreement, fixed.auto_target) == (0.75, None)
    assert load_config().curate.fixed_min_agreement is None


@pytest.mark.parametrize("discount,expected", [(0.5, 0.5), (0.0, 1.0), (1.0, 0.0), (0.25, 0.75)])
def test_a_batch_call_costs_the_per_token_price_less_the_batch_discount(discount, expected):
    from jobs.config import ModelPrice

    price = ModelPrice(input_per_mtok=2.0, output_per_mtok=8.0, batch_discount=discount)
    online = tokens_cost(1_000_000, 500_000, price)
    assert online == pytest.approx(6.0)
    assert tokens_cost(1_000_000, 500_000, price, batch=True) == pytest.approx(6.0 * expected)


def test_a_gpu_hour_price_has_no_batch_discount():
    from jobs.config import ModelPrice

    price = ModelPrice(gpu_hour=3.6, tokens_per_second=1000.0)
    assert tokens_cost(1_000_000, 0, price, batch=True) == tokens_cost(1_000_000, 0, price) == pytest.approx(1.0)
