"""What every provider shares: error classes, call values, cost arithmetic and the factory."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipelines.providers import (
    RAW_LIMIT,
    CallRequest,
    CallResult,
    ConfigurationError,
    InputError,
    ProcessingError,
    ProviderError,
    ProviderLimitError,
    ProviderSettings,
    TransientError,
    cost_of,
    provider_for,
)
from pipelines.providers.simulated import SimulatedProvider


@pytest.mark.parametrize(
    ("error", "error_class"),
    [
        (TransientError("timed out", retry_after=2.0), "transient"),
        (InputError("empty"), "input"),
        (ProcessingError("not JSON"), "processing"),
        (ProviderLimitError("quota"), "provider_limit"),
        (ConfigurationError("no key"), "system"),
    ],
)
def test_each_error_names_the_class_that_decides_the_items_fate(error, error_class):
    assert isinstance(error, ProviderError)
    assert error.error_class == error_class
    assert str(error) == error.message


def test_a_transient_error_carries_how_long_the_server_asked_us_to_wait():
    assert TransientError("429", retry_after=1.5).retry_after == 1.5
    assert TransientError("reset").retry_after is None


def test_a_processing_error_keeps_the_raw_output_and_the_tokens_to_charge():
    error = ProcessingError("bad", raw="x" * (RAW_LIMIT + 5), input_tokens=10, output_tokens=3)
    assert len(error.raw) == RAW_LIMIT
    assert (error.input_tokens, error.output_tokens) == (10, 3)


def test_a_result_keeps_at_most_ten_thousand_characters_of_raw_output():
    result = CallResult(
        output={},
        confidence=None,
        input_tokens=1,
        output_tokens=1,
        latency_ms=1.0,
        raw="y" * 20_000,
    )
    assert result.raw == "y" * 10_000


def test_a_request_takes_a_steps_label_list_and_keeps_it_immutable():
    request = CallRequest(prompt="p", model="m", labels=["a", "b"])
    assert request.labels == ("a", "b")


def test_cost_is_tokens_times_the_price_per_million_to_the_millionth():
    cost = cost_of(
        input_tokens=1234,
        output_tokens=567,
        input_price_per_mtok=Decimal("0.15"),
        output_price_per_mtok=Decimal("0.60"),
    )
    # 1234 * 0.15 / 1e6 + 567 * 0.60 / 1e6 = 0.0001851 + 0.0003402
    assert cost == Decimal("0.000525")
    assert cost.as_tuple().exponent == -6


def test_a_free_model_costs_nothing():
    zero = Decimal("0")
    cost = cost_of(
        input_tokens=10**6,
        output_tokens=10**6,
        input_price_per_mtok=zero,
        output_price_per_mtok=zero,
    )
    assert cost == Decimal("0.000000")


def test_negative_token_counts_have_no_cost():
    with pytest.raises(ValueError, match="negative"):
        cost_of(
            input_tokens=-1,
            output_tokens=0,
            input_price_per_mtok=Decimal(1),
            output_price_per_mtok=Decimal(1),
        )


def test_the_factory_builds_a_simulated_provider_from_plain_settings():
    settings = ProviderSettings(kind="simulated", simulation={"latency_ms": {"p50": 0, "p95": 0}})
    assert isinstance(provider_for(kind="simulated", settings=settings), SimulatedProvider)


def test_an_unknown_kind_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="Unknown provider kind 'carrier-pigeon'"):
        provider_for(kind="carrier-pigeon", settings=ProviderSettings(kind="carrier-pigeon"))


def test_a_kind_that_contradicts_the_settings_is_a_programming_error():
    with pytest.raises(ValueError, match="does not match"):
        provider_for(kind="local", settings=ProviderSettings(kind="simulated"))


def test_bad_simulation_settings_are_a_configuration_error_naming_the_problem():
    settings = ProviderSettings(kind="simulated", simulation={"failure_rates": {"transient": -1}})
    with pytest.raises(ConfigurationError, match=r"failure_rates.transient is negative"):
        provider_for(kind="simulated", settings=settings)
