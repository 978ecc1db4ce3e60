"""Access-checked reads of the ground layer. Every object query for a user is scoped here."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import Http404

from controlplane.models import ApiKey, AuditEntry, Client, WorkerHeartbeat
from controlplane.params import parse_id
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


def audit_entry_search(
    *,
    action: str = "",
    client: str = "",
    actor: str = "",
    before: int | None = None,
    limit: int = 50,
) -> QuerySet[AuditEntry]:
    """Audit entries newest first, filtered by action prefix, client slug and actor name, from
    entry id `before` downwards (keyset pagination: the log is never counted)."""
    entries = AuditEntry.objects.select_related("client").order_by("-id")
    if action:
        entries = entries.filter(action__startswith=action)
    if client:
        entries = entries.filter(client__slug=client)
    if actor:
        entries = entries.filter(actor_label__iexact=actor)
    if before is not None:
        entries = entries.filter(pk__lt=before)
    return entries[:limit]


def audit_action_list() -> list[str]:
    """The kinds of action the log holds, for the filter."""
    return list(AuditEntry.objects.order_by("action").values_list("action", flat=True).distinct())


def heartbeat_list() -> QuerySet[WorkerHeartbeat]:
    return WorkerHeartbeat.objects.order_by("-last_seen")


def api_key_list(*, client: Client) -> QuerySet[ApiKey]:
    return client.api_keys.order_by("revoked_at", "-created_at")


def api_key_get(*, client: Client, pk: str) -> ApiKey:
    """One of the client's keys; 404 for a key of another client or a malformed id."""
    key_id = parse_id(pk)
    if key_id is None:
        raise Http404("No such key")
    try:
        return client.api_keys.get(pk=key_id)
    except ApiKey.DoesNotExist:
        raise Http404("No such key") from None
