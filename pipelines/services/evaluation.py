"""Evidence for choosing a threshold: how confident the model is, and how often it is right."""

from __future__ import annotations

from django.core.cache import cache
from django.db.models import Count, Max

from pipelines.gate import input_text
from pipelines.models import Step
from pipelines.threshold import Outcome

# Cross-validation trains the local model `folds` times; beyond this many examples the newest
# are a fair sample and the page stays quick.
MAX_EXAMPLES = 20_000
MIN_EXAMPLES = 10


def step_outcomes(*, step: Step) -> tuple[list[Outcome], str]:
    """Out-of-fold outcomes (confidence, correct) of the local model on a classify step's
    examples, and a sentence saying where they come from. Cached until the examples change."""
    from pipelines.providers.local import local_cross_validated

    if step.kind != Step.Kind.CLASSIFY:
        return [], (
            "The threshold tool reads the local model's cross-validated confidence on labeled "
            "examples, so it needs a classify step."
        )
    stats = step.examples.aggregate(n=Count("id"), last=Max("id"))
    if stats["n"] < MIN_EXAMPLES:
        return [], f"Upload at least {MIN_EXAMPLES} labeled examples (this step has {stats['n']})."
    key = f"threshold-outcomes:{step.pk}:{stats['n']}:{stats['last']}"
    cached = cache.get(key)
    if cached is None:
        rows = list(step.examples.order_by("-id").values_list("data", "expected")[:MAX_EXAMPLES])
        texts = [input_text(data) for data, _ in rows]
        labels = [str(expected.get("label", "")) for _, expected in rows]
        predictions = local_cross_validated(texts=texts, labels=labels)
        cached = [(conf, truth == predicted) for truth, predicted, conf in predictions]
        cache.set(key, cached, timeout=3600)
    outcomes = [Outcome(confidence=conf, correct=ok) for conf, ok in cached]
    source = (
        f"Cross-validated predictions of the local model on {len(outcomes)} labeled examples "
        f"(each predicted by a model that did not see it)."
    )
    return outcomes, source
