"""What every provider shares: the error classes, the request and result of one call, cost
arithmetic, the `Provider` interface and the factory that builds one from plain settings.

No ORM here: the engine (batches under asyncio) and the "try it" panel both build a
`ProviderSettings` from a Provider row and pass plain values in."""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from types import TracebackType
from typing import Any, ClassVar

# Reviewers read the raw output; anything longer is a runaway generation, not evidence.
RAW_LIMIT = 10_000

_MILLION = Decimal(1_000_000)
_MICRO = Decimal("0.000001")


class ErrorClass(enum.StrEnum):
    """The five error classes of DESIGN.md; each decides what happens to the item."""

    TRANSIENT = "transient"
    INPUT = "input"
    PROCESSING = "processing"
    SYSTEM = "system"
    PROVIDER_LIMIT = "provider_limit"


class ProviderError(Exception):
    """A failed model call, with the error class that decides what happens to the item."""

    # A failure nobody classified stops the pipeline and alerts rather than retrying blindly.
    error_class: ClassVar[str] = ErrorClass.SYSTEM

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TransientError(ProviderError):
    """Timeout, connection reset, 429 or 5xx: retried with backoff, honouring retry_after."""

    error_class = ErrorClass.TRANSIENT

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InputError(ProviderError):
    """The item itself cannot be processed: quarantined at once and never retried."""

    error_class = ErrorClass.INPUT


class ProcessingError(ProviderError):
    """Invalid model output or a content-policy refusal: the item goes to review.

    The call happened, so it carries the raw output for the reviewer and the tokens to charge."""

    error_class = ErrorClass.PROCESSING

    def __init__(
        self, message: str, *, raw: str = "", input_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        super().__init__(message)
        self.raw = raw[:RAW_LIMIT]
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


class ProviderLimitError(ProviderError):
    """Quota or budget exhausted at the provider, its rate limit reached or its circuit breaker
    open: items wait (`retry_after` seconds when known) or take the fallback model."""

    error_class = ErrorClass.PROVIDER_LIMIT

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(ProviderError):
    """Bad configuration (missing API key variable, unknown model): alert and pause."""

    error_class = ErrorClass.SYSTEM


@dataclass(frozen=True)
class CallRequest:
    """One model call: the rendered prompt and what the step expects back."""

    prompt: str
    model: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    # Set for classify steps; None for generate steps.
    labels: tuple[str, ...] | None = None
    output_schema: dict[str, Any] | None = None
    # What the local classifier reads; LLMs read the prompt instead.
    input_text: str = ""

    def __post_init__(self) -> None:
        # Step.labels is a JSON list; a tuple keeps the request immutable.
        if self.labels is not None and not isinstance(self.labels, tuple):
            object.__setattr__(self, "labels", tuple(self.labels))


@dataclass(frozen=True)
class CallResult:
    """What a call returned, with the numbers the ledger and the rollups need."""

    output: dict[str, Any]
    confidence: float | None
    input_tokens: int
    output_tokens: int
    latency_ms: float
    raw: str = ""
    simulated: bool = False

    def __post_init__(self) -> None:
        if len(self.raw) > RAW_LIMIT:
            object.__setattr__(self, "raw", self.raw[:RAW_LIMIT])


def cost_of(
    *,
    input_tokens: int,
    output_tokens: int,
    input_price_per_mtok: Decimal,
    output_price_per_mtok: Decimal,
) -> Decimal:
    """Return the price of a call in the model's currency, to the millionth."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts cannot be negative")
    total = (
        Decimal(input_tokens) * Decimal(input_price_per_mtok)
        + Decimal(output_tokens) * Decimal(output_price_per_mtok)
    ) / _MILLION
    return total.quantize(_MICRO, rounding=ROUND_HALF_UP)


class Provider(abc.ABC):
    """Calls one provider. Bound to the event loop it is first used in: build one per loop."""

    kind: ClassVar[str]

    @abc.abstractmethod
    async def call(self, request: CallRequest) -> CallResult:
        """Run one call; raise a ProviderError subclass for every failure."""

    async def aclose(self) -> None:
        """Release connections and threads; the provider is unusable afterwards."""
        return None

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Kind(enum.StrEnum):
    """Provider kinds; the same values as pipelines.models.Provider.Kind."""

    LOCAL = "local"
    OPENAI = "openai"
    SIMULATED = "simulated"


@dataclass(frozen=True)
class ProviderSettings:
    """The fields of a Provider row that a call needs, as plain values."""

    kind: str
    base_url: str = ""
    api_key_env: str = ""
    timeout_seconds: float = 30.0
    max_concurrency: int = 16
    simulation: Mapping[str, Any] = field(default_factory=dict)


def provider_for(
    *, kind: str, settings: ProviderSettings, local_model_bytes: bytes | None = None
) -> Provider:
    """Build the provider for `kind`; raise ConfigurationError when it cannot be used."""
    if kind != settings.kind:
        raise ValueError(f"kind {kind!r} does not match the settings' kind {settings.kind!r}")
    if settings.max_concurrency < 1:
        raise ConfigurationError("max_concurrency must be at least 1")
    if settings.timeout_seconds <= 0:
        raise ConfigurationError("timeout_seconds must be above 0")
    # Imported here so that reading the error classes does not load scikit-learn or the SDK.
    if kind == Kind.LOCAL:
        from pipelines.providers.local import LocalProvider

        if local_model_bytes is None:
            raise ConfigurationError(
                "This step has no trained local model yet: add labeled examples and train it."
            )
        return LocalProvider(
            model_bytes=local_model_bytes, max_concurrency=settings.max_concurrency
        )
    if kind == Kind.OPENAI:
        from pipelines.providers.openai_compat import OpenAICompatProvider

        return OpenAICompatProvider(settings=settings)
    if kind == Kind.SIMULATED:
        from pipelines.providers.simulated import SimulatedProvider

        return SimulatedProvider(
            simulation=settings.simulation, max_concurrency=settings.max_concurrency
        )
    known = ", ".join(k.value for k in Kind)
    raise ConfigurationError(f"Unknown provider kind {kind!r}; expected one of {known}.")
