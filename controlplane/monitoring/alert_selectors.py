"""Access-checked reads of alerts. Alerts are the operator's: other roles see none (a client's
view of its pipelines is the dashboards and reports, not the operator's incidents)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from controlplane.monitoring.models import Alert, AlertRule
from controlplane.params import parse_id
from controlplane.roles import Role, role_of
from pipelines.models import Pipeline

BANNER_LIMIT = 5
STATE_FILTERS = ("open", "firing", "acknowledged", "resolved", "all")


def alert_list_for_user(*, user) -> QuerySet[Alert]:
    """Every alert for operators; none for anyone else."""
    if role_of(user) != Role.OPERATOR:
        return Alert.objects.none()
    return Alert.objects.select_related(
        "rule", "pipeline__client", "acknowledged_by", "resolved_by"
    )


def alert_get_for_user(*, user, pk: object) -> Alert:
    """One alert; 404 when it does not exist or the user may not see it."""
    alert_id = parse_id(pk)
    try:
        return alert_list_for_user(user=user).get(pk=alert_id)
    except Alert.DoesNotExist:
        raise Http404("No such alert") from None


def alert_search(
    *,
    user,
    state: str = "open",
    pipeline_id: int | None = None,
    kind: str = "",
    before: int | None = None,
    limit: int = 50,
) -> QuerySet[Alert]:
    """Alerts newest first, by state ("open" is firing or acknowledged), pipeline and kind,
    from alert id `before` downwards (keyset pagination: history is never counted)."""
    alerts = alert_list_for_user(user=user).order_by("-id")
    if state == "open":
        alerts = alerts.filter(state__in=Alert.OPEN_STATES)
    elif state in Alert.State.values:
        alerts = alerts.filter(state=state)
    if pipeline_id is not None:
        alerts = alerts.filter(pipeline_id=pipeline_id)
    if kind:
        alerts = alerts.filter(rule__kind=kind)
    if before is not None:
        alerts = alerts.filter(pk__lt=before)
    return alerts[:limit]


def alert_banner_list(*, user) -> tuple[list[Alert], int]:
    """The newest firing, unacknowledged alerts the banner shows, and how many there are."""
    alerts = alert_list_for_user(user=user).filter(state=Alert.State.FIRING, rule__show_in_app=True)
    shown = list(alerts.order_by("-opened_at", "-id")[:BANNER_LIMIT])
    total = len(shown) if len(shown) < BANNER_LIMIT else alerts.count()
    return shown, total


def alert_rule_list_for_user(*, user, pipeline: Pipeline | None = None) -> QuerySet[AlertRule]:
    """Operators' rules: a pipeline's, or the global ones (no pipeline) when none is given."""
    if role_of(user) != Role.OPERATOR:
        return AlertRule.objects.none()
    rules = AlertRule.objects.select_related("pipeline__client")
    if pipeline is None:
        return rules.filter(pipeline__isnull=True)
    return rules.filter(pipeline=pipeline)


def alert_rule_get_for_user(*, user, pk: object) -> AlertRule:
    """One rule; 404 when it does not exist or the user may not see it."""
    rule_id = parse_id(pk)
    if role_of(user) != Role.OPERATOR:
        raise Http404("No such alert rule")
    try:
        return AlertRule.objects.select_related("pipeline__client").get(pk=rule_id)
    except AlertRule.DoesNotExist:
        raise Http404("No such alert rule") from None


def alert_pipeline_choices() -> QuerySet[Pipeline]:
    """Pipelines that have alert rules, for the filter of the alert list."""
    with_rules = AlertRule.objects.filter(pipeline__isnull=False).values("pipeline_id")
    return Pipeline.objects.filter(pk__in=with_rules).select_related("client")
