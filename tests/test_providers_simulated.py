"""The simulated provider: seeded, with failure rates and latencies that match its settings.

Latency is recorded through an injected sleep, so thousands of calls take no real time."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pipelines.providers import (
    CallRequest,
    CallResult,
    ConfigurationError,
    ProviderError,
    ProviderSettings,
    provider_for,
)
from pipelines.providers.simulated import SimulatedProvider, lognormal_fit, simulation_problems


def run[T](coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own: the browser tests' Playwright keeps an event loop
    running in the main thread for the whole session, and asyncio.run will not nest in it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


LABELS = ("billing", "shipping", "account")


class RecordedSleep:
    """Stands in for asyncio.sleep: remembers each duration and returns at once."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def simulated(simulation: dict[str, Any], sleep: RecordedSleep | None = None) -> SimulatedProvider:
    return SimulatedProvider(simulation=simulation, sleep=sleep or RecordedSleep())


def classify(number: int) -> CallRequest:
    return CallRequest(prompt=f"Ticket {number}: where is my order?", model="sim", labels=LABELS)


def outcomes(provider: SimulatedProvider, requests: list[CallRequest]) -> list[Any]:
    """Each call's result, or its error class and message, in order."""

    async def call_each() -> list[Any]:
        seen: list[Any] = []
        for request in requests:
            try:
                seen.append(await provider.call(request))
            except ProviderError as error:
                seen.append((error.error_class, error.message))
        return seen

    return run(call_each())


CHAOS = {
    "latency_ms": {"p50": 400, "p95": 1200},
    "failure_rates": {"transient": 0.1, "provider_limit": 0.05, "processing": 0.02},
    "seed": 42,
}


def test_the_same_seed_gives_the_same_latencies_failures_and_answers():
    requests = [classify(i) for i in range(200)]
    first_sleep, second_sleep = RecordedSleep(), RecordedSleep()
    first = outcomes(simulated(CHAOS, first_sleep), requests)
    second = outcomes(simulated(CHAOS, second_sleep), requests)
    assert first == second
    assert first_sleep.seconds == second_sleep.seconds
    assert any(isinstance(outcome, tuple) for outcome in first)


def test_a_different_seed_gives_a_different_run():
    requests = [classify(i) for i in range(50)]
    first = outcomes(simulated(CHAOS), requests)
    second = outcomes(simulated(CHAOS | {"seed": 43}), requests)
    assert first != second


def test_a_retried_item_gets_the_same_label_and_confidence():
    provider = simulated({"seed": 7})
    first, again = outcomes(provider, [classify(1), classify(1)])
    assert first.output == again.output
    assert first.confidence == again.confidence


def test_labels_are_picked_evenly_across_items():
    results = outcomes(simulated({"seed": 1}), [classify(i) for i in range(3000)])
    counts = Counter(result.output["label"] for result in results)
    assert set(counts) == set(LABELS)
    for label in LABELS:
        assert abs(counts[label] / 3000 - 1 / 3) < 0.04, counts


def test_confidence_follows_the_configured_beta_distribution():
    results = outcomes(
        simulated({"seed": 3, "confidence": {"alpha": 3, "beta": 1}}),
        [classify(i) for i in range(2000)],
    )
    confidences = [result.confidence for result in results]
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert statistics.fmean(confidences) == pytest.approx(3 / 4, abs=0.02)


def test_failure_rates_are_honoured_over_two_thousand_calls():
    rates = {"transient": 0.1, "provider_limit": 0.05, "processing": 0.02, "input": 0.01}
    simulation = {"latency_ms": {"p50": 0, "p95": 0}, "failure_rates": rates, "seed": 5}
    sleep = RecordedSleep()
    calls = 2000
    seen = outcomes(simulated(simulation, sleep), [classify(i) for i in range(calls)])
    failures = Counter(outcome[0] for outcome in seen if isinstance(outcome, tuple))
    for error_class, rate in rates.items():
        # Four binomial standard deviations: a correct simulation almost never strays further.
        tolerance = 4 * math.sqrt(calls * rate * (1 - rate))
        assert abs(failures[error_class] - calls * rate) <= tolerance, failures
    assert failures["system"] == 0
    assert sum(isinstance(outcome, CallResult) for outcome in seen) == calls - failures.total()
    assert set(sleep.seconds) == {0.0}


def test_each_simulated_failure_has_the_error_class_it_was_configured_for():
    simulation = {"latency_ms": {"p50": 0, "p95": 0}, "failure_rates": {"system": 1.0}}
    with pytest.raises(ConfigurationError, match="Simulated system failure"):
        run(simulated(simulation).call(classify(1)))


def test_latency_percentiles_are_near_the_configured_p50_and_p95():
    sleep = RecordedSleep()
    simulation = {"latency_ms": {"p50": 400, "p95": 1200}, "seed": 11}
    results = outcomes(simulated(simulation, sleep), [classify(i) for i in range(4000)])
    latencies = sorted(seconds * 1000 for seconds in sleep.seconds)
    cuts = statistics.quantiles(latencies, n=100)
    assert cuts[49] == pytest.approx(400, rel=0.08)
    assert cuts[94] == pytest.approx(1200, rel=0.12)
    # A result reports the latency it simulated, not the time the stand-in sleep took.
    assert [result.latency_ms for result in results] == pytest.approx(
        [seconds * 1000 for seconds in sleep.seconds]
    )


