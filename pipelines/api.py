"""The public REST API of items: submit, read, list. Every object is scoped to the client of
the API key; another client's pipeline or item is a 404, the same as one that does not exist."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from ninja import Field, Header, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import ConfigDict, field_validator

from controlplane.api_auth import ApiKeyAuth
from pipelines.gate import public_error_message
from pipelines.models import IdempotencyKey, Item, Pipeline
from pipelines.services.ingest import items_submit

router = Router(auth=ApiKeyAuth(), tags=["items"])


class ApiError(HttpError):
    """An error answered as JSON with a machine-readable code, the field and a message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.code = code
        self.field = field
        self.headers = headers or {}


class Strict(Schema):
    model_config = ConfigDict(extra="forbid")


def _storable(value: Any, path: str = "data") -> None:
    """Refuse what a database cannot keep faithfully: NUL characters (PostgreSQL text and jsonb
    reject them) and NaN or infinite numbers (JSON has no such values)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{path} contains a NUL character")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is not a finite number")
    elif isinstance(value, dict):
        for key, inner in value.items():
            if "\x00" in key:
                raise ValueError(f"a key in {path} contains a NUL character")
            _storable(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _storable(inner, f"{path}[{index}]")


class ItemIn(Strict):
    data: dict[str, Any] = Field(description="The item's fields; checked against the input schema.")
    external_id: str | None = Field(
        None, max_length=200, description="Your id; sent twice, counted once."
    )
    priority: int | None = Field(
        None, ge=0, le=9, description="0 (lowest) to 9; default: the pipeline's."
    )

    @field_validator("data")
    @classmethod
    def _data_storable(cls, data: dict[str, Any]) -> dict[str, Any]:
        _storable(data)
        return data

    @field_validator("external_id")
    @classmethod
    def _id_storable(cls, value: str | None) -> str | None:
        if value is not None:
            _storable(value, "external_id")
        return value


class SubmitIn(Strict):
    items: list[ItemIn] = Field(..., min_length=1, max_length=1000)


class SubmittedOut(Schema):
    id: int
    external_id: str | None
    status: str = Field(description="queued, deduplicated or quarantined")
    original_id: int | None = None
    reason: str | None = None


class SubmitOut(Schema):
    items: list[SubmittedOut]


class StepOut(Schema):
    slug: str
    name: str
    kind: str
    labels: list[str]
    output_schema: dict[str, Any]


class PipelineOut(Schema):
    slug: str
    name: str
    status: str
    input_schema: dict[str, Any]
    steps: list[StepOut]


class ErrorOut(Schema):
    code: str
    message: str
    field: str | None = None


class ItemErrorOut(Schema):
    error_class: str
    message: str


class ItemOut(Schema):
    id: int
    pipeline: str
    external_id: str | None
    status: str
    priority: int
    data: dict[str, Any]
    step: int = Field(description="Position of the step the item is at (or ended at).")
    outputs: dict[str, Any] = Field(
        description="Per step slug: output, confidence, model, prompt version and gate verdict."
    )
    result: dict[str, Any] | None = Field(description="The final output, once accepted.")
    confidence: float | None
    review_reason: str | None = Field(description="Why the gate held it, while in review.")
    attempts: int
    error: ItemErrorOut | None
    input_tokens: int
    output_tokens: int
    cost: str = Field(description="Model cost so far, in the prices' currency.")
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ItemPageOut(Schema):
    items: list[ItemOut]
    next_cursor: str | None


def _item_out(item: Item) -> dict[str, Any]:
    return {
        "id": item.pk,
        "pipeline": item.pipeline.slug,
        "external_id": item.external_id or None,
        "status": item.status,
        "priority": item.priority,
        "data": item.data,
        "step": item.step_position,
        "outputs": item.outputs,
        "result": item.result,
        "confidence": item.confidence,
        "review_reason": item.hold_reason or None,
        "attempts": item.attempts,
        "error": {
            "error_class": item.error_class,
            "message": public_error_message(item.error_class, item.error_message),
        }
        if item.error_class
        else None,
        "input_tokens": item.input_tokens,
        "output_tokens": item.output_tokens,
        "cost": str(item.cost),
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "finished_at": item.finished_at,
    }


def _pipeline_for(request: HttpRequest, slug: str) -> Pipeline:
    pipeline = Pipeline.objects.filter(client=request.auth.client, slug=slug).first()
    if pipeline is None:
        raise ApiError(404, "not_found", f'No pipeline "{slug}" for this API key.', field="slug")
    return pipeline


def _rate_check(request: HttpRequest, count: int) -> None:
    """A fixed one-minute window per client, shared by every web process through the cache."""
    client = request.auth.client
    window = int(datetime.now().timestamp() // 60)
    key = f"ingest-rate:{client.pk}:{window}"
    cache.add(key, 0, timeout=120)
    try:
        used = cache.incr(key, count)
    except ValueError:
        cache.add(key, count, timeout=120)
        used = count
    if used > client.ingest_limit_per_minute:
        retry_after = 60 - int(datetime.now().timestamp()) % 60
        raise ApiError(
            429,
            "rate_limited",
            f"This client may submit {client.ingest_limit_per_minute} items a minute; "
            f"retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


@router.get("/pipelines", response=list[PipelineOut], summary="The key's client's pipelines")
def pipeline_list(request: HttpRequest):
    pipelines = Pipeline.objects.filter(client=request.auth.client).prefetch_related("steps")
    return [
        {
            "slug": p.slug,
            "name": p.name,
            "status": p.status,
            "input_schema": p.input_schema,
            "steps": [
                {
                    "slug": s.slug,
                    "name": s.name,
                    "kind": s.kind,
                    "labels": s.labels,
                    "output_schema": s.output_schema,
                }
                for s in p.steps.all()
            ],
        }
        for p in pipelines
    ]


@router.post(
    "/pipelines/{slug}/items",
    response={202: SubmitOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut, 429: ErrorOut},
    summary="Submit 1 to 1000 items",
)
def items_create(
    request: HttpRequest,
    slug: str,
    payload: SubmitIn,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=200),
):
    """Each item is answered in order: `queued`, `deduplicated` (with the original's id) or
    `quarantined` (with the reason). With an `Idempotency-Key` header the same request sent
    again gets the same answer and creates nothing."""
    pipeline = _pipeline_for(request, slug)
    body = payload.model_dump(mode="json")
    if idempotency_key:
        digest = hashlib.sha256(json.dumps([slug, body], sort_keys=True).encode()).hexdigest()
        stored = _idempotent_answer(request, idempotency_key, digest)
        if stored is not None:
            return stored
    _rate_check(request, len(payload.items))
    actor = f"api:{request.auth.prefix}"
    try:
        with transaction.atomic():
            outcomes = items_submit(pipeline=pipeline, entries=body["items"], actor=actor)
            answer = {
                "items": [
                    {
                        "id": o.id,
                        "external_id": o.external_id or None,
                        "status": o.status,
                        "original_id": o.original_id,
                        "reason": o.reason or None,
                    }
                    for o in outcomes
                ]
            }
            if idempotency_key:
                IdempotencyKey.objects.create(
                    client=request.auth.client,
                    key=idempotency_key,
                    request_hash=digest,
                    status_code=202,
                    response=answer,
                )
    except ValidationError as exc:
        raise ApiError(409, exc.code or "invalid", " ".join(exc.messages)) from None
    except IntegrityError:
        # The same key arrived twice at once: the first request's answer is the answer.
        stored = _idempotent_answer(request, idempotency_key, digest) if idempotency_key else None
        if stored is None:
            raise
        return stored
    return Status(202, answer)


def _idempotent_answer(request: HttpRequest, key: str, digest: str):
    record = IdempotencyKey.objects.filter(client=request.auth.client, key=key).first()
    if record is None:
        return None
    if record.request_hash != digest:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request.",
            field="Idempotency-Key",
        )
    return Status(record.status_code, record.response)


@router.get("/items/{item_id}", response={200: ItemOut, 404: ErrorOut}, summary="One item")
def item_get(request: HttpRequest, item_id: int):
    item = (
        Item.objects.select_related("pipeline")
        .filter(pk=item_id, pipeline__client=request.auth.client)
        .first()
    )
    if item is None:
        raise ApiError(404, "not_found", f"No item {item_id} for this API key.", field="item_id")
    return _item_out(item)


class ItemFilters(Schema):
    pipeline: str | None = None
    status: str | None = None
    since: datetime | None = Field(None, description="Items received at or after this time.")
    cursor: str | None = Field(None, description="next_cursor of the previous page.")
    limit: int = Field(100, ge=1, le=1000)


@router.get("/items", response={200: ItemPageOut, 422: ErrorOut}, summary="List items")
def item_list(request: HttpRequest, filters: Query[ItemFilters]):
    """Oldest first, by cursor: a page never counts the table, and new items never shift it."""
    items = Item.objects.select_related("pipeline").filter(pipeline__client=request.auth.client)
    if filters.pipeline:
        items = items.filter(pipeline__slug=filters.pipeline)
    if filters.status:
        if filters.status not in Item.Status.values:
            raise ApiError(
                422,
                "invalid",
                f"Unknown status; use one of {', '.join(Item.Status.values)}.",
                field="status",
            )
        items = items.filter(status=filters.status)
    if filters.since:
        items = items.filter(created_at__gte=filters.since)
    if filters.cursor:
        try:
            after = int(base64.urlsafe_b64decode(filters.cursor.encode()).decode())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(
                422, "invalid", "The cursor is not one this API gave.", field="cursor"
            ) from None
        items = items.filter(pk__gt=after)
    page = list(items.order_by("id")[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    cursor = base64.urlsafe_b64encode(str(page[-1].pk).encode()).decode() if more and page else None
    return {"items": [_item_out(item) for item in page], "next_cursor": cursor}
