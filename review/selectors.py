"""Access-checked reads for reviewers: only items of the clients they serve."""

from __future__ import annotations

from django.db.models import QuerySet

from pipelines.models import Item
from pipelines.selectors import item_list_for_user


def review_item_list_for_user(*, user, limit: int = 100) -> QuerySet[Item]:
    """Items waiting for a person, oldest first, within the user's clients."""
    return (
        item_list_for_user(user=user)
        .filter(status=Item.Status.IN_REVIEW)
        .select_related("pipeline__client")
        .order_by("-priority", "updated_at")[:limit]
    )
