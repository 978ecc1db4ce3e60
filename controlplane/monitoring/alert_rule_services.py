"""Writes of alert rules by operators: add, change and delete, each validated with errors by
field and recorded in the audit log (`alert_rule.create`, `.update`, `.delete`)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import transaction
from django.utils import timezone

from controlplane.monitoring.alert_services import review_installed
from controlplane.monitoring.alerts import (
    GLOBAL_DEFAULTS,
    GLOBAL_KINDS,
    KIND_HELP,
    PIPELINE_DEFAULTS,
    Kind,
)
from controlplane.monitoring.models import Alert, AlertRule
from controlplane.services import audit_record
from pipelines.models import Pipeline

EDITABLE = (
    "threshold",
    "window_minutes",
    "enabled",
    "show_in_app",
    "notify_email",
    "notify_webhook",
    "recipients",
    "webhook_url",
    "cooldown_minutes",
)
MAX_MINUTES = 7 * 24 * 60


def _recipients_clean(raw: str) -> str:
    addresses = [part.strip() for part in raw.replace(";", ",").split(",") if part.strip()]
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError(
                {"recipients": [f"“{address}” is not an email address."]}
            ) from None
    return ", ".join(addresses)


def _changes_clean(changes: dict[str, Any]) -> dict[str, list[str]]:
    """Normalise `changes` in place; the errors by field name (empty when all is well)."""
    errors: dict[str, list[str]] = {}
    if "recipients" in changes:
        try:
            changes["recipients"] = _recipients_clean(changes["recipients"] or "")
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if "webhook_url" in changes:
        url = (changes["webhook_url"] or "").strip()
        changes["webhook_url"] = url
        if url:
            try:
                URLValidator(schemes=["http", "https"])(url)
            except ValidationError:
                errors["webhook_url"] = ["Enter an http(s) URL."]
    if changes.get("threshold") is not None and changes["threshold"] < 0:
        errors["threshold"] = ["A threshold cannot be negative."]
    window = changes.get("window_minutes")
    if "window_minutes" in changes and (window is None or not 1 <= window <= MAX_MINUTES):
        errors["window_minutes"] = [f"From 1 minute to 7 days ({MAX_MINUTES})."]
    cooldown = changes.get("cooldown_minutes")
    if "cooldown_minutes" in changes and (cooldown is None or not 0 <= cooldown <= MAX_MINUTES):
        errors["cooldown_minutes"] = [f"From 0 to 7 days ({MAX_MINUTES} minutes)."]
    return errors


def _rule_fields(rule: AlertRule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in EDITABLE}


def _client_of(rule: AlertRule):
    return rule.pipeline.client if rule.pipeline_id else None


@transaction.atomic
def alert_rule_update(
    *, rule: AlertRule, actor: AbstractBaseUser | None, **changes: Any
) -> AlertRule:
    """Change a rule's threshold, window, channels, recipients or cooldown; audited with the
    fields before and after. Turning a rule off resolves its open alerts."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise TypeError(f"not editable: {sorted(unknown)}")
    errors = _changes_clean(changes)
    if errors:
        raise ValidationError(errors)
    before = _rule_fields(rule)
    for name, value in changes.items():
        setattr(rule, name, value)
    rule.full_clean(exclude=["pipeline"])
    after = _rule_fields(rule)
    diff = [name for name in EDITABLE if before[name] != after[name]]
    if not diff:
        return rule
    rule.save(update_fields=[*diff, "updated_at"])
    if not rule.enabled:
        Alert.objects.filter(rule=rule, state__in=Alert.OPEN_STATES).update(
            state=Alert.State.RESOLVED, resolved_at=timezone.now(), resolved_by=actor
        )
    audit_record(
        actor=actor,
        action="alert_rule.update",
        obj=rule,
        client=_client_of(rule),
        before={name: before[name] for name in diff},
        after={name: after[name] for name in diff},
    )
    return rule


def _default_of(kind: Kind) -> tuple[float, int]:
    for default in (*PIPELINE_DEFAULTS, *GLOBAL_DEFAULTS):
        if default.kind == kind:
            return default.threshold, default.window_minutes
    return 0.0, 15


@transaction.atomic
def alert_rule_create(
    *,
    kind: str,
    pipeline: Pipeline | None,
    actor: AbstractBaseUser | None,
    **fields: Any,
) -> AlertRule:
    """Add a rule of `kind` to a pipeline (or, for breaker and worker rules, to the whole
    installation) with its threshold, window, cooldown and channels; audited with its fields.
    A field the kind does not use (a breaker rule's threshold) takes the kind's default."""
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise TypeError(f"not settable: {sorted(unknown)}")
    try:
        chosen = Kind(kind)
    except ValueError:
        raise ValidationError({"kind": ["Choose a kind of rule."]}) from None
    if chosen == Kind.REVIEW_OVERDUE and not review_installed():
        raise ValidationError({"kind": ["Review is not installed: no review tasks to watch."]})
    if chosen in GLOBAL_KINDS and pipeline is not None:
        raise ValidationError(
            {
                "pipeline": [
                    f"A “{KIND_HELP[chosen][0]}” rule watches the whole installation: "
                    "leave the pipeline empty."
                ]
            }
        )
    if chosen not in GLOBAL_KINDS and pipeline is None:
        raise ValidationError({"pipeline": [f"A “{KIND_HELP[chosen][0]}” rule needs a pipeline."]})
    threshold, window = _default_of(chosen)
    _, threshold_help, window_help = KIND_HELP[chosen]
    if threshold_help == "—" or fields.get("threshold") is None:
        fields["threshold"] = threshold
    if window_help == "—" or "window_minutes" not in fields:
        fields["window_minutes"] = window
    errors = _changes_clean(fields)
    if errors:
        raise ValidationError(errors)
    rule = AlertRule(kind=chosen.value, pipeline=pipeline, **fields)
    rule.full_clean()
    rule.save()
    audit_record(
        actor=actor,
        action="alert_rule.create",
        obj=rule,
        client=_client_of(rule),
        after={"kind": rule.kind, **_rule_fields(rule)},
    )
    return rule


@transaction.atomic
def alert_rule_delete(*, rule: AlertRule, actor: AbstractBaseUser | None) -> None:
    """Delete a rule with its alerts (their history goes with it; the audit entry keeps the
    rule's fields). The last rule of a pipeline, and the last global rule of a kind, stay:
    migrate would give them back (turn them off instead)."""
    siblings = AlertRule.objects.exclude(pk=rule.pk)
    if rule.pipeline_id is None:
        if not siblings.filter(pipeline__isnull=True, kind=rule.kind).exists():
            raise ValidationError(
                "This is the installation's only rule of its kind and would come back at the "
                "next migrate: turn it off instead."
            )
    elif not siblings.filter(pipeline_id=rule.pipeline_id).exists():
        raise ValidationError(
            "This is the pipeline's last rule and the defaults would come back at the next "
            "migrate: turn it off instead."
        )
    before = {"kind": rule.kind, **_rule_fields(rule)}
    client = _client_of(rule)
    audit_record(actor=actor, action="alert_rule.delete", obj=rule, client=client, before=before)
    rule.delete()
