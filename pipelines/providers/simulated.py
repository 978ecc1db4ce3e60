"""The simulated provider: realistic latency, failures of every error class and token counts, for
load and chaos tests and for demonstrating failure handling. Its results say simulated=True.

Settings (all optional; the defaults are in brackets):
    {"latency_ms": {"p50": 300, "p95": 1000},
     "failure_rates": {"transient": 0, "provider_limit": 0, "processing": 0, "input": 0,
                       "system": 0},
     "tokens": {"input": n, "output": m},        [derived from the prompt and the output]
     "confidence": {"alpha": 8, "beta": 2},      [mean 0.8]
     "seed": 42}                                 [unseeded]

A prompt version may carry `{"simulation": {"failure_rates": …, "latency_ms": …}}` in its
parameters: those calls fail and take as long as it says instead, so two versions of a step
behave differently (a candidate with a higher error rate, for rollout demos and tests).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from statistics import NormalDist
from typing import Any, ClassVar

from pipelines.providers.base import (
    CallRequest,
    CallResult,
    ConfigurationError,
    ErrorClass,
    InputError,
    Kind,
    ProcessingError,
    Provider,
    ProviderError,
    ProviderLimitError,
    TransientError,
)

DEFAULT_LATENCY_MS = {"p50": 300, "p95": 1000}
DEFAULT_CONFIDENCE = {"alpha": 8, "beta": 2}
SIMULATION_KEYS = ("latency_ms", "failure_rates", "tokens", "confidence", "seed")
# What a prompt version's parameters may override per call.
PER_VERSION_KEYS = ("latency_ms", "failure_rates")
FAILURE_CLASSES = tuple(error_class.value for error_class in ErrorClass)

_Z95 = NormalDist().inv_cdf(0.95)
# Schemas nest; a self-referencing one must not recurse forever.
_MAX_SCHEMA_DEPTH = 8

Sleep = Callable[[float], Awaitable[object]]


def lognormal_fit(*, p50: float, p95: float) -> tuple[float, float]:
    """Return (mu, sigma) of the lognormal whose median is p50 and 95th percentile is p95.

    ln(latency) is normal, so its median is exp(mu) and its 95th percentile exp(mu + z95 sigma):
    mu = ln p50 and sigma = ln(p95 / p50) / z95 match both exactly. Latencies are right-skewed and
    never negative, which is why a lognormal fits them where a normal would not."""
    if p50 <= 0:
        return -math.inf, 0.0
    return math.log(p50), math.log(p95 / p50) / _Z95


def simulation_problems(sim: object) -> list[str]:
    """Return what is wrong with simulation settings, one sentence each; empty when usable."""
    if not isinstance(sim, Mapping):
        return ["Simulation settings must be a JSON object."]
    problems = [
        f'Unknown simulation setting "{key}"; expected {_one_of(SIMULATION_KEYS)}.'
        for key in sim
        if key not in SIMULATION_KEYS
    ]
    if "latency_ms" in sim:
        problems += _latency_problems(sim["latency_ms"])
    if "failure_rates" in sim:
        problems += _rate_problems(sim["failure_rates"])
    if "tokens" in sim:
        problems += _numbers_problems(
            sim["tokens"], "tokens", ("input", "output"), integer=True, positive=False
        )
    if "confidence" in sim:
        problems += _numbers_problems(
            sim["confidence"], "confidence", ("alpha", "beta"), integer=False, positive=True
        )
    if "seed" in sim and not _is_integer(sim["seed"]):
        problems.append(f"seed must be a whole number, not {sim['seed']!r}.")
    return problems


def _one_of(names: tuple[str, ...]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _latency_problems(latency: object) -> list[str]:
    problems = _numbers_problems(
        latency, "latency_ms", ("p50", "p95"), integer=False, positive=False
    )
    if problems or not isinstance(latency, Mapping):
        return problems
    p50 = latency.get("p50", DEFAULT_LATENCY_MS["p50"])
    p95 = latency.get("p95", DEFAULT_LATENCY_MS["p95"])
    if p95 < p50:
        problems.append(f"latency_ms.p95 ({p95}) is below latency_ms.p50 ({p50}).")
    elif p50 == 0 and p95 > 0:
        problems.append("latency_ms.p50 is 0, so latency_ms.p95 must be 0 too.")
    return problems


def _rate_problems(rates: object) -> list[str]:
    if not isinstance(rates, Mapping):
        return ["failure_rates must be a JSON object of error class to rate."]
    problems = []
    for name, rate in rates.items():
        if name not in FAILURE_CLASSES:
            problems.append(
                f'Unknown error class "{name}" in failure_rates; '
                f"expected {_one_of(FAILURE_CLASSES)}."
            )
        elif not _is_number(rate):
            problems.append(f"failure_rates.{name} must be a number, not {rate!r}.")
        elif rate < 0:
            problems.append(f"failure_rates.{name} is negative ({rate}).")
        elif rate > 1:
            problems.append(f"failure_rates.{name} is above 1 ({rate}).")
    if not problems:
        total = sum(rates.values())
        if total > 1 + 1e-9:
            problems.append(f"The failure rates add up to {total:g}, more than 1.")
    return problems


def _numbers_problems(
    value: object, name: str, keys: tuple[str, ...], *, integer: bool, positive: bool
) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{name} must be a JSON object with {_one_of(keys)}."]
    problems = []
    for key, number in value.items():
        if key not in keys:
            problems.append(f'Unknown key "{key}" in {name}; expected {_one_of(keys)}.')
        elif integer and not _is_integer(number):
            problems.append(f"{name}.{key} must be a whole number, not {number!r}.")
        elif not _is_number(number):
            problems.append(f"{name}.{key} must be a number, not {number!r}.")
        elif positive and number <= 0:
            problems.append(f"{name}.{key} must be above 0 ({number}).")
        elif number < 0:
            problems.append(f"{name}.{key} is negative ({number}).")
    return problems


def _failure(error_class: str, *, input_tokens: int) -> ProviderError:
    if error_class == ErrorClass.TRANSIENT:
        return TransientError("Simulated transient failure: the provider timed out.")
    if error_class == ErrorClass.PROVIDER_LIMIT:
        return ProviderLimitError("Simulated provider limit: the quota is exhausted.")
    if error_class == ErrorClass.PROCESSING:
        return ProcessingError(
            "Simulated processing failure: the model's output is not valid JSON.",
            raw='{"simulated": ',
            input_tokens=input_tokens,
            output_tokens=3,
        )
    if error_class == ErrorClass.INPUT:
        return InputError("Simulated input error: the item cannot be processed.")
    return ConfigurationError("Simulated system failure.")


def _fake(schema: object, depth: int = 0) -> Any:
    """The simplest value a schema accepts: required strings "simulated", numbers 0."""
    if not isinstance(schema, Mapping) or depth > _MAX_SCHEMA_DEPTH:
        return "simulated"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        required = required if isinstance(required, list) else []
        return {
            name: _fake(properties.get(name, {}), depth + 1)
            for name in required
            if isinstance(name, str)
        }
    if kind in ("number", "integer"):
        minimum = schema.get("minimum")
        return minimum if _is_number(minimum) else 0
    return {"array": [], "boolean": False, "null": None}.get(kind, "simulated")


class SimulatedProvider(Provider):
    """Answers like a model would, after a drawn latency, failing at the configured rates.

    With a seed the sequence of latencies and failures repeats run after run; the label and
    confidence depend only on the seed, model and prompt, so a retried item gets the same answer."""

    kind: ClassVar[str] = Kind.SIMULATED

    def __init__(
        self,
        *,
        simulation: Mapping[str, Any],
        max_concurrency: int = 16,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        problems = simulation_problems(simulation)
        if problems:
            raise ConfigurationError("Simulation settings: " + " ".join(problems))
        latency = {**DEFAULT_LATENCY_MS, **simulation.get("latency_ms", {})}
        self._mu, self._sigma = lognormal_fit(p50=latency["p50"], p95=latency["p95"])
        self._rates = [
            (error_class, float(simulation.get("failure_rates", {}).get(error_class, 0)))
            for error_class in FAILURE_CLASSES
        ]
        self._tokens = dict(simulation.get("tokens", {}))
        confidence = {**DEFAULT_CONFIDENCE, **simulation.get("confidence", {})}
        self._alpha, self._beta = float(confidence["alpha"]), float(confidence["beta"])
        self._seed = simulation.get("seed")
        self._rng = random.Random(self._seed)
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(max_concurrency)

    def _draw_latency_ms(self, fit: tuple[float, float] | None = None) -> float:
        mu, sigma = fit or (self._mu, self._sigma)
        if mu == -math.inf:
            return 0.0
        return self._rng.lognormvariate(mu, sigma)

    def _draw_failure(self, rates: list[tuple[str, float]] | None = None) -> str | None:
        draw, cumulative = self._rng.random(), 0.0
        for error_class, rate in rates or self._rates:
            cumulative += rate
            if draw < cumulative:
                return error_class
        return None

    def _per_version(
        self, override: object
    ) -> tuple[list[tuple[str, float]] | None, tuple[float, float] | None]:
        """The failure rates and latency fit a prompt version's parameters ask for, if any."""
        if override is None:
            return None, None
        problems = simulation_problems(override)
        if isinstance(override, Mapping):
            problems += [
                f'A prompt version may only set {_one_of(PER_VERSION_KEYS)}, not "{key}".'
                for key in override
                if key in SIMULATION_KEYS and key not in PER_VERSION_KEYS
            ]
        if problems:
            raise ConfigurationError("The prompt version's simulation: " + " ".join(problems))
        rates = fit = None
        if "failure_rates" in override:
            rates = [
                (error_class, float(override["failure_rates"].get(error_class, 0)))
                for error_class in FAILURE_CLASSES
            ]
        if "latency_ms" in override:
            latency = {**DEFAULT_LATENCY_MS, **override["latency_ms"]}
            fit = lognormal_fit(p50=latency["p50"], p95=latency["p95"])
        return rates, fit

    async def call(self, request: CallRequest) -> CallResult:
        """Sleep a drawn latency, then fail at the configured rates or answer."""
        rates, fit = self._per_version(request.parameters.get("simulation"))
        # Both draws happen on every call so one outcome never shifts the next call's latency.
        failure = self._draw_failure(rates)
        latency_ms = self._draw_latency_ms(fit)
        async with self._semaphore:
            await self._sleep(latency_ms / 1000)
        input_tokens = int(self._tokens.get("input", max(1, math.ceil(len(request.prompt) / 4))))
        if failure is not None:
            raise _failure(failure, input_tokens=input_tokens)

        # A string seed goes through SHA-512, so this is stable across processes and runs.
        answer = random.Random(f"{self._seed}\x00{request.model}\x00{request.prompt}")
        if request.labels is not None:
            if not request.labels:
                raise ConfigurationError("A classify step needs at least one label.")
            output: dict[str, Any] = {"label": answer.choice(request.labels)}
        else:
            fake = _fake(request.output_schema) if request.output_schema else None
            output = fake if isinstance(fake, dict) else {"text": "simulated"}
        raw = json.dumps(output)
        return CallResult(
            output=output,
            confidence=answer.betavariate(self._alpha, self._beta),
            input_tokens=input_tokens,
            output_tokens=int(self._tokens.get("output", max(1, math.ceil(len(raw) / 4)))),
            latency_ms=latency_ms,
            raw=raw,
            simulated=True,
        )
