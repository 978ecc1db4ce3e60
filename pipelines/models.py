from __future__ import annotations

from django.db import models

from controlplane.models import Client


class Pipeline(models.Model):
    """A client's automation: items go in, run through its steps, and come out."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        ACTIVE = "active"
        PAUSED = "paused"

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="pipelines")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["client__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["client", "slug"], name="pipeline_slug_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class Item(models.Model):
    """One unit of work (a ticket, a document, a record). Its row is the truth of its state."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING_RETRY = "waiting_retry"
        IN_REVIEW = "in_review"
        ACCEPTED = "accepted"
        DELIVERING = "delivering"
        DELIVERED = "delivered"
        REJECTED = "rejected"
        QUARANTINED = "quarantined"
        DEDUPLICATED = "deduplicated"
        DEAD_LETTERED = "dead_lettered"

    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="items")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    data = models.JSONField()
    external_id = models.CharField(max_length=200, blank=True)
    priority = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["pipeline", "status"], name="item_pipeline_status"),
            models.Index(fields=["pipeline", "-created_at"], name="item_pipeline_recent"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(priority__lte=9), name="item_priority_0_9"),
        ]

    def __str__(self) -> str:
        return f"item {self.pk}"


class LedgerEvent(models.Model):
    """One state change of an item, written in the same transaction as the change."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="ledger")
    at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=150)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.item_id}: {self.from_status or '∅'} → {self.to_status}"
