"""Writes of the ground layer: roles, clients, users, the audit log, worker heartbeats."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from controlplane.models import ApiKey, AuditEntry, Client, Membership, WorkerHeartbeat
from controlplane.roles import ROLE_ORDER, Role


def roles_ensure() -> None:
    """Create the role groups if missing and give operators every permission (idempotent)."""
    for role in ROLE_ORDER:
        Group.objects.get_or_create(name=role.value)
    operators = Group.objects.get(name=Role.OPERATOR.value)
    operators.permissions.set(Permission.objects.all())


def audit_record(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    obj: models.Model,
    client: Client | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    actor_label: str | None = None,
) -> AuditEntry:
    """Append one entry to the audit log; call it inside the transaction of the change."""
    label = actor_label or (actor.get_username() if actor is not None else "system")
    return AuditEntry.objects.create(
        actor=actor,
        actor_label=label,
        action=action,
        object_type=obj._meta.model_name,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        client=client,
        before=dict(before) if before is not None else None,
        after=dict(after) if after is not None else None,
    )


def _client_fields(client: Client) -> dict[str, Any]:
    return {
        "name": client.name,
        "slug": client.slug,
        "contact_email": client.contact_email,
        "is_active": client.is_active,
    }


@transaction.atomic
def client_create(
    *,
    name: str,
    slug: str,
    contact_email: str = "",
    actor: AbstractBaseUser | None = None,
    actor_label: str | None = None,
) -> Client:
    """Create a client; names and slugs are unique (case-insensitive for names)."""
    client = Client(name=name.strip(), slug=slug.strip(), contact_email=contact_email.strip())
    client.full_clean()
    client.save()
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="client.create",
        obj=client,
        client=client,
        after=_client_fields(client),
    )
    return client


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    role: Role,
    clients: Iterable[Client] = (),
    email: str = "",
    actor: AbstractBaseUser | None = None,
    actor_label: str | None = None,
) -> AbstractBaseUser:
    """Create a user with one role; a client user belongs to exactly one client."""
    clients = list(clients)
    if role == Role.CLIENT and len(clients) != 1:
        raise ValidationError({"clients": "A client user belongs to exactly one client."})
    if role == Role.OPERATOR and clients:
        raise ValidationError({"clients": "Operators see every client; choose no clients."})
    User = get_user_model()
    user = User(username=username, email=email, is_staff=(role == Role.OPERATOR))
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    user.groups.add(Group.objects.get_or_create(name=role.value)[0])
    Membership.objects.bulk_create([Membership(user=user, client=c) for c in clients])
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="user.create",
        obj=user,
        after={"username": username, "role": role.value, "clients": [c.slug for c in clients]},
    )
    return user


def heartbeat_record(*, host: str, cluster: str, pid: int) -> WorkerHeartbeat:
    """Note that a worker cluster on a host is alive now."""
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        host=host, cluster=cluster, defaults={"pid": pid, "last_seen": timezone.now()}
    )
    return heartbeat


API_KEY_PREFIX = "sk_sluice_"


def _api_key_hash(key: str) -> str:
    # Keys are 256 random bits, so a plain SHA-256 cannot be brute-forced; a slow password hash
    # would only slow every API request.
    return hashlib.sha256(key.encode()).hexdigest()


@transaction.atomic
def api_key_create(
    *,
    client: Client,
    name: str,
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key for a client; returns the row and the key, which is never shown again."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": ["Give the key a name, e.g. the system that uses it."]})
    secret = secrets.token_urlsafe(32)
    key = f"{API_KEY_PREFIX}{secret}"
    api_key = ApiKey.objects.create(
        client=client,
        name=name[:100],
        prefix=key[: len(API_KEY_PREFIX) + 6],
        key_hash=_api_key_hash(key),
        created_by=actor,
    )
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="api_key.create",
        obj=api_key,
        client=client,
        after={"name": api_key.name, "prefix": api_key.prefix},
    )
    return api_key, key


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: AbstractBaseUser | None) -> ApiKey:
    """Revoke a key at once; requests with it get 401 from now on."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            action="api_key.revoke",
            obj=api_key,
            client=api_key.client,
            before={"revoked": False},
            after={"revoked": True},
        )
    return api_key


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """The active key matching `key`, or None. Compares hashes in constant time."""
    if not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        return None
    candidate = (
        ApiKey.objects.select_related("client")
        .filter(
            prefix=key[: len(API_KEY_PREFIX) + 6], revoked_at__isnull=True, client__is_active=True
        )
        .first()
    )
    if candidate is None or not hmac.compare_digest(candidate.key_hash, _api_key_hash(key)):
        return None
    now = timezone.now()
    # Written at most once a minute per key, so a busy integrator does not write on every call.
    if candidate.last_used_at is None or (now - candidate.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=candidate.pk).update(last_used_at=now)
    return candidate


@transaction.atomic
def client_webhook_set(*, client: Client, url: str, actor: AbstractBaseUser | None) -> Client:
    """Set (or clear, with "") where a client's finished items are delivered. The signing
    secret is generated the first time and kept when the URL changes."""
    from django.core.validators import URLValidator

    url = url.strip()
    if url:
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            raise ValidationError({"webhook_url": ["Enter an http(s) URL."]}) from None
    before = client.webhook_url
    client.webhook_url = url
    if url and not client.webhook_secret:
        client.webhook_secret = secrets.token_hex(32)
    client.save(update_fields=["webhook_url", "webhook_secret"])
    if before != url:
        audit_record(
            actor=actor,
            action="client.webhook",
            obj=client,
            client=client,
            before={"webhook_url": before},
            after={"webhook_url": url},
        )
    return client


LIMIT_FIELDS = ("monthly_budget", "ingest_limit_per_minute")


@transaction.atomic
def client_limits_set(
    *, client: Client, monthly_budget: Decimal | None, ingest_limit_per_minute: int, actor
) -> Client:
    """Set what a client may spend per month (None: no limit) and submit per minute."""
    errors: dict[str, list[str]] = {}
    if monthly_budget is not None and monthly_budget < 0:
        errors["monthly_budget"] = ["A budget cannot be negative."]
    if ingest_limit_per_minute < 1:
        errors["ingest_limit_per_minute"] = ["At least 1 item a minute."]
    if errors:
        raise ValidationError(errors)
    before = {f: str(getattr(client, f)) for f in LIMIT_FIELDS}
    client.monthly_budget = monthly_budget
    client.ingest_limit_per_minute = ingest_limit_per_minute
    client.full_clean(exclude=["name", "slug"])
    client.save(update_fields=list(LIMIT_FIELDS))
    after = {f: str(getattr(client, f)) for f in LIMIT_FIELDS}
    if before != after:
        audit_record(
            actor=actor,
            action="client.limits",
            obj=client,
            client=client,
            before=before,
            after=after,
        )
    return client
