"""Delivery: POST each finished item to its client's webhook, signed, retried with backoff and
held while the endpoint is down. A delivery is keyed by its item, so an item is delivered once;
the X-Sluice-Delivery header lets a receiver drop the rare resend after a lost acknowledgement.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta

import httpx
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from pipelines.gate import public_error_message
from pipelines.models import Delivery, Item, LedgerEvent
from pipelines.retry import retry_delay

TIMEOUT_SECONDS = 10
LEASE_SECONDS = 60
# Held, not dropped: an endpoint that is down for hours gets the item when it is back.
MAX_BACKOFF_SECONDS = 600
SIGNATURE_HEADER = "X-Sluice-Signature"


def webhook_secret_new() -> str:
    return secrets.token_hex(32)


def signature(*, secret: str, body: bytes) -> str:
    """`sha256=<hex>` of the body under the client's secret, as in the signature header."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_payload(item: Item) -> dict:
    """What the client receives: the same fields the API shows for the item."""
    return {
        "id": item.pk,
        "pipeline": item.pipeline.slug,
        "external_id": item.external_id or None,
        # Delivering is our business; the client hears the outcome.
        "status": Item.Status.ACCEPTED if item.status == Item.Status.DELIVERING else item.status,
        "result": item.result,
        "outputs": item.outputs,
        "confidence": item.confidence,
        "error": {
            "error_class": item.error_class,
            "message": public_error_message(item.error_class, item.error_message),
        }
        if item.error_class
        else None,
        "cost": str(item.cost),
        "created_at": item.created_at,
        "finished_at": item.finished_at,
    }


def deliveries_claim(*, limit: int = 50) -> list[Delivery]:
    """Take due deliveries under a short lease, so two workers never send the same one at once."""
    now = timezone.now()
    with transaction.atomic():
        due = Delivery.objects.filter(
            Q(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
            | Q(status=Delivery.Status.PENDING, next_attempt_at__isnull=True)
            | Q(status=Delivery.Status.SENDING, lease_expires_at__lt=now)
        ).order_by("id")
        if connection.vendor == "postgresql":
            due = due.select_for_update(skip_locked=True)
        ids = list(due.values_list("id", flat=True)[:limit])
        Delivery.objects.filter(pk__in=ids).update(
            status=Delivery.Status.SENDING,
            lease_expires_at=now + timedelta(seconds=LEASE_SECONDS),
        )
    return list(Delivery.objects.filter(pk__in=ids).select_related("item__pipeline__client"))


def deliveries_send(*, limit: int = 50) -> dict[str, int]:
    """Send one batch of due deliveries; returns how many were delivered and held."""
    counts = {"delivered": 0, "held": 0}
    claimed = deliveries_claim(limit=limit)
    if not claimed:
        return counts
    with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False) as client:
        for delivery in claimed:
            item = delivery.item
            body = json.dumps(delivery_payload(item), cls=DjangoJSONEncoder).encode()
            secret = item.pipeline.client.webhook_secret
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "Sluice-Webhook/1",
                "X-Sluice-Delivery": str(delivery.pk),
                "X-Sluice-Timestamp": str(int(time.time())),
                SIGNATURE_HEADER: signature(secret=secret, body=body),
            }
            error, status_code = "", None
            try:
                response = client.post(delivery.url, content=body, headers=headers)
                status_code = response.status_code
                if not 200 <= status_code < 300:
                    error = f"the endpoint answered {status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            _delivery_record(delivery=delivery, error=error, status_code=status_code)
            counts["held" if error else "delivered"] += 1
    return counts


@transaction.atomic
def _delivery_record(*, delivery: Delivery, error: str, status_code: int | None) -> None:
    now = timezone.now()
    delivery.attempts += 1
    delivery.response_status = status_code
    delivery.lease_expires_at = None
    if not error:
        delivery.status = Delivery.Status.DELIVERED
        delivery.delivered_at = now
        delivery.last_error = ""
        delivery.save()
        item = Item.objects.select_for_update().get(pk=delivery.item_id)
        # An accepted item ends delivered; a rejected one stays rejected, delivered as such.
        to_status = Item.Status.DELIVERED if item.status == Item.Status.DELIVERING else item.status
        LedgerEvent.objects.create(
            item=item,
            actor="delivery",
            from_status=item.status,
            to_status=to_status,
            detail={
                "delivered_to": delivery.url,
                "response": status_code,
                "attempt": delivery.attempts,
            },
        )
        Item.objects.filter(pk=item.pk).update(status=to_status, updated_at=now)
        return
    delay = retry_delay(attempt=min(delivery.attempts, 20), cap=MAX_BACKOFF_SECONDS)
    delivery.status = Delivery.Status.PENDING
    delivery.last_error = error
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    delivery.save()


def deliveries_open(*, items: list[Item]) -> list[Delivery]:
    """Open the delivery of finished items whose client has a webhook (call in the transaction
    that finishes them); accepted ones become `delivering`."""
    rows = []
    for item in items:
        url = item.pipeline.client.webhook_url
        if url and item.status in (
            Item.Status.ACCEPTED,
            Item.Status.DELIVERING,
            Item.Status.REJECTED,
        ):
            rows.append(Delivery(item=item, url=url))
    created = Delivery.objects.bulk_create(rows, ignore_conflicts=True)
    if created:
        transaction.on_commit(delivery_wake)
    return created


def delivery_wake() -> None:
    from django.core.cache import cache
    from django_q.tasks import async_task

    if cache.add("delivery-wake", 1, timeout=1):
        async_task("pipelines.tasks.deliveries_send_task", task_name="deliveries")
