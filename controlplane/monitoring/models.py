from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.monitoring.alerts import GLOBAL_KINDS, KIND_HELP, Kind
from pipelines.models import BreakerEvent, Pipeline, Provider


class AlertRule(models.Model):
    """A condition on the rollups (or, for event kinds, something that happened: a rollout
    rolled back) that opens an alert, and who hears about it. Pipeline rules are created with
    each pipeline; breaker and worker rules are global (no pipeline)."""

    class KindChoice(models.TextChoices):
        QUEUE_DEPTH = Kind.QUEUE_DEPTH.value, KIND_HELP[Kind.QUEUE_DEPTH][0]
        DEAD_LETTERS = Kind.DEAD_LETTERS.value, KIND_HELP[Kind.DEAD_LETTERS][0]
        ERROR_RATE = Kind.ERROR_RATE.value, KIND_HELP[Kind.ERROR_RATE][0]
        LATENCY_SLA = Kind.LATENCY_SLA.value, KIND_HELP[Kind.LATENCY_SLA][0]
        BUDGET = Kind.BUDGET.value, KIND_HELP[Kind.BUDGET][0]
        REVIEW_OVERDUE = Kind.REVIEW_OVERDUE.value, KIND_HELP[Kind.REVIEW_OVERDUE][0]
        LATENCY_BASELINE = Kind.LATENCY_BASELINE.value, KIND_HELP[Kind.LATENCY_BASELINE][0]
        ERROR_RATE_BASELINE = Kind.ERROR_RATE_BASELINE.value, KIND_HELP[Kind.ERROR_RATE_BASELINE][0]
        BREAKER_OPEN = Kind.BREAKER_OPEN.value, KIND_HELP[Kind.BREAKER_OPEN][0]
        WORKER_SILENT = Kind.WORKER_SILENT.value, KIND_HELP[Kind.WORKER_SILENT][0]
        ROLLOUT_ROLLED_BACK = Kind.ROLLOUT_ROLLED_BACK.value, KIND_HELP[Kind.ROLLOUT_ROLLED_BACK][0]
        PIPELINE_PAUSED = Kind.PIPELINE_PAUSED.value, KIND_HELP[Kind.PIPELINE_PAUSED][0]

    pipeline = models.ForeignKey(
        Pipeline, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules"
    )
    kind = models.CharField(max_length=24, choices=KindChoice.choices)
    threshold = models.FloatField(default=0)
    window_minutes = models.PositiveIntegerField(default=15)
    enabled = models.BooleanField(default=True)
    # Channels: the banner in the app, email, and a Slack-compatible webhook.
    show_in_app = models.BooleanField(default=True)
    notify_email = models.BooleanField(default=True)
    notify_webhook = models.BooleanField(default=True)
    recipients = models.TextField(
        blank=True,
        help_text="Email addresses, comma-separated; empty: every operator with an address.",
    )
    webhook_url = models.URLField(
        blank=True, help_text="Slack-compatible incoming webhook; empty: SLUICE_ALERT_WEBHOOK_URL."
    )
    cooldown_minutes = models.PositiveIntegerField(
        default=30, help_text="After an alert resolves, minutes before the rule may open another."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pipeline_id", "kind", "threshold"]
        constraints = [
            # Breaker and worker rules watch the whole installation; every other kind watches
            # one pipeline.
            models.CheckConstraint(
                condition=(
                    models.Q(kind__in=sorted(k.value for k in GLOBAL_KINDS), pipeline__isnull=True)
                    | (
                        ~models.Q(kind__in=sorted(k.value for k in GLOBAL_KINDS))
                        & models.Q(pipeline__isnull=False)
                    )
                ),
                name="alert_rule_scope",
            ),
        ]

    def __str__(self) -> str:
        where = self.pipeline.name if self.pipeline_id else "all"
        return f"{self.get_kind_display()} ({where})"

    @property
    def threshold_help(self) -> str:
        return KIND_HELP[Kind(self.kind)][1]

    @property
    def window_help(self) -> str:
        return KIND_HELP[Kind(self.kind)][2]


class Alert(models.Model):
    """One incident of a rule for one subject (a pipeline, a provider, a worker cluster): opened
    when the condition starts, updated while it holds, resolved when it clears or by hand."""

    class State(models.TextChoices):
        FIRING = "firing"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    OPEN_STATES = (State.FIRING, State.ACKNOWLEDGED)

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    pipeline = models.ForeignKey(
        Pipeline, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # What the incident is about: "pipeline:7", "provider:3", "worker:host/cluster".
    subject = models.CharField(max_length=200)
    state = models.CharField(max_length=12, choices=State.choices, default=State.FIRING)
    summary = models.CharField(max_length=500)
    value = models.FloatField(default=0)
    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # None with a resolved_at: the condition cleared by itself.
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Per channel, what sending the notification answered ("sent to 2", an error).
    notifications = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        indexes = [
            models.Index(fields=["state", "-opened_at"], name="alert_state_recent"),
            models.Index(fields=["rule", "subject", "-resolved_at"], name="alert_rule_subject"),
        ]
        constraints = [
            # One incident is one alert, even when two evaluations run at once.
            models.UniqueConstraint(
                fields=["rule", "subject"],
                condition=models.Q(state__in=["firing", "acknowledged"]),
                name="alert_one_open_per_subject",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.summary} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES


class GaugeSample(models.Model):
    """Per pipeline and minute, the live gauges as the schedule sampled them, so queue depth, work
    in flight and the review backlog have a history. Kept for `samples.KEEP` (a week and a day)."""

    # The unique (pipeline, at) index serves lookups by pipeline: no index of its own.
    pipeline = models.ForeignKey(
        Pipeline, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # The minute sampled (seconds cut off): one row per pipeline and minute.
    at = models.DateTimeField()
    queued = models.PositiveIntegerField(default=0)
    running = models.PositiveIntegerField(default=0)
    waiting_retry = models.PositiveIntegerField(default=0)
    in_review = models.PositiveIntegerField(default=0)
    delivering = models.PositiveIntegerField(default=0)
    # How long the oldest queued item had waited; empty when nothing was queued.
    oldest_queued_seconds = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["pipeline", "at"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "at"], name="gauge_sample_pipeline_minute")
        ]
        # Pruning drops every pipeline's old minutes at once.
        indexes = [models.Index(fields=["at"], name="gauge_sample_at")]

    def __str__(self) -> str:
        return f"{self.pipeline_id} @ {self.at:%Y-%m-%d %H:%M}"


class HealthSample(models.Model):
    """Per minute, the health of the installation as the schedule sampled it: worker clusters
    and processes, tasks waiting in django-q2's queue, breakers not closed. Kept with the gauge
    samples (`samples.KEEP`)."""

    at = models.DateTimeField(unique=True)
    # Worker clusters whose heartbeat is recent (the heartbeat schedule, every minute).
    clusters_alive = models.PositiveIntegerField(default=0)
    # Clusters whose django-q2 sentinel reported its Stat in the last seconds, and their worker
    # processes.
    clusters_running = models.PositiveIntegerField(default=0)
    workers = models.PositiveIntegerField(default=0)
    # Tasks waiting in the broker's queue; empty when the broker did not answer.
    queued_tasks = models.PositiveIntegerField(null=True, blank=True)
    # Providers whose breaker is open or half-open.
    breakers_open = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["at"]

    def __str__(self) -> str:
        return f"health @ {self.at:%Y-%m-%d %H:%M}"


class BreakerSample(models.Model):
    """Per provider and minute, its breaker as the schedule sampled it (the live state is in
    the cache; its changes are BreakerEvents)."""

    # The unique (provider, at) index serves lookups by provider: no index of its own.
    provider = models.ForeignKey(
        Provider, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    at = models.DateTimeField()
    state = models.CharField(max_length=10, choices=BreakerEvent.State.choices)
    failures = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["provider", "at"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "at"], name="breaker_sample_minute")
        ]
        indexes = [models.Index(fields=["at"], name="breaker_sample_at")]

    def __str__(self) -> str:
        return f"{self.provider_id} @ {self.at:%Y-%m-%d %H:%M}: {self.state}"


class CounterTotal(models.Model):
    """Per pipeline, its rollups summed from the first up to `through` (an hour boundary), so
    /metrics can serve counters that only ever go up while reading only the rollups after it.
    Moved forward by the per-minute sample task once an hour has settled."""

    pipeline = models.OneToOneField(Pipeline, on_delete=models.CASCADE, related_name="+")
    # Rollup minutes before this are in the totals; those from it on are not.
    through = models.DateTimeField()
    # Rollup counter -> its sum (decimals as text, to keep every digit).
    counts = models.JSONField(default=dict)
    # Latency measure -> {bucket index (as text): count}.
    latency = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.pipeline_id} through {self.through:%Y-%m-%d %H:%M}"
