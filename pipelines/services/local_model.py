"""The local classifier of a step: trained on its labeled examples (uploaded, and those reviewers'
decisions add), stored as a TrainedModel so every worker runs the same one, and trained again
when the examples change: on a schedule, and at once by the first worker that needs it."""

from __future__ import annotations

import time

from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Max

from pipelines.gate import input_text
from pipelines.models import RouteEntry, Step, TrainedModel
from pipelines.providers import ConfigurationError, InputError, ProviderLimitError
from pipelines.services.evaluation import MAX_EXAMPLES, MIN_EXAMPLES

# Trained models kept per step (the newest serves; the others show the history).
KEEP = 3
# How long one worker may hold the right to train a step before another may try.
TRAINING_LOCK_SECONDS = 600


def _stats(step: Step) -> tuple[int, int | None]:
    stats = step.examples.aggregate(n=Count("id"), last=Max("id"))
    return stats["n"], stats["last"]


def _latest(step: Step) -> TrainedModel | None:
    return step.trained_models.defer("content").first()


def local_model_current(step: Step) -> bool:
    """Whether the newest trained model was trained on the examples the step has now."""
    latest = _latest(step)
    n, last = _stats(step)
    return latest is not None and (latest.examples, latest.last_example_id) == (n, last)


def local_model_train(*, step: Step) -> TrainedModel:
    """Train the step's classifier on its newest examples (at most MAX_EXAMPLES) and store it;
    ConfigurationError when the examples cannot train one."""
    from pipelines.providers.local import local_train

    n, last = _stats(step)
    if step.kind != Step.Kind.CLASSIFY or n < MIN_EXAMPLES:
        raise ConfigurationError(
            f"The local model of this step trains on its labeled examples: add at least "
            f"{MIN_EXAMPLES} (it has {n})."
        )
    rows = list(step.examples.order_by("-id").values_list("data", "expected")[:MAX_EXAMPLES])
    started = time.perf_counter()
    try:
        content = local_train(
            texts=[input_text(data) for data, _ in rows],
            labels=[str(expected.get("label", "")) for _, expected in rows],
        )
    except InputError as exc:
        raise ConfigurationError(f"The local model cannot be trained: {exc}") from exc
    elapsed = time.perf_counter() - started
    with transaction.atomic():
        trained = TrainedModel.objects.create(
            step=step,
            content=content,
            examples=n,
            last_example_id=last,
            labels=sorted({str(expected.get("label", "")) for _, expected in rows}),
            training_seconds=round(elapsed, 3),
        )
        old = step.trained_models.order_by("-id").values_list("id", flat=True)[KEEP:]
        TrainedModel.objects.filter(pk__in=list(old)).delete()
    return trained


def local_model_bytes(*, step: Step) -> bytes:
    """The step's trained classifier to run now. When its examples changed since the newest
    model, one worker trains a new one at once while the others keep the current model; with
    no model at all, the others wait for it (ProviderLimitError: the items wait, nothing fails).
    ConfigurationError when the step cannot have a local model."""
    latest = _latest(step)
    n, last = _stats(step)
    current = latest is not None and (latest.examples, latest.last_example_id) == (n, last)
    if not current and n >= MIN_EXAMPLES and step.kind == Step.Kind.CLASSIFY:
        lock = f"local-train:{step.pk}:{n}:{last}"
        if cache.add(lock, 1, timeout=TRAINING_LOCK_SECONDS):
            try:
                latest = local_model_train(step=step)
            finally:
                cache.delete(lock)
        elif latest is None:
            raise ProviderLimitError(
                "The local model of this step is being trained; the item waits for it.",
                retry_after=10,
            )
    if latest is None:
        local_model_train(step=step)  # raises the reason it cannot be trained
        latest = _latest(step)
    # PostgreSQL hands a binary column back as a memoryview, SQLite as bytes.
    return bytes(TrainedModel.objects.values_list("content", flat=True).get(pk=latest.pk))


def local_models_refresh() -> int:
    """Train again every local-model step whose examples changed since its newest model (the
    schedule's work: reviewers' decisions keep adding examples). Returns how many trained."""
    steps = Step.objects.filter(
        kind=Step.Kind.CLASSIFY,
        pk__in=RouteEntry.objects.filter(model__provider__kind="local").values("step_id"),
    )
    trained = 0
    for step in steps:
        if local_model_current(step) or _stats(step)[0] < MIN_EXAMPLES:
            continue
        lock = f"local-train:{step.pk}:refresh"
        if not cache.add(lock, 1, timeout=TRAINING_LOCK_SECONDS):
            continue
        try:
            local_model_train(step=step)
            trained += 1
        except ConfigurationError:
            continue
        finally:
            cache.delete(lock)
    return trained
