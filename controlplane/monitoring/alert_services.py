"""Writes of alerts: default rules, evaluation on the rollups (every minute, on a schedule),
acknowledging and resolving. Rule changes (audited) are in `alert_rule_services`.

Evaluation reads every number through `pipelines.metrics` (and the budgets, breakers and
heartbeats through their own services): a few queries per pass whatever the number of
pipelines, never a count of the item table beyond the capped queue gauges.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.apps import apps
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from controlplane.logs import log_fields
from controlplane.models import WorkerHeartbeat
from controlplane.monitoring.alerts import (
    EVENT_KINDS,
    GLOBAL_DEFAULTS,
    PIPELINE_DEFAULTS,
    Facts,
    Finding,
    Kind,
    PipelineFacts,
    RuleDefault,
    RuleSpec,
    Window,
    alert_step,
    rule_check,
)
from controlplane.monitoring.models import Alert, AlertRule
from pipelines import metrics
from pipelines.models import Item, Pipeline, Provider
from pipelines.services.breaker import breaker_states
from pipelines.services.budgets import budgets_for

logger = logging.getLogger(__name__)

EVALUATOR = "alerts"
# One evaluation at a time across all workers; a pass takes well under a minute.
LOCK_KEY = "alerts:evaluating"
LOCK_SECONDS = 55
WINDOW_KINDS = frozenset(
    {
        Kind.DEAD_LETTERS,
        Kind.ERROR_RATE,
        Kind.LATENCY_SLA,
        Kind.LATENCY_BASELINE,
        Kind.ERROR_RATE_BASELINE,
    }
)
BASELINE_KINDS = frozenset({Kind.LATENCY_BASELINE, Kind.ERROR_RATE_BASELINE})
BASELINE_SPAN = timedelta(hours=24)
QUEUE_STATUSES = (Item.Status.QUEUED, Item.Status.WAITING_RETRY)


def review_installed() -> bool:
    return apps.is_installed("review")


# --- Default rules --------------------------------------------------------------------------


def _defaults_for_pipeline() -> tuple[RuleDefault, ...]:
    return tuple(
        d for d in PIPELINE_DEFAULTS if d.kind != Kind.REVIEW_OVERDUE or review_installed()
    )


def alert_rules_default_create(*, pipeline: Pipeline) -> list[AlertRule]:
    """Give a new pipeline the default rules (one INSERT)."""
    return AlertRule.objects.bulk_create(
        [
            AlertRule(
                pipeline=pipeline,
                kind=d.kind.value,
                threshold=d.threshold,
                window_minutes=d.window_minutes,
            )
            for d in _defaults_for_pipeline()
        ]
    )


def alert_rules_ensure() -> None:
    """Create the global rules that are missing, and the default rules of pipelines that have
    none (pipelines made before alerts existed). Idempotent; runs after every migrate."""
    if AlertRule._meta.db_table not in connection.introspection.table_names():
        return
    present = set(AlertRule.objects.filter(pipeline__isnull=True).values_list("kind", flat=True))
    AlertRule.objects.bulk_create(
        [
            AlertRule(kind=d.kind.value, threshold=d.threshold, window_minutes=d.window_minutes)
            for d in GLOBAL_DEFAULTS
            if d.kind.value not in present
        ]
    )
    for pipeline in Pipeline.objects.filter(alert_rules__isnull=True):
        alert_rules_default_create(pipeline=pipeline)


# --- Reading the facts ----------------------------------------------------------------------


def _window_bounds(now: datetime, minutes: int) -> tuple[datetime, datetime]:
    """The last `minutes` whole minutes, the current (partial) one included."""
    until = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return until - timedelta(minutes=minutes), until


def _window(point: metrics.Point) -> Window:
    latency = point.latency.get("end_to_end", {})
    return Window(
        calls=int(point.count("calls")),
        failed=point.failed,
        dead_lettered=int(point.count("dead_lettered")),
        p95=point.percentile("end_to_end", 95),
        latency_samples=sum(latency.values()),
    )


def _review_overdue(pipeline_ids: Sequence[int]) -> dict[int, int]:
    """Per pipeline, review tasks waiting past their due time (one aggregate query)."""
    if not pipeline_ids or not review_installed():
        return {}
    from review.models import ReviewTask

    rows = (
        ReviewTask.objects.filter(
            status__in=ReviewTask.ACTIVE, overdue=True, queue__pipeline_id__in=pipeline_ids
        )
        .values("queue__pipeline_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {row["queue__pipeline_id"]: row["n"] for row in rows}


def alert_facts_gather(*, rules: Sequence[AlertRule], now: datetime) -> Facts:
    """Read what the enabled `rules` look at, and only that."""
    kinds_by_pipeline: dict[int, set[str]] = {}
    for rule in rules:
        if rule.pipeline_id is not None:
            kinds_by_pipeline.setdefault(rule.pipeline_id, set()).add(rule.kind)
    pipelines = {
        p.pk: p for p in Pipeline.objects.select_related("client").filter(pk__in=kinds_by_pipeline)
    }

    def wanting(*kinds: Kind) -> list[int]:
        return [pid for pid, k in kinds_by_pipeline.items() if pid in pipelines and k & set(kinds)]

    depth = {
        pid: sum(values.get(status, 0) for status in QUEUE_STATUSES)
        for pid, values in metrics.gauges(pipeline_ids=wanting(Kind.QUEUE_DEPTH)).items()
    }
    windows: dict[int, dict[int, Window]] = {}
    baselines: dict[int, dict[int, Window]] = {}
    for minutes in sorted({r.window_minutes for r in rules if r.kind in WINDOW_KINDS}):
        ids = [
            r.pipeline_id for r in rules if r.kind in WINDOW_KINDS and r.window_minutes == minutes
        ]
        since, until = _window_bounds(now, minutes)
        for pid, point in metrics.totals_by_pipeline(
            pipeline_ids=set(ids), since=since, until=until
        ).items():
            windows.setdefault(pid, {})[minutes] = _window(point)
        base_ids = [
            r.pipeline_id
            for r in rules
            if r.kind in BASELINE_KINDS
            and r.window_minutes == minutes
            and r.pipeline_id in pipelines
        ]
        for pid, point in metrics.totals_by_pipeline(
            pipeline_ids=set(base_ids), since=since - BASELINE_SPAN, until=since
        ).items():
            baselines.setdefault(pid, {})[minutes] = _window(point)
    budgets = budgets_for([pipelines[pid] for pid in wanting(Kind.BUDGET)], now=now)
    overdue = _review_overdue(wanting(Kind.REVIEW_OVERDUE))
    facts_by_pipeline = {}
    for pid, pipeline in pipelines.items():
        spent = max(budgets.get(pid, []), key=lambda b: b.fraction, default=None)
        facts_by_pipeline[pid] = PipelineFacts(
            name=f"{pipeline.client.name} / {pipeline.name}",
            sla_seconds=pipeline.latency_target_seconds,
            queue_depth=depth.get(pid, 0),
            budget_percent=None if spent is None else round(spent.fraction * 100, 2),
            budget_label=""
            if spent is None
            else (
                f"the daily budget of {spent.limit}"
                if spent.scope == "pipeline"
                else f"the client's monthly budget of {spent.limit}"
            ),
            review_overdue=overdue.get(pid, 0),
            windows=windows.get(pid, {}),
            baselines=baselines.get(pid, {}),
        )
    kinds = {rule.kind for rule in rules}
    breakers: dict[int, tuple[str, str, int]] = {}
    if Kind.BREAKER_OPEN in kinds:
        providers = list(Provider.objects.order_by("pk"))
        for pid, view in breaker_states(providers).items():
            name = next(p.name for p in providers if p.pk == pid)
            breakers[pid] = (name, view.state, view.failures)
    heartbeats: dict[str, datetime] = {}
    if Kind.WORKER_SILENT in kinds:
        heartbeats = {
            f"{beat.host}/{beat.cluster}": beat.last_seen for beat in WorkerHeartbeat.objects.all()
        }
    return Facts(now=now, pipelines=facts_by_pipeline, breakers=breakers, heartbeats=heartbeats)


def _spec(rule: AlertRule) -> RuleSpec:
    return RuleSpec(
        kind=Kind(rule.kind),
        threshold=rule.threshold,
        window_minutes=rule.window_minutes,
        pipeline_id=rule.pipeline_id,
    )


# --- Evaluation -----------------------------------------------------------------------------


def alerts_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """Check every enabled rule once: open an alert for a new incident (after its rule's
    cooldown), update the open one while the condition holds, resolve it when the condition
    clears; then notify about what opened and resolved. Call it outside a transaction (it
    commits its writes before sending). Returns how many alerts were opened, updated and
    resolved; does nothing while another evaluation runs."""
    if not cache.add(LOCK_KEY, 1, timeout=LOCK_SECONDS):
        return {"skipped": 1}
    try:
        return _evaluate(now or timezone.now())
    finally:
        cache.delete(LOCK_KEY)


def _evaluate(now: datetime) -> dict[str, int]:
    # Event kinds have no condition to check: their alerts open and resolve elsewhere.
    rules = list(
        AlertRule.objects.filter(enabled=True)
        .exclude(kind__in=sorted(EVENT_KINDS))
        .select_related("pipeline__client")
    )
    facts = alert_facts_gather(rules=rules, now=now)
    open_alerts = {
        (alert.rule_id, alert.subject): alert
        for alert in Alert.objects.filter(
            state__in=Alert.OPEN_STATES, rule__in=rules
        ).select_related("rule")
    }
    longest = max((rule.cooldown_minutes for rule in rules), default=0)
    last_resolved = {
        (row["rule_id"], row["subject"]): row["last"]
        for row in Alert.objects.filter(
            state=Alert.State.RESOLVED,
            rule__in=rules,
            resolved_at__gte=now - timedelta(minutes=longest),
        )
        .values("rule_id", "subject")
        .annotate(last=Max("resolved_at"))
        .order_by()
    }
    counts = {"opened": 0, "updated": 0, "resolved": 0}
    opened: list[Alert] = []
    resolved: list[Alert] = []
    for rule in rules:
        findings = {f.subject: f for f in rule_check(_spec(rule), facts)}
        subjects = set(findings) | {s for (rid, s) in open_alerts if rid == rule.pk}
        for subject in sorted(subjects):
            current = open_alerts.get((rule.pk, subject))
            step = alert_step(
                found=subject in findings,
                has_open=current is not None,
                last_resolved_at=last_resolved.get((rule.pk, subject)),
                cooldown_minutes=rule.cooldown_minutes,
                now=now,
            )
            if step.action == "open":
                alert = alert_open(rule=rule, finding=findings[subject], now=now)
                if alert is not None:
                    opened.append(alert)
                    counts["opened"] += 1
            elif step.action == "update":
                finding = findings[subject]
                Alert.objects.filter(pk=current.pk).update(
                    last_seen_at=now, value=finding.value, summary=finding.summary[:500]
                )
                counts["updated"] += 1
            elif step.action == "resolve":
                changed = Alert.objects.filter(pk=current.pk, state__in=Alert.OPEN_STATES).update(
                    state=Alert.State.RESOLVED, resolved_at=now
                )
                if changed:
                    current.state, current.resolved_at = Alert.State.RESOLVED, now
                    resolved.append(current)
                    counts["resolved"] += 1
    if opened or resolved:
        from controlplane.monitoring.notify import alerts_notify

        alerts_notify(opened=opened, resolved=resolved)
    return counts


def alert_open(*, rule: AlertRule, finding: Finding, now: datetime) -> Alert | None:
    """Open an alert of `rule` for the finding's subject; None when one is open already (two
    evaluations at once, or the same event told twice): one incident is one alert. The caller
    notifies."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=rule,
                pipeline_id=finding.pipeline_id,
                subject=finding.subject,
                summary=finding.summary[:500],
                value=finding.value,
                opened_at=now,
                last_seen_at=now,
            )
    except IntegrityError:
        # Another evaluation opened this incident a moment ago: it is one alert.
        return None
    alert.rule = rule
    logger.warning(
        "alert opened: %s",
        alert.summary,
        extra=log_fields(alert_id=alert.pk, pipeline_id=finding.pipeline_id),
    )
    return alert


