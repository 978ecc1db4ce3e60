"""Access-checked reads of pipelines and items: scoped to the clients the user may see."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from controlplane.selectors import client_list_for_user
from pipelines.models import Item, Pipeline


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
