""" "Try it": run one sample through a step's model once, without creating an item."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pipelines.gate import GateVerdict, gate_evaluate, input_text
from pipelines.models import AiModel, Step
from pipelines.providers import (
    CallRequest,
    ProviderError,
    ProviderSettings,
    cost_of,
    provider_for,
)
from pipelines.route import route_candidates
from pipelines.schemas import schema_errors
from pipelines.services.calls import provider_settings, run_sync
from pipelines.services.local_model import local_model_bytes
from pipelines.templating import PromptTemplateError, render_prompt

# A trial waits at most this long, whatever the provider's own timeout, so a page never hangs.
TRIAL_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Trial:
    """What one sample did: each stage's result, or the error that stopped it."""

    rendered_prompt: str = ""
    model: str = ""
    simulated: bool = False
    output: dict[str, Any] | None = None
    confidence: float | None = None
    verdict: GateVerdict | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal | None = None
    latency_ms: float | None = None
    error: str = ""
    error_class: str = ""

    @property
    def output_json(self) -> str:
        return json.dumps(self.output, indent=2, ensure_ascii=False)


def step_try(
    *,
    step: Step,
    template: str,
    parameters: Mapping[str, Any],
    data: Mapping[str, Any],
    priority: int | None = None,
    model: AiModel | None = None,
) -> Trial:
    """Render `template` with `data`, call the step's first matching model (or `model`) once,
    and judge the output with the step's gate. Nothing is written."""
    pipeline = step.pipeline
    if pipeline.input_schema:
        problems = schema_errors(schema=pipeline.input_schema, instance=dict(data), limit=3)
        if problems:
            return Trial(error="; ".join(str(p) for p in problems), error_class="input")
    try:
        prompt = render_prompt(template=template, data=data)
    except PromptTemplateError as exc:
        return Trial(error=str(exc), error_class="input")
    text = input_text(data)
    if model is None:
        entries = list(step.route.select_related("model__provider"))
        candidates = route_candidates(
            entries,
            input_chars=len(text),
            priority=pipeline.default_priority if priority is None else priority,
        )
        if not candidates:
            return Trial(
                rendered_prompt=prompt,
                error="This step has no model: set its route.",
                error_class="system",
            )
        model = candidates[0].model
    provider = model.provider
    settings = provider_settings(provider)
    request = CallRequest(
        prompt=prompt,
        model=model.name,
        parameters=dict(parameters),
        labels=tuple(step.labels) if step.kind == Step.Kind.CLASSIFY else None,
        output_schema=step.output_schema or None,
        input_text=text,
    )
    label = str(model)
    try:
        model_bytes = local_model_bytes(step=step) if provider.kind == "local" else None
        result = run_sync(_call_once(settings, model_bytes, request))
    except ProviderError as exc:
        return Trial(
            rendered_prompt=prompt, model=label, error=str(exc), error_class=str(exc.error_class)
        )
    except TimeoutError:
        return Trial(
            rendered_prompt=prompt,
            model=label,
            error_class="transient",
            error=f"no answer within {TRIAL_TIMEOUT_SECONDS} s",
        )
    verdict = gate_evaluate(
        output=result.output,
        confidence=result.confidence,
        threshold=step.confidence_threshold,
        output_schema=step.output_schema,
        rules=step.rules,
    )
    return Trial(
        rendered_prompt=prompt,
        model=label,
        simulated=result.simulated,
        output=result.output,
        confidence=result.confidence,
        verdict=verdict,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cost=cost_of(
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            input_price_per_mtok=model.input_price_per_mtok,
            output_price_per_mtok=model.output_price_per_mtok,
        ),
        latency_ms=result.latency_ms,
    )


async def _call_once(settings: ProviderSettings, model_bytes: bytes | None, request: CallRequest):
    provider = provider_for(kind=settings.kind, settings=settings, local_model_bytes=model_bytes)
    async with provider:
        return await asyncio.wait_for(provider.call(request), timeout=TRIAL_TIMEOUT_SECONDS)