def alert_event_raise(*, kind: Kind, finding: Finding) -> list[Alert]:
    """Something happened to the finding's pipeline (an event kind: a rollout rolled back):
    open an alert under each of the pipeline's enabled rules of `kind` and send what opened.
    The alerts opened: none when those rules are off, or when the event was told already. Call
    it after commit: it sends."""
    rules = AlertRule.objects.filter(pipeline_id=finding.pipeline_id, kind=kind, enabled=True)
    now = timezone.now()
    opened = [
        alert
        for alert in (alert_open(rule=r, finding=finding, now=now) for r in rules.order_by("pk"))
        if alert is not None
    ]
    if opened:
        from controlplane.monitoring.notify import alerts_notify

        alerts_notify(opened=opened, resolved=[])
    return opened


# --- Acknowledge and resolve ----------------------------------------------------------------


@transaction.atomic
def alert_acknowledge(*, alert: Alert, actor: AbstractBaseUser) -> Alert:
    """Someone is on it: the alert leaves the banner but stays open until it resolves. An
    event's alert (a rollout rolled back) has no condition that could clear, so acknowledging
    it resolves it too."""
    now = timezone.now()
    fields = {"state": Alert.State.ACKNOWLEDGED, "acknowledged_by": actor, "acknowledged_at": now}
    if alert.rule.kind in EVENT_KINDS:
        fields.update(state=Alert.State.RESOLVED, resolved_at=now, resolved_by=actor)
    changed = Alert.objects.filter(pk=alert.pk, state=Alert.State.FIRING).update(**fields)
    if changed:
        alert.refresh_from_db()
    return alert


@transaction.atomic
def alert_resolve(*, alert: Alert, actor: AbstractBaseUser) -> Alert:
    """Close the incident by hand. If the condition still holds, the rule opens a new alert
    once its cooldown has passed."""
    changed = Alert.objects.filter(pk=alert.pk, state__in=Alert.OPEN_STATES).update(
        state=Alert.State.RESOLVED, resolved_at=timezone.now(), resolved_by=actor
    )
    if changed:
        alert.refresh_from_db()
    return alert


@transaction.atomic
def alerts_resolve_subjects(
    *, kind: Kind, subjects: Sequence[str], actor: AbstractBaseUser | None
) -> int:
    """Resolve the open alerts of rules of `kind` about any of `subjects` (an event's alerts,
    when what they told about is over); how many. Nothing is sent: it is someone's doing."""
    if not subjects:
        return 0
    return Alert.objects.filter(
        rule__kind=kind, subject__in=list(subjects), state__in=Alert.OPEN_STATES
    ).update(state=Alert.State.RESOLVED, resolved_at=timezone.now(), resolved_by=actor)
