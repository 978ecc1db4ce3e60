from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from pipelines.models import Item, Pipeline, Step

# Item priorities are 0-9; an overdue task is raised above every task that is still on time.
MAX_ITEM_PRIORITY = 9
OVERDUE_BOOST = 10
MAX_TASK_PRIORITY = MAX_ITEM_PRIORITY + OVERDUE_BOOST


class ReviewQueue(models.Model):
    """Where the tasks of one step of a pipeline wait; reviewers work the queues they belong to.
    Created the first time the step holds an item (or ahead of it, to add members)."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="review_queues")
    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="review_queues")
    name = models.CharField(max_length=200)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        through="QueueMembership",
        related_name="review_queues",
        blank=True,
    )
    # Share of the blind audits of this queue that two reviewers answer independently, to
    # measure how often people agree with each other.
    second_opinion_rate = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.200"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="Share of the sampled outputs audited blind by two reviewers instead of one; "
        "0 to 1.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pipeline", "step__position"]
        constraints = [
            models.UniqueConstraint(fields=["step"], name="review_queue_step_unique"),
            models.CheckConstraint(
                condition=Q(second_opinion_rate__gte=0, second_opinion_rate__lte=1),
                name="review_queue_second_opinion_rate_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class QueueMembership(models.Model):
    """A person who works a queue (reviewers; operators see every queue without one)."""

    queue = models.ForeignKey(ReviewQueue, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_memberships"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["queue", "user"], name="queue_membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.queue}"


class ReviewTask(models.Model):
    """One item waiting for a person at one step: held by the gate (`review`), or an accepted
    output sampled for a blind `audit`. Claimed under a lease, decided once."""

    class Kind(models.TextChoices):
        REVIEW = "review"
        AUDIT = "audit", "blind audit"

    class Status(models.TextChoices):
        OPEN = "open"
        CLAIMED = "claimed"
        DECIDED = "decided"
        CANCELLED = "cancelled"

    class ReasonCode(models.TextChoices):
        LOW_CONFIDENCE = "low_confidence", "low confidence"
        SCHEMA = "schema", "schema error"
        RULE = "rule", "rule broken"
        PROCESSING_ERROR = "processing_error", "processing error"
        CONTENT_POLICY = "content_policy", "content policy"
        AUDIT = "audit", "blind audit"
        OTHER = "other"

    class Decision(models.TextChoices):
        APPROVE = "approve"
        EDIT = "edit"
        REJECT = "reject"

    class RejectReason(models.TextChoices):
        INVALID_INPUT = "invalid_input", "the input cannot be processed"
        OUT_OF_SCOPE = "out_of_scope", "not what this pipeline handles"
        DUPLICATE = "duplicate", "a duplicate of another item"
        SPAM = "spam", "spam or abuse"
        POLICY = "policy", "against the content policy"
        OTHER = "other", "other (see the note)"

    ACTIVE = (Status.OPEN, Status.CLAIMED)

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="review_tasks")
    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="review_tasks")
    queue = models.ForeignKey(ReviewQueue, on_delete=models.CASCADE, related_name="tasks")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.REVIEW)
    # 1, or 2 for the second independent audit of the same output.
    opinion = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    # Why the gate held it, as the gate said it ("low confidence 0.62 < 0.80"), and its class.
    reason = models.TextField(blank=True)
    reason_code = models.CharField(max_length=20, choices=ReasonCode.choices)
    priority = models.PositiveSmallIntegerField(default=0)
    opened_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField()
    overdue = models.BooleanField(default=False)
    escalated_at = models.DateTimeField(null=True, blank=True)
    # Set by an operator: the task waits for this person until it is overdue.
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="review_tasks_assigned",
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="review_tasks_claimed",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Another reviewer may take a claimed task once its lease has expired.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # What the model answered (None after a processing error), and how sure it was. Pages hide
    # it from the reviewer of an audit task: the audit is blind.
    model_output = models.JSONField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    decision = models.CharField(max_length=8, choices=Decision.choices, blank=True)
    decided_output = models.JSONField(null=True, blank=True)
    reject_reason = models.CharField(max_length=20, choices=RejectReason.choices, blank=True)
    note = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="review_tasks_decided",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    # From the decider's claim to the decision; None when they decided without claiming.
    handling_seconds = models.FloatField(null=True, blank=True)
    # Whether the person's answer is the model's; None when the model gave none.
    agreed = models.BooleanField(null=True, blank=True)
    # When the decision became a labeled example of the step (once per task).
    learned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-priority", "due_at", "id"]
        indexes = [
            # Claiming: the next active task in (priority, due time) order, over every queue
            # or one queue, is the first entry of an index range; assigned tasks likewise.
            models.Index(
                fields=["-priority", "due_at", "id"],
                condition=Q(status__in=["open", "claimed"]),
                name="review_task_claim_order",
            ),
            models.Index(
                fields=["queue", "-priority", "due_at", "id"],
                condition=Q(status__in=["open", "claimed"]),
                name="review_task_queue_order",
            ),
            models.Index(
                fields=["assignee", "-priority", "due_at", "id"],
                condition=Q(status__in=["open", "claimed"], assignee__isnull=False),
                name="review_task_assigned_order",
            ),
            # Escalation finds active tasks past due that are not flagged yet.
            models.Index(
                fields=["due_at"],
                condition=Q(status__in=["open", "claimed"], overdue=False),
                name="review_task_due",
            ),
            # Throughput and reviewer statistics read recent decisions.
            models.Index(fields=["decided_at"], name="review_task_decided"),
            models.Index(fields=["decided_by", "decided_at"], name="review_task_decider"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__lte=MAX_TASK_PRIORITY), name="review_task_priority_max"
            ),
            # An item waits at most once per step and kind (an audit once per opinion): a batch
            # written twice opens nothing.
            models.UniqueConstraint(
                fields=["item", "step", "kind", "opinion"],
                condition=Q(status__in=["open", "claimed"]),
                name="review_task_active_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} task {self.pk} of item {self.item_id}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    def lease_is_live(self, now=None) -> bool:
        """Whether someone holds the task right now."""
        now = now or timezone.now()
        return (
            self.status == self.Status.CLAIMED
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )
