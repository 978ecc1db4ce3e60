"""Access-checked reads of pipelines and items: scoped to the clients the user may see."""

from __future__ import annotations

from django.db import models
from django.db.models import Q, QuerySet
from django.http import Http404

from controlplane.selectors import client_list_for_user
from pipelines.models import (
    AiModel,
    Evaluation,
    Example,
    Item,
    ItemUpload,
    Pipeline,
    PromptVersion,
    Provider,
    Rollout,
    Step,
)


def pipeline_list_for_user(*, user) -> QuerySet[Pipeline]:
    """Pipelines of the clients the user may see."""
    return Pipeline.objects.filter(client__in=client_list_for_user(user=user)).select_related(
        "client"
    )


def pipeline_get_for_user(*, user, client_slug: str, slug: str) -> Pipeline:
    """One pipeline; 404 when it does not exist or belongs to a client the user may not see."""
    try:
        return pipeline_list_for_user(user=user).get(client__slug=client_slug, slug=slug)
    except Pipeline.DoesNotExist:
        raise Http404("No such pipeline") from None


def item_list_for_user(*, user) -> QuerySet[Item]:
    return Item.objects.filter(pipeline__client__in=client_list_for_user(user=user))


def item_get_for_user(*, user, pk: int) -> Item:
    """One item with its pipeline and client; 404 outside the user's clients."""
    try:
        return item_list_for_user(user=user).select_related("pipeline__client").get(pk=pk)
    except Item.DoesNotExist:
        raise Http404("No such item") from None


def step_get_for_user(*, user, pk: int) -> Step:
    """One step with its pipeline and client; 404 outside the user's clients."""
    try:
        return (
            Step.objects.filter(pipeline__in=pipeline_list_for_user(user=user))
            .select_related("pipeline__client")
            .get(pk=pk)
        )
    except Step.DoesNotExist:
        raise Http404("No such step") from None


def prompt_version_list(*, step: Step) -> list[PromptVersion]:
    """Every version of a step's prompt, newest first, each with `label_names`."""
    labels: dict[int, list[str]] = {}
    for label in step.prompt_labels.all():
        labels.setdefault(label.version_id, []).append(label.name)
    versions = list(step.prompt_versions.select_related("author"))
    for version in versions:
        version.label_names = sorted(labels.get(version.pk, []), reverse=True)
    return versions


def prompt_version_get(*, step: Step, number: int) -> PromptVersion:
    try:
        return step.prompt_versions.get(number=number)
    except PromptVersion.DoesNotExist:
        raise Http404("No such prompt version") from None


def prompt_label_version(*, step: Step, label: str) -> PromptVersion | None:
    """The version a label points at, or None."""
    found = step.prompt_labels.filter(name=label).select_related("version").first()
    return found.version if found else None


def provider_list() -> QuerySet[Provider]:
    return Provider.objects.prefetch_related("models")


def provider_get(*, pk: int) -> Provider:
    try:
        return Provider.objects.get(pk=pk)
    except Provider.DoesNotExist:
        raise Http404("No such provider") from None


def aimodel_list(*, active_only: bool = True) -> QuerySet[AiModel]:
    models = AiModel.objects.select_related("provider")
    return models.filter(is_active=True) if active_only else models


def example_list(
    *, step: Step, query: str = "", before: int | None = None, limit: int = 50
) -> QuerySet[Example]:
    """A step's examples, newest first; `query` searches the input and expected output text."""
    examples = step.examples.order_by("-id")
    if query:
        examples = examples.filter(Q(data__icontains=query) | Q(expected__icontains=query))
    if before is not None:
        examples = examples.filter(pk__lt=before)
    return examples[:limit]


def item_upload_list(*, pipeline: Pipeline, limit: int = 5) -> QuerySet[ItemUpload]:
    """A pipeline's latest uploads, newest first, without their files."""
    return pipeline.uploads.defer("content").select_related("created_by").order_by("-id")[:limit]


def item_upload_get(*, pipeline: Pipeline, pk: int) -> ItemUpload:
    """One upload of the pipeline, without its file; 404 for another pipeline's."""
    try:
        return pipeline.uploads.defer("content").select_related("created_by").get(pk=pk)
    except ItemUpload.DoesNotExist:
        raise Http404("No such upload") from None


def sample_data(*, step: Step) -> dict:
    """Something to try a prompt on: the newest item of the pipeline, else the newest example,
    else one empty string per input-schema property."""
    item = step.pipeline.items.order_by("-id").values_list("data", flat=True).first()
    if item is not None:
        return item
    example = step.examples.order_by("-id").values_list("data", flat=True).first()
    if example is not None:
        return example
    properties = (step.pipeline.input_schema or {}).get("properties", {})
    return dict.fromkeys(properties, "")


def rollout_list(*, step: Step, limit: int = 20) -> QuerySet[Rollout]:
    """A step's rollouts, newest first, with their versions."""
    return step.rollouts.select_related("candidate", "baseline", "created_by")[:limit]


def _get_in_visible_pipelines[M: models.Model](model: type[M], *, user, pk: int, related) -> M:
    """One object of a step of a pipeline the user may see; 404 otherwise."""
    try:
        return (
            model.objects.select_related(*related)
            .filter(step__pipeline__in=pipeline_list_for_user(user=user))
            .get(pk=pk)
        )
    except model.DoesNotExist:
        raise Http404(f"No such {model._meta.verbose_name}") from None


def rollout_get_for_user(*, user, pk: int) -> Rollout:
    """One rollout with its step, pipeline and versions; 404 outside the user's clients."""
    related = ("step__pipeline__client", "candidate", "baseline", "created_by")
    return _get_in_visible_pipelines(Rollout, user=user, pk=pk, related=related)


def evaluation_list(*, step: Step, limit: int = 20) -> list[Evaluation]:
    """A step's latest evaluations, without their per-case results."""
    return list(
        step.evaluations.defer("results").select_related("version", "model", "created_by")[:limit]
    )


def evaluation_get_for_user(*, user, pk: int) -> Evaluation:
    """One evaluation with its step and pipeline; 404 outside the user's clients."""
    related = ("step__pipeline__client", "version", "model", "created_by")
    return _get_in_visible_pipelines(Evaluation, user=user, pk=pk, related=related)