def test_the_lognormal_fit_puts_the_median_and_95th_percentile_where_asked():
    mu, sigma = lognormal_fit(p50=400, p95=1200)
    assert math.exp(mu) == pytest.approx(400)
    assert math.exp(mu + 1.6448536 * sigma) == pytest.approx(1200)


def test_by_default_it_really_waits_for_the_drawn_latency():
    settings = ProviderSettings(kind="simulated", simulation={"latency_ms": {"p50": 30, "p95": 30}})
    provider = provider_for(kind="simulated", settings=settings)
    started = time.perf_counter()
    result = run(provider.call(classify(1)))
    assert time.perf_counter() - started >= 0.025
    assert result.latency_ms == pytest.approx(30)


def test_a_generate_step_gets_an_object_that_fills_the_required_fields():
    schema = {
        "type": "object",
        "properties": {
            "vendor": {"type": "string"},
            "total": {"type": "number"},
            "currency": {"type": "string", "enum": ["EUR", "USD"]},
            "lines": {"type": "array"},
            "note": {"type": "string"},
        },
        "required": ["vendor", "total", "currency", "lines"],
    }
    request = CallRequest(prompt="Extract the invoice.", model="sim", output_schema=schema)
    (result,) = outcomes(simulated({"seed": 1}), [request])
    assert result.output == {"vendor": "simulated", "total": 0, "currency": "EUR", "lines": []}
    assert result.simulated
    assert 0.0 <= result.confidence <= 1.0


def test_a_generate_step_without_a_schema_gets_text():
    (result,) = outcomes(simulated({}), [CallRequest(prompt="Summarise.", model="sim")])
    assert result.output == {"text": "simulated"}


def test_token_counts_come_from_the_settings_or_else_from_the_prompt():
    request = CallRequest(prompt="x" * 400, model="sim", labels=LABELS)
    (fixed,) = outcomes(simulated({"tokens": {"input": 900, "output": 12}}), [request])
    (derived,) = outcomes(simulated({}), [request])
    assert (fixed.input_tokens, fixed.output_tokens) == (900, 12)
    assert derived.input_tokens == 100
    assert derived.output_tokens >= 1


def test_every_result_is_marked_simulated():
    results = outcomes(simulated({"seed": 2}), [classify(i) for i in range(20)])
    assert all(result.simulated for result in results)


@pytest.mark.parametrize(
    ("simulation", "problem"),
    [
        ([1, 2], "Simulation settings must be a JSON object."),
        ({"latency": {}}, 'Unknown simulation setting "latency"; expected "latency_ms", '),
        ({"failure_rates": {"transient": -0.1}}, "failure_rates.transient is negative (-0.1)."),
        ({"failure_rates": {"transient": 1.5}}, "failure_rates.transient is above 1 (1.5)."),
        (
            {"failure_rates": {"transient": 0.7, "processing": 0.5}},
            "The failure rates add up to 1.2, more than 1.",
        ),
        ({"failure_rates": {"timeout": 0.1}}, 'Unknown error class "timeout" in failure_rates'),
        ({"failure_rates": {"transient": True}}, "failure_rates.transient must be a number"),
        (
            {"latency_ms": {"p50": 500, "p95": 100}},
            "latency_ms.p95 (100) is below latency_ms.p50 (500).",
        ),
        ({"latency_ms": {"p95": 100}}, "latency_ms.p95 (100) is below latency_ms.p50 (300)."),
        ({"latency_ms": {"p50": 0, "p95": 100}}, "latency_ms.p50 is 0, so latency_ms.p95 must"),
        ({"latency_ms": {"p50": "fast"}}, "latency_ms.p50 must be a number, not 'fast'."),
        ({"latency_ms": {"p99": 5}}, 'Unknown key "p99" in latency_ms'),
        ({"tokens": {"input": 1.5}}, "tokens.input must be a whole number, not 1.5."),
        ({"tokens": {"output": -3}}, "tokens.output is negative (-3)."),
        ({"confidence": {"alpha": 0}}, "confidence.alpha must be above 0 (0)."),
        ({"seed": "lucky"}, "seed must be a whole number, not 'lucky'."),
    ],
)
def test_simulation_problems_say_what_is_wrong(simulation, problem):
    problems = simulation_problems(simulation)
    assert any(found.startswith(problem) for found in problems), problems


@pytest.mark.parametrize(
    "simulation",
    [
        {},
        CHAOS,
        {"latency_ms": {"p50": 600, "p95": 2000}, "failure_rates": {"transient": 0.02}},
        {"tokens": {"input": 10, "output": 2}, "confidence": {"alpha": 2, "beta": 5}, "seed": 0},
    ],
)
def test_usable_settings_have_no_problems(simulation):
    assert simulation_problems(simulation) == []
