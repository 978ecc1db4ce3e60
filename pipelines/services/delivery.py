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

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.bulk import rows_update
from pipelines.gate import public_error_message
from pipelines.models import Delivery, Item, LedgerEvent
from pipelines.posting import Answer, Post, post_all
from pipelines.retry import retry_delay
from pipelines.services.rollups import latencies_add
from pipelines.wake import wake_send

TIMEOUT_SECONDS = 10
BATCH_SIZE = 200
# Requests in flight at once from one worker, over every endpoint.
CONCURRENCY = 16
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


def deliveries_claim(*, limit: int = BATCH_SIZE) -> list[Delivery]:
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
            lease_expires_at=now + timedelta(seconds=settings.SLUICE_DELIVERY_LEASE_SECONDS),
        )
    return list(Delivery.objects.filter(pk__in=ids).select_related("item__pipeline__client"))


def deliveries_send(*, limit: int = BATCH_SIZE) -> dict[str, int]:
    """Send one batch of due deliveries at once and record them together; returns how many
    were delivered and held."""
    claimed = deliveries_claim(limit=limit)
    if not claimed:
        return {"delivered": 0, "held": 0}
    answers = post_all(
        [Post(d.url, *_request(d)) for d in claimed],
        timeout=TIMEOUT_SECONDS,
        concurrency=CONCURRENCY,
    )
    _deliveries_record(claimed, answers)
    held = sum(1 for answer in answers if answer.error)
    return {"delivered": len(claimed) - held, "held": held}


def _request(delivery: Delivery) -> tuple[bytes, dict[str, str]]:
    item = delivery.item
    body = json.dumps(delivery_payload(item), cls=DjangoJSONEncoder).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Sluice-Webhook/1",
        "X-Sluice-Delivery": str(delivery.pk),
        "X-Sluice-Timestamp": str(int(time.time())),
        SIGNATURE_HEADER: signature(secret=item.pipeline.client.webhook_secret, body=body),
    }
    return body, headers


@transaction.atomic
def _deliveries_record(deliveries: list[Delivery], answers: list[Answer]) -> None:
    """Write a batch's outcomes: delivered ones with their item's ledger event, held ones with
    their next attempt after a backoff."""
    now = timezone.now()
    done: list[Delivery] = []
    for delivery, answer in zip(deliveries, answers, strict=True):
        error = answer.error
        delivery.attempts += 1
        delivery.response_status = answer.status
        delivery.lease_expires_at = None
        delivery.last_error = error
        if error:
            delay = retry_delay(attempt=min(delivery.attempts, 20), cap=MAX_BACKOFF_SECONDS)
            delivery.status = Delivery.Status.PENDING
            delivery.next_attempt_at = now + timedelta(seconds=delay)
        else:
            delivery.status = Delivery.Status.DELIVERED
            delivery.delivered_at = now
            done.append(delivery)
    rows_update(
        deliveries,
        [
            "attempts",
            "response_status",
            "lease_expires_at",
            "last_error",
            "status",
            "next_attempt_at",
            "delivered_at",
        ],
    )
    if not done:
        return
    items = Item.objects.filter(pk__in=[d.item_id for d in done])
    if connection.vendor == "postgresql":
        items = items.select_for_update()
    current = dict(items.values_list("id", "status"))
    # An accepted item ends delivered; a rejected one stays rejected, delivered as such.
    LedgerEvent.objects.bulk_create(
        [
            LedgerEvent(
                item_id=d.item_id,
                actor="delivery",
                from_status=current[d.item_id],
                to_status=Item.Status.DELIVERED
                if current[d.item_id] == Item.Status.DELIVERING
                else current[d.item_id],
                detail={
                    "delivered_to": d.url,
                    "response": d.response_status,
                    "attempt": d.attempts,
                },
            )
            for d in done
            if d.item_id in current
        ]
    )
    Item.objects.filter(
        pk__in=[pk for pk, status in current.items() if status == Item.Status.DELIVERING]
    ).update(status=Item.Status.DELIVERED, updated_at=now)
    # The SLA runs from receipt to delivery: a delivered item's end to end is counted here.
    samples: dict[tuple[int, str], list[float]] = {}
    for d in done:
        samples.setdefault((d.item.pipeline_id, "end_to_end"), []).append(
            (now - d.item.created_at).total_seconds()
        )
    latencies_add(samples, at=now)


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


DELIVERY_WAKE_KEY = "delivery-wake"


def delivery_wake() -> None:
    """Ask a worker to send due deliveries (best effort: see pipelines.wake)."""
    wake_send(
        key=DELIVERY_WAKE_KEY, func="pipelines.tasks.deliveries_send_task", task_name="deliveries"
    )
