"""Access-checked reads of the ground layer. Every object query for a user is scoped here."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import Http404

from controlplane.models import AuditEntry, Client, WorkerHeartbeat
from controlplane.roles import Role, role_of


def client_list_for_user(*, user) -> QuerySet[Client]:
    """Clients the user may see: all for operators, their memberships for everyone else."""
    role = role_of(user)
    if role == Role.OPERATOR:
        return Client.objects.all()
    if role is None:
        return Client.objects.none()
    return Client.objects.filter(memberships__user=user, is_active=True)


def client_get_for_user(*, user, slug: str) -> Client:
    """One client by slug; 404 when it does not exist or the user may not see it."""
    try:
        return client_list_for_user(user=user).get(slug=slug)
    except Client.DoesNotExist:
        raise Http404("No such client") from None


def user_list():
    """Every user with their groups and memberships, for the operator's people page."""
    return (
        get_user_model()
        .objects.prefetch_related("groups", "memberships__client")
        .order_by("username")
    )


def audit_entry_list(*, limit: int = 50) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.select_related("client")[:limit]


def heartbeat_list() -> QuerySet[WorkerHeartbeat]:
    return WorkerHeartbeat.objects.order_by("-last_seen")
