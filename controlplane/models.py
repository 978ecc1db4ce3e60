from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower


class Client(models.Model):
    """A customer of the operator: owns pipelines and sees only its own reports."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    contact_email = models.EmailField(blank=True)
    is_active = models.BooleanField(default=True)
    ingest_limit_per_minute = models.PositiveIntegerField(
        default=60_000,
        help_text="Items this client may submit per minute over the API; more get 429.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="client_name_unique_ci"),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """Ties a client user (exactly one) or a reviewer (any number) to the clients they serve."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "client"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.client}"


class AuditEntry(models.Model):
    """One configuration change: who, when, what, and the fields before and after."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=60)
    object_type = models.CharField(max_length=60)
    object_id = models.CharField(max_length=60)
    object_repr = models.CharField(max_length=200)
    client = models.ForeignKey(Client, null=True, blank=True, on_delete=models.SET_NULL)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.object_repr}"


class WorkerHeartbeat(models.Model):
    """Last sign of life of a worker cluster on a host, written by a scheduled task."""

    host = models.CharField(max_length=200)
    cluster = models.CharField(max_length=100)
    pid = models.PositiveIntegerField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["host", "cluster"], name="heartbeat_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.cluster}@{self.host}"


class ApiKey(models.Model):
    """A client's key for the REST API. Only a hash is stored; the key is shown once."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    # The first characters of the key, stored in clear to find the row and to show in lists.
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["client__name", "name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.client.slug}/{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
