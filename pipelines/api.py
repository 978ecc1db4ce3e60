"""The public REST API of items (submit, read, list) and of dead letters (list, read an item's
ledger, re-drive). Every object is scoped to the client of the API key; another client's
pipeline or item is a 404, the same as one that does not exist."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Header, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictInt,
    field_validator,
)

from controlplane.api_auth import ApiKeyAuth
from pipelines.gate import public_error_message
from pipelines.models import IdempotencyKey, Item, Pipeline, Step
from pipelines.rows_io import MAX_DEPTH
from pipelines.rows_io import _text_problem as text_problem
from pipelines.services.ingest import items_submit
from pipelines.services.redrive import (
    REDRIVABLE,
    REDRIVE_LIMIT,
    DryRun,
    dead_letter_filter,
    items_redrive,
    items_redrive_dry_run,
)

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


def _storable(value: Any, path: str = "data", depth: int = 1) -> None:
    """Refuse what a database cannot keep faithfully: NUL characters (PostgreSQL text and jsonb
    reject them), half of a surrogate pair (not text at all), NaN or infinite numbers (JSON has
    no such values), and nesting deeper than uploads take (MAX_DEPTH), which no real data has
    and which every step that walks the data would fail on."""
    if isinstance(value, str):
        if reason := text_problem(value):
            raise ValueError(f"{path} {reason}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is not a finite number")
    elif isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            raise ValueError(f"{path} is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, list):
            for index, inner in enumerate(value):
                _storable(inner, f"{path}[{index}]", depth + 1)
            return
        for key, inner in value.items():
            if reason := text_problem(key):
                raise ValueError(f"a key in {path} {reason}")
            _storable(inner, f"{path}.{key}", depth + 1)


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


def _iso_moment(value: Any) -> Any:
    # pydantic would also read a bare number as seconds since 1970: the document promises
    # ISO 8601, and a number there is a client's mistake worth a 422.
    if isinstance(value, str) and not re.match(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("Give a time in ISO 8601, e.g. 2026-01-31T12:00:00Z.")
    return value


def _storable_moment(value: datetime) -> datetime:
    # In UTC: PostgreSQL refuses offsets past ±16 h (…T19:24:59-20:52 parses here), and a time
    # that falls before year 1 in UTC is a 422 here rather than an overflow there.
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("That time is out of range.") from None


Moment = Annotated[datetime, BeforeValidator(_iso_moment), AfterValidator(_storable_moment)]


class ItemFilters(Schema):
    pipeline: str | None = None
    status: str | None = None
    since: Moment | None = Field(None, description="Items received at or after this time.")
    cursor: str | None = Field(None, description="next_cursor of the previous page.")
    limit: int = Field(100, ge=1, le=1000)


def _cursor_page(items, *, cursor: str | None, limit: int) -> tuple[list, str | None]:
    """One page of `items` in id order after the opaque `cursor`, and the next page's cursor
    (None on the last page). Keyset pagination: no count, no offset."""
    if cursor:
        try:
            after = int(base64.urlsafe_b64decode(cursor.encode()).decode())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(
                422, "invalid", "The cursor is not one this API gave.", field="cursor"
            ) from None
        items = items.filter(pk__gt=after)
    page = list(items.order_by("id")[: limit + 1])
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    return page, base64.urlsafe_b64encode(str(page[-1].pk).encode()).decode()


def _once_each(request: HttpRequest, filters: type[Schema]) -> None:
    """422 for a filter given more than once (`?step=a&step=b`): each takes one value, and
    silently using one of them would answer a question the client did not ask."""
    for name in filters.model_fields:
        if len(request.GET.getlist(name)) > 1:
            raise ApiError(422, "invalid", f"Give {name} at most once.", field=name)


@router.get("/items", response={200: ItemPageOut, 422: ErrorOut}, summary="List items")
def item_list(request: HttpRequest, filters: Query[ItemFilters]):
    """Oldest first, by cursor: a page never counts the table, and new items never shift it."""
    _once_each(request, ItemFilters)
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
    page, cursor = _cursor_page(items, cursor=filters.cursor, limit=filters.limit)
    return {"items": [_item_out(item) for item in page], "next_cursor": cursor}


# --- Dead letters -------------------------------------------------------------------------------

ERROR_CLASSES = ("transient", "system", "processing", "input", "provider_limit")
MAX_ID = 2**63 - 1
# Ledger details an integrator may read; the rest (hosts, workers, raw provider errors) stays
# with the operator, as on the item page.
PUBLIC_LEDGER_DETAIL = (
    "step",
    "attempt",
    "prompt_version",
    "model",
    "fallbacks_tried",
    "confidence",
    "verdict",
    "error_class",
    "retry_in_seconds",
    "max_attempts",
    "next_step",
    "reason",
    "input_tokens",
    "output_tokens",
    "cost",
    "latency_ms",
    "simulated",
)


class DeadLetterFilters(Schema):
    status: Literal["dead_lettered", "rejected"] = Field(
        "dead_lettered", description="Dead letters (the default) or rejected items."
    )
    pipeline: str | None = Field(None, description="A pipeline's slug.")
    step: str | None = Field(
        None, max_length=60, description="Position (1, 2, …) or slug of the step they stopped at."
    )
    error_class: str | None = Field(None, description=f"One of {', '.join(ERROR_CLASSES)}.")
    since: Moment | None = Field(None, description="Ended at or after this time.")
    until: Moment | None = Field(None, description="Ended before this time.")
    cursor: str | None = Field(None, description="next_cursor of the previous page.")
    limit: int = Field(100, ge=1, le=1000)


class DeadLetterOut(ItemOut):
    step_slug: str | None = Field(description="Slug of the step the item stopped at.")
    prompt_pins: dict[str, int] = Field(
        description="Step slug to the prompt version a re-drive pinned the item to."
    )


class DeadLetterPageOut(Schema):
    items: list[DeadLetterOut]
    next_cursor: str | None


class LedgerEventOut(Schema):
    at: datetime
    from_status: str | None = Field(description="None for the item's first event.")
    to_status: str
    by: str = Field(description="sluice (the engine), operator, or api:<key prefix>.")
    detail: dict[str, Any] = Field(
        description="Step, attempt, prompt version, model, verdict, error class and message, "
        "tokens, cost and latency, where they apply."
    )


class LedgerOut(Schema):
    item_id: int
    events: list[LedgerEventOut]


class RedriveIn(Strict):
    ids: list[Annotated[StrictInt, Field(ge=1, le=MAX_ID)]] = Field(
        ..., min_length=1, max_length=REDRIVE_LIMIT, description="1 to 1000 item ids."
    )
    prompt_version: StrictInt | None = Field(
        None,
        ge=1,
        le=2**31 - 1,
        description="Run the step the items stopped at with this prompt version instead of its "
        "production label; all items must be at the same step.",
    )
    dry_run: StrictBool = Field(
        description="true: try a sample of up to 5 and write nothing; false: queue them."
    )


class SkippedOut(Schema):
    id: int
    reason: str = Field(description="not_found, or not_redrivable (with the item's status).")
    status: str | None = None


class DryRunItemOut(Schema):
    id: int
    outcome: str = Field(description="accepted, in_review, rejected or error.")
    prompt_version: int | None
    model: str | None
    simulated: bool
    output: dict[str, Any] | None
    confidence: float | None
    reasons: list[str] = Field(description="Why the gate would hold it.")
    error: ItemErrorOut | None


class DryRunOut(Schema):
    dry_run: bool = True
    sample: list[DryRunItemOut]
    redrivable: int = Field(description="How many of the ids a re-drive would queue.")
    skipped: list[SkippedOut]


class RedriveOut(Schema):
    queued: int
    ids: list[int]
    prompt_version: int | None
    skipped: list[SkippedOut]


def _dead_letter_out(item: Item, slugs: dict[tuple[int, int], str]) -> dict[str, Any]:
    return {
        **_item_out(item),
        "step_slug": slugs.get((item.pipeline_id, item.step_position)),
        "prompt_pins": {k: v for k, v in (item.prompt_pins or {}).items() if isinstance(v, int)},
    }


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and timezone.is_naive(moment):
        return timezone.make_aware(moment, timezone.get_default_timezone())
    return moment


@router.get(
    "/dead-letters",
    response={200: DeadLetterPageOut, 422: ErrorOut},
    summary="List dead letters",
    tags=["dead letters"],
)
def dead_letter_list(request: HttpRequest, filters: Query[DeadLetterFilters]):
    """The client's items that failed for good (or were rejected), oldest first, by cursor;
    filter by pipeline, step, error class and when they ended."""
    _once_each(request, DeadLetterFilters)
    items = Item.objects.select_related("pipeline").filter(pipeline__client=request.auth.client)
    if filters.pipeline:
        items = items.filter(pipeline__slug=filters.pipeline)
    if filters.error_class and filters.error_class not in ERROR_CLASSES:
        raise ApiError(
            422,
            "invalid",
            f"Unknown error class; use one of {', '.join(ERROR_CLASSES)}.",
            field="error_class",
        )
    step = (filters.step or "").strip()
    if step.isdigit() and not 1 <= int(step) <= 32767:
        raise ApiError(422, "invalid", "A step position is a number from 1.", field="step")
    since, until = _aware(filters.since), _aware(filters.until)
    if since and until and until <= since:
        raise ApiError(422, "invalid", "until must be after since.", field="until")
    items = dead_letter_filter(
        items,
        status=filters.status,
        error_class=filters.error_class or "",
        step=step,
        since=since,
        until=until,
    )
    page, cursor = _cursor_page(items, cursor=filters.cursor, limit=filters.limit)
    slugs = {
        (s.pipeline_id, s.position): s.slug
        for s in Step.objects.filter(pipeline_id__in={item.pipeline_id for item in page})
    }
    return {"items": [_dead_letter_out(item, slugs) for item in page], "next_cursor": cursor}


def _public_actor(actor: str) -> str:
    if actor.startswith("api:"):
        return actor
    if actor.startswith("user:"):
        return "operator"
    return "sluice"


def _public_detail(detail: dict[str, Any]) -> dict[str, Any]:
    public = {key: detail[key] for key in PUBLIC_LEDGER_DETAIL if key in detail}
    if detail.get("error_class"):
        public["error"] = public_error_message(detail["error_class"], str(detail.get("error", "")))
    return public


@router.get(
    "/items/{item_id}/ledger",
    response={200: LedgerOut, 404: ErrorOut, 422: ErrorOut},
    summary="An item's ledger",
    tags=["dead letters"],
)
def item_ledger(request: HttpRequest, item_id: int):
    """Every state change of the item, oldest first: what ran, with which prompt version and
    model, what the gate said, and each error."""
    item = Item.objects.filter(pk=item_id, pipeline__client=request.auth.client).first()
    if item is None:
        raise ApiError(404, "not_found", f"No item {item_id} for this API key.", field="item_id")
    events = [
        {
            "at": event.at,
            "from_status": event.from_status or None,
            "to_status": event.to_status,
            "by": _public_actor(event.actor),
            "detail": _public_detail(event.detail or {}),
        }
        for event in item.ledger.order_by("at", "id")
    ]
    return {"item_id": item.pk, "events": events}


def _validation_error(exc: ValidationError) -> ApiError:
    if hasattr(exc, "error_dict"):
        field, errors = next(iter(exc.error_dict.items()))
        first = errors[0]
        message = " ".join(ValidationError(first).messages)
        return ApiError(422, first.code or "invalid", message, field=field)
    return ApiError(422, exc.code or "invalid", " ".join(exc.messages))


@router.post(
    "/dead-letters/redrive",
    response={200: DryRunOut, 202: RedriveOut, 422: ErrorOut},
    summary="Re-drive dead letters (or dry-run a sample)",
    tags=["dead letters"],
)
def dead_letter_redrive(request: HttpRequest, payload: RedriveIn):
    """Queue the client's dead-lettered or rejected items again from the step they stopped at,
    optionally pinned to another prompt version of that step. With `dry_run` a sample of up to
    5 runs once as it would now and nothing is written. Ids of other items are skipped."""
    wanted = list(dict.fromkeys(payload.ids))
    found = {
        item.pk: item
        for item in Item.objects.select_related("pipeline").filter(
            pk__in=wanted, pipeline__client=request.auth.client
        )
    }
    redrivable = [found[pk] for pk in wanted if pk in found and found[pk].status in REDRIVABLE]
    skipped: list[dict[str, Any]] = []
    for pk in wanted:
        if pk not in found:
            skipped.append({"id": pk, "reason": "not_found"})
        elif found[pk].status not in REDRIVABLE:
            skipped.append({"id": pk, "reason": "not_redrivable", "status": found[pk].status})
    try:
        if payload.dry_run:
            runs = items_redrive_dry_run(items=redrivable, prompt_version=payload.prompt_version)
            return {
                "dry_run": True,
                "sample": [_dry_run_out(run) for run in runs],
                "redrivable": len(redrivable),
                "skipped": skipped,
            }
        done = items_redrive(
            items=redrivable,
            actor=None,
            actor_label=f"api:{request.auth.prefix}",
            prompt_version=payload.prompt_version,
            client=request.auth.client,
        )
    except ValidationError as exc:
        raise _validation_error(exc) from None
    # Items that changed status between the read above and the re-drive's lock.
    skipped.extend({"id": pk, "reason": "not_redrivable"} for pk in done.skipped)
    answer = {
        "queued": len(done.queued),
        "ids": done.queued,
        "prompt_version": done.prompt_version,
        "skipped": skipped,
    }
    return Status(202, answer)


def _dry_run_out(run: DryRun) -> dict[str, Any]:
    trial = run.trial
    return {
        "id": run.item.pk,
        "outcome": run.outcome,
        "prompt_version": run.prompt_version,
        "model": trial.model or None,
        "simulated": trial.simulated,
        "output": trial.output if isinstance(trial.output, dict) else None,
        "confidence": trial.confidence,
        "reasons": list(trial.verdict.reasons) if trial.verdict else [],
        "error": {
            "error_class": trial.error_class,
            "message": public_error_message(trial.error_class, trial.error),
        }
        if trial.error
        else None,
    }
