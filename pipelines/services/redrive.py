"""Dead letters and rejected items, sent through their pipeline again on purpose: from the step
they stopped at, with fresh attempts, optionally against another prompt version of that step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from controlplane.models import Client
from controlplane.services import audit_record
from pipelines.models import Item, LedgerEvent, PromptLabel, PromptVersion, Step
from pipelines.services.trial import Trial, step_try

REDRIVABLE = (Item.Status.DEAD_LETTERED, Item.Status.REJECTED)
DRY_RUN_SAMPLE = 5
# One re-drive queues at most this many items: a bigger backlog is re-driven in several goes,
# so one click never floods the queue and the audit entry stays readable.
REDRIVE_LIMIT = 1000


@dataclass(frozen=True)
class Redrive:
    """What a re-drive did: the ids queued again, the ids left alone because they were not
    (or no longer) dead-lettered or rejected, and the prompt version they were pinned to."""

    queued: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    prompt_version: int | None = None


def _invalid(field_name: str, message: str, code: str) -> ValidationError:
    """A ValidationError on one field whose code survives (a plain dict would drop it)."""
    return ValidationError({field_name: ValidationError(message, code=code)})


def dead_letter_filter(
    items: QuerySet[Item],
    *,
    status: str = Item.Status.DEAD_LETTERED,
    error_class: str = "",
    step: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Item]:
    """`items` (already scoped to what the caller may see) narrowed to one re-drivable status,
    an error class, a step (its position, or its slug in the item's pipeline) and a range of
    when they ended: `since` inclusive, `until` exclusive."""
    items = items.filter(status=status)
    if error_class:
        items = items.filter(error_class=error_class)
    if step.isdigit():
        items = items.filter(step_position=int(step))
    elif step:
        at_step = Step.objects.filter(
            pipeline_id=OuterRef("pipeline_id"), position=OuterRef("step_position"), slug=step
        )
        items = items.filter(Exists(at_step))
    if since is not None:
        items = items.filter(finished_at__gte=since)
    if until is not None:
        items = items.filter(finished_at__lt=until)
    return items


def _step_of(item: Item) -> Step | None:
    return Step.objects.filter(pipeline_id=item.pipeline_id, position=item.step_position).first()


def redrive_step(*, items: Sequence[Item]) -> Step | None:
    """The one step every item stopped at, or None when they stopped at different steps (or
    at a step their pipeline no longer has)."""
    places = {(item.pipeline_id, item.step_position) for item in items}
    if len(places) != 1:
        return None
    return _step_of(items[0])


def redrive_version(*, items: Sequence[Item], number: int) -> PromptVersion:
    """The prompt version `number` of the step all `items` stopped at; a ValidationError on the
    field `prompt_version` when the items are at different steps or the step has no such
    version."""
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise _invalid("prompt_version", "A prompt version is a whole number from 1.", "invalid")
    places = sorted({(item.pipeline_id, item.step_position) for item in items})
    if len(places) > 1:
        steps = {
            (s.pipeline_id, s.position): f"{s.pipeline.name} · {s.slug}"
            for s in Step.objects.filter(pipeline_id__in={p for p, _ in places}).select_related(
                "pipeline"
            )
        }
        named = ", ".join(steps.get(place, f"step {place[1]}") for place in places[:5])
        raise _invalid(
            "prompt_version",
            f"These items stopped at {len(places)} different steps "
            f"({named}{', …' if len(places) > 5 else ''}); a prompt version belongs to one "
            "step. Re-drive them one step at a time.",
            "mixed_steps",
        )
    step = _step_of(items[0]) if items else None
    if step is None:
        raise _invalid(
            "prompt_version", "The step these items stopped at no longer exists.", "no_step"
        )
    version = step.prompt_versions.filter(number=number).first()
    if version is None:
        numbers = list(step.prompt_versions.order_by("number").values_list("number", flat=True))
        have = f"it has {', '.join(map(str, numbers))}" if numbers else "it has none"
        raise _invalid(
            "prompt_version",
            f'Step "{step.slug}" has no prompt version {number}; {have}.',
            "unknown_version",
        )
    return version


@dataclass(frozen=True)
class DryRun:
    """One sampled item as it would run now: the step and prompt version it would use and what
    the model and the gate made of it."""

    item: Item
    trial: Trial
    step: Step | None = None
    prompt_version: int | None = None

    @property
    def outcome(self) -> str:
        """accepted, in_review or rejected (what the step's gate would do), or error."""
        if self.trial.error or self.trial.verdict is None:
            return "error"
        if self.trial.verdict.accepted:
            return "accepted"
        if self.step is not None and self.step.on_gate_failure == Step.OnGateFailure.REJECT:
            return "rejected"
        return "in_review"


def items_redrive_dry_run(
    *, items: Sequence[Item], prompt_version: int | None = None
) -> list[DryRun]:
    """What re-running would do now, on a sample of the first DRY_RUN_SAMPLE items: each once
    through its step's production prompt (or `prompt_version` of that step) and first matching
    model, writing nothing. The version is checked against every item, as a re-drive would."""
    items = list(items)
    pinned = None
    if prompt_version is not None and items:
        pinned = redrive_version(items=items, number=prompt_version)
    results = []
    for item in items[:DRY_RUN_SAMPLE]:
        if pinned is not None:
            step, version = pinned.step, pinned
        else:
            step = _step_of(item)
            label = (
                PromptLabel.objects.filter(step=step, name=PromptLabel.Name.PRODUCTION)
                .select_related("version")
                .first()
                if step
                else None
            )
            version = label.version if label else None
        if step is None or version is None:
            error = "The item's step has no production prompt."
            results.append(DryRun(item, Trial(error=error, error_class="system"), step))
            continue
        trial = step_try(
            step=step,
            template=version.template,
            parameters=version.parameters,
            data=item.data,
            priority=item.priority,
        )
        results.append(DryRun(item, trial, step, version.number))
    return results


@transaction.atomic
def items_redrive(
    *,
    items: Sequence[Item],
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
    prompt_version: int | None = None,
    client: Client | None = None,
) -> Redrive:
    """Queue dead-lettered or rejected items again from the step they stopped at, with fresh
    attempts; others are skipped. With `prompt_version` every item is pinned to that version of
    its step (all must be at one step); without, the step runs its production prompt again
    (an earlier pin at that step is dropped). Each item gets a ledger event and the re-drive
    one audit entry.

    `actor` is the user, or None for an API key, which is then named by `actor_label`
    (e.g. "api:sk_sluice_ab12"); `client` scopes the audit entry when the caller knows it."""
    ids = list(dict.fromkeys(item.pk for item in items))
    if len(ids) > REDRIVE_LIMIT:
        raise _invalid(
            "ids",
            f"At most {REDRIVE_LIMIT:,} items per re-drive; {len(ids):,} were given.",
            "too_many",
        )
    rows = list(
        Item.objects.select_for_update()
        .filter(pk__in=ids, status__in=REDRIVABLE)
        .select_related("pipeline__client")
        .order_by("id")
    )
    queued_ids = {row.pk for row in rows}
    skipped = [pk for pk in ids if pk not in queued_ids]
    if not rows:
        return Redrive(skipped=skipped)
    version = None
    if prompt_version is not None:
        version = redrive_version(items=rows, number=prompt_version)
    step = version.step if version else None
    now = timezone.now()
    ledger_actor = actor_label or (f"user:{actor.get_username()}" if actor else "system")
    detail: dict[str, object] = {"reason": "re-drive"}
    if version is not None:
        detail.update(step=step.slug, prompt_version=version.number)
    LedgerEvent.objects.bulk_create(
        [
            LedgerEvent(
                item=row,
                actor=ledger_actor[:150],
                from_status=row.status,
                to_status=Item.Status.QUEUED,
                detail=detail,
            )
            for row in rows
        ]
    )
    Item.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=Item.Status.QUEUED,
        attempts=0,
        next_attempt_at=None,
        error_class="",
        error_message="",
        hold_reason="",
        finished_at=None,
        updated_at=now,
    )
    _pins_set(rows, version)
    clients = {row.pipeline.client for row in rows}
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="items.redrive",
        obj=rows[0].pipeline,
        client=client or (clients.pop() if len(clients) == 1 else None),
        after={
            "items": len(rows),
            "ids": [row.pk for row in rows][:100],
            "step": step.slug if step else None,
            "prompt_version": version.number if version else None,
            "skipped": len(skipped),
        },
    )
    from pipelines.services.ingest import engine_wake

    transaction.on_commit(engine_wake)
    return Redrive(
        queued=[row.pk for row in rows],
        skipped=skipped,
        prompt_version=version.number if version else None,
    )


def _pins_set(rows: Sequence[Item], version: PromptVersion | None) -> None:
    """Pin each item's current step to `version`, or, without one, drop a pin left at that step
    by an earlier re-drive, so the step follows its production label as the dry run showed."""
    if version is not None:
        slug_of = {row.pk: version.step.slug for row in rows}
    else:
        slugs = {
            (s.pipeline_id, s.position): s.slug
            for s in Step.objects.filter(pipeline_id__in={row.pipeline_id for row in rows})
        }
        slug_of = {row.pk: slugs.get((row.pipeline_id, row.step_position)) for row in rows}
    changed = []
    for row in rows:
        pins = dict(row.prompt_pins or {})
        slug = slug_of[row.pk]
        if slug is None:
            continue
        if version is not None:
            pins[slug] = version.number
        else:
            pins.pop(slug, None)
        if pins != (row.prompt_pins or {}):
            row.prompt_pins = pins
            changed.append(row)
    if changed:
        Item.objects.bulk_update(changed, ["prompt_pins"], batch_size=500)
