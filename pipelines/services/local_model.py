"""The local classifier of a step, trained on its labeled examples."""

from __future__ import annotations

from django.core.cache import cache
from django.db.models import Count, Max

from pipelines.gate import input_text
from pipelines.models import Step
from pipelines.providers import ConfigurationError
from pipelines.services.evaluation import MAX_EXAMPLES, MIN_EXAMPLES


def local_model_bytes(*, step: Step) -> bytes:
    """The local classifier of a step, trained on its examples; cached until they change."""
    from pipelines.providers.local import local_train

    stats = step.examples.aggregate(n=Count("id"), last=Max("id"))
    if step.kind != Step.Kind.CLASSIFY or stats["n"] < MIN_EXAMPLES:
        raise ConfigurationError(
            f"The local model of this step trains on its labeled examples: add at least "
            f"{MIN_EXAMPLES} (it has {stats['n']})."
        )
    key = f"local-model:{step.pk}:{stats['n']}:{stats['last']}"
    model = cache.get(key)
    if model is None:
        rows = list(step.examples.order_by("-id").values_list("data", "expected")[:MAX_EXAMPLES])
        model = local_train(
            texts=[input_text(data) for data, _ in rows],
            labels=[str(expected.get("label", "")) for _, expected in rows],
        )
        cache.set(key, model, timeout=3600)
    return model
