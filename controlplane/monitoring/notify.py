"""Telling people about alerts: email (Django's mailer) and a Slack-compatible webhook
(`{"text": ...}`, POSTed with pipelines.posting). The in-app channel is the banner, which reads
the alerts themselves. A failing channel is logged and noted on the alert; it never raises, so a
mail server that is down cannot stop evaluation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.urls import reverse

from controlplane.monitoring.models import Alert, AlertRule
from controlplane.roles import Role
from pipelines.posting import Answer, Post, post_all

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 5
WEBHOOK_CONCURRENCY = 4


@dataclass(frozen=True)
class Message:
    alert: Alert
    subject: str
    text: str
    resolved: bool


def _link(alert: Alert) -> str:
    base = getattr(settings, "SLUICE_BASE_URL", "")
    return f"{base}{reverse('alert-list')}" if base else ""


def message_for(alert: Alert, *, resolved: bool) -> Message:
    """What every channel says about an alert that opened or resolved."""
    rule: AlertRule = alert.rule
    if resolved:
        subject = f"[Sluice] Resolved: {alert.summary}"
        text = f"Resolved: {alert.summary} (open since {alert.opened_at:%Y-%m-%d %H:%M} UTC)"
    else:
        subject = f"[Sluice] Alert: {alert.summary}"
        text = f"Alert: {alert.summary} ({rule.get_kind_display()})"
    link = _link(alert)
    if link:
        text += f"\n{link}"
    return Message(alert=alert, subject=subject[:200], text=text, resolved=resolved)


def recipients_of(rule: AlertRule) -> list[str]:
    """The rule's addresses, or every active operator with an email address."""
    if rule.recipients.strip():
        return [a.strip() for a in rule.recipients.split(",") if a.strip()]
    users = get_user_model().objects.filter(is_active=True).exclude(email="")
    operators = users.filter(groups__name=Role.OPERATOR.value) | users.filter(is_superuser=True)
    return sorted(set(operators.values_list("email", flat=True)))


def webhook_of(rule: AlertRule) -> str:
    return rule.webhook_url or getattr(settings, "SLUICE_ALERT_WEBHOOK_URL", "")


def alerts_notify(*, opened: Sequence[Alert], resolved: Sequence[Alert]) -> None:
    """Send what opened and what resolved by email and webhook, as each rule asks, and note the
    outcome on each alert (`notifications`)."""
    messages = [message_for(a, resolved=False) for a in opened] + [
        message_for(a, resolved=True) for a in resolved
    ]
    notes: dict[int, dict[str, str]] = {m.alert.pk: dict(m.alert.notifications) for m in messages}
    for message in messages:
        if message.alert.rule.notify_email:
            notes[message.alert.pk][_key(message, "email")] = _email(message)
    hooks = [(m, webhook_of(m.alert.rule)) for m in messages if m.alert.rule.notify_webhook]
    hooks = [(m, url) for m, url in hooks if url]
    if hooks:
        answers = _post(
            [
                Post(
                    url=url,
                    body=json.dumps({"text": m.text}).encode(),
                    headers={"Content-Type": "application/json", "User-Agent": "Sluice-alerts"},
                )
                for m, url in hooks
            ]
        )
        for (message, url), answer in zip(hooks, answers, strict=True):
            if answer.error:
                logger.warning("alert webhook to %s failed: %s", url, answer.error)
                note = f"failed: {answer.error}"
            else:
                note = f"sent ({answer.status})"
            notes[message.alert.pk][_key(message, "webhook")] = note[:300]
    for message in messages:
        alert = message.alert
        alert.notifications = notes[alert.pk]
        Alert.objects.filter(pk=alert.pk).update(notifications=alert.notifications)


def _key(message: Message, channel: str) -> str:
    return f"{channel} (resolved)" if message.resolved else channel


def _email(message: Message) -> str:
    to = recipients_of(message.alert.rule)
    if not to:
        return "no recipients"
    try:
        send_mail(message.subject, message.text, None, to)
    except Exception as exc:  # a mail server down must not stop evaluation
        logger.warning("alert email failed: %s", exc)
        return f"failed: {type(exc).__name__}: {exc}"[:300]
    return f"sent to {len(to)}"


def _post(posts: list[Post]) -> list[Answer]:
    try:
        return post_all(posts, timeout=WEBHOOK_TIMEOUT_SECONDS, concurrency=WEBHOOK_CONCURRENCY)
    except Exception as exc:  # posting never raises by design; be sure of it here too
        logger.warning("alert webhooks failed: %s", exc)
        return [Answer(f"{type(exc).__name__}: {exc}") for _ in posts]
