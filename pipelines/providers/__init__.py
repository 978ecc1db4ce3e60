"""Model providers: the local classifier, OpenAI-compatible servers and the simulation, behind one
async interface. `provider_for` builds one from plain settings; nothing here touches the ORM.

Only the shared names are imported here, so that reading an error class does not load
scikit-learn or the openai SDK; import `local`, `openai_compat` or `simulated` for the rest."""

from __future__ import annotations

from pipelines.providers.base import (
    RAW_LIMIT,
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
    ProviderSettings,
    TransientError,
    cost_of,
    provider_for,
)

__all__ = [
    "RAW_LIMIT",
    "CallRequest",
    "CallResult",
    "ConfigurationError",
    "ErrorClass",
    "InputError",
    "Kind",
    "ProcessingError",
    "Provider",
    "ProviderError",
    "ProviderLimitError",
    "ProviderSettings",
    "TransientError",
    "cost_of",
    "provider_for",
]
