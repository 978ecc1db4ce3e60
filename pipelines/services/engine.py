"""The engine: claim a batch of items under a lease, call their models concurrently, judge the
outputs at the gate, and write every outcome with its ledger event in one transaction.

The database row is the truth and a queue message only a wake-up: a worker that dies mid-batch
loses nothing, because `items_sweep` returns items whose lease expired.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from controlplane.bulk import rows_update
from controlplane.logs import log_context, log_fields
from controlplane.services import audit_record
from pipelines.gate import GateVerdict, gate_evaluate, input_text
from pipelines.guards import takes_candidate
from pipelines.models import (
    AiModel,
    Item,
    LedgerEvent,
    Pipeline,
    PromptLabel,
    PromptVersion,
    Rollout,
    Step,
)
from pipelines.providers import (
    CallRequest,
    CallResult,
    ConfigurationError,
    InputError,
    ProcessingError,
    ProviderError,
    ProviderLimitError,
    TransientError,
    cost_of,
    provider_for,
)
from pipelines.result_cache import result_key
from pipelines.retry import retry_delay
from pipelines.route import route_candidates
from pipelines.rules import rules_problems
from pipelines.schemas import schema_problems
from pipelines.services.breaker import (
    breaker_allowances,
    breaker_doubts,
    breaker_record,
    breaker_states,
)
from pipelines.services.budgets import budget_holds
from pipelines.services.calls import provider_settings, run_sync
from pipelines.services.delivery import deliveries_open
from pipelines.services.ingest import ENGINE_WAKE_KEY, engine_wake
from pipelines.services.ratelimit import rate_grant
from pipelines.services.rollouts import rollouts_active
from pipelines.services.rollups import (
    latencies_add,
    rollups_add,
    step_latencies_add,
    step_rollups_add,
)
from pipelines.signals import (
    Held,
    Sampled,
    items_held,
    items_sampled_for_audit,
    pipeline_paused,
)
from pipelines.templating import PromptTemplateError, render_prompt, template_variables
from pipelines.wake import wake_window_wait

logger = logging.getLogger(__name__)

BATCH_SIZE = 250
MAX_ATTEMPTS = 5
# Provider limits (quota, budget) are not the item's fault: it waits without using an attempt.
PROVIDER_LIMIT_WAIT_SECONDS = 60
ENGINE = "engine"


# --- Claiming -------------------------------------------------------------------------------


def items_claim(*, worker: str, limit: int = BATCH_SIZE) -> list[Item]:
    """Take up to `limit` runnable items under a lease for `worker`. Two workers never take the
    same item. Fair between clients (the batch is shared out among the clients that have work,
    then among each client's pipelines), in priority order within a pipeline (due retries
    first: they have waited already), never more running items of a pipeline than its
    concurrency limit, and nothing from a pipeline whose budget is spent."""
    now = timezone.now()
    with transaction.atomic():
        pipelines = list(
            Pipeline.objects.filter(status=Pipeline.Status.ACTIVE).select_related("client")
        )
        if not pipelines:
            return []
        held = budget_holds(pipelines, now=now)
        pipelines = [p for p in pipelines if p.pk not in held]
        running = dict(
            Item.objects.filter(status=Item.Status.RUNNING, pipeline__in=pipelines)
            .values_list("pipeline_id")
            .annotate(n=Count("id"))
        )
        room = {p.pk: p.concurrency_limit - running.get(p.pk, 0) for p in pipelines}
        previous = _fair_pick(
            [p for p in pipelines if room[p.pk] > 0], room=room, limit=limit, now=now
        )
        if not previous:
            return []
        ids = list(previous)
        expires = now + timedelta(seconds=settings.SLUICE_LEASE_SECONDS)
        Item.objects.filter(pk__in=ids).update(
            status=Item.Status.RUNNING,
            lease_owner=worker[:120],
            lease_expires_at=expires,
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        items = list(Item.objects.filter(pk__in=ids).select_related("pipeline__client"))
        LedgerEvent.objects.bulk_create(
            [
                LedgerEvent(
                    item=item,
                    actor=worker[:150],
                    from_status=previous[item.pk][0],
                    to_status=Item.Status.RUNNING,
                    detail={"attempt": item.attempts, "step": item.step_position},
                )
                for item in items
            ]
        )
        waits: dict[tuple[int, str], list[float]] = {}
        for item in items:
            waited = (now - previous[item.pk][1]).total_seconds()
            waits.setdefault((item.pipeline_id, "queue_wait"), []).append(waited)
        rollups_add({pid: {"started": len(w)} for (pid, _), w in waits.items()}, at=now)
        latencies_add(waits, at=now)
    return items


# A claimed item's status before the claim, and since when it was ready to run.
Pick = tuple[str, datetime]


def _runnable(
    pipeline_id: int, *, want: int, now: datetime, taken_before: Sequence[int] = ()
) -> dict[int, Pick]:
    """Up to `want` runnable items of one pipeline, locked against other workers: due retries
    first, then queued items by priority. Two index range scans, never a sort of the queue.
    `taken_before`: this claim's earlier picks, still queued until the claim writes them."""
    taken: dict[int, Pick] = {}
    for status, order in (
        (Item.Status.WAITING_RETRY, ("next_attempt_at",)),
        (Item.Status.QUEUED, ("-priority", "id")),
    ):
        if len(taken) >= want:
            break
        rows = Item.objects.filter(pipeline_id=pipeline_id, status=status)
        if status == Item.Status.WAITING_RETRY:
            rows = rows.filter(next_attempt_at__lte=now)
        if taken_before:
            rows = rows.exclude(pk__in=taken_before)
        rows = rows.order_by(*order)
        if connection.vendor == "postgresql":
            # SQLite takes the whole database's write lock at BEGIN IMMEDIATE instead.
            rows = rows.select_for_update(skip_locked=True)
        for pk, was, changed, due in rows.values_list(
            "id", "status", "updated_at", "next_attempt_at"
        )[: want - len(taken)]:
            taken[pk] = (was, max(changed, due) if due else changed)
    return taken


def _fair_pick(
    pipelines: Sequence[Pipeline], *, room: dict[int, int], limit: int, now: datetime
) -> dict[int, Pick]:
    """Share `limit` out among clients, and each client's share among its pipelines, in rounds:
    whoever takes less than offered is out of work, and the rest is offered again to the
    others. Returns {item id: (its status before the claim, since when it was ready)}."""
    by_client: dict[int, list[Pipeline]] = {}
    for pipeline in pipelines:
        by_client.setdefault(pipeline.client_id, []).append(pipeline)
    clients = list(by_client)
    random.shuffle(clients)  # no client is always first to take the rounding's extra item
    taken: dict[int, Pick] = {}
    taken_from: dict[int, int] = {}  # item id -> pipeline id, across rounds
    while len(taken) < limit and clients:
        share = math.ceil((limit - len(taken)) / len(clients))
        still_open = []
        for client_id in clients:
            want = min(share, limit - len(taken))
            if want <= 0:
                break
            got = _pick_for_client(
                by_client[client_id], room=room, want=want, now=now, taken_from=taken_from
            )
            taken.update(got)
            if len(got) == want and by_client[client_id]:
                still_open.append(client_id)
        clients = still_open
    return taken


def _pick_for_client(
    pipelines: list[Pipeline],
    *,
    room: dict[int, int],
    want: int,
    now: datetime,
    taken_from: dict[int, int],
) -> dict[int, Pick]:
    """The same sharing among one client's pipelines; a pipeline that runs out of work or room
    is dropped from `pipelines` so later rounds skip it. `taken_from` holds the claim's picks
    so far ({item id: pipeline id}) and gains this call's."""
    taken: dict[int, Pick] = {}
    while len(taken) < want and pipelines:
        share = math.ceil((want - len(taken)) / len(pipelines))
        for pipeline in list(pipelines):
            asked = min(share, want - len(taken), room[pipeline.pk])
            if asked <= 0:
                if room[pipeline.pk] <= 0:
                    pipelines.remove(pipeline)
                continue
            before = [pk for pk, pid in taken_from.items() if pid == pipeline.pk]
            got = _runnable(pipeline.pk, want=asked, now=now, taken_before=before)
            taken.update(got)
            taken_from.update(dict.fromkeys(got, pipeline.pk))
            room[pipeline.pk] -= len(got)
            if len(got) < asked or room[pipeline.pk] <= 0:
                pipelines.remove(pipeline)
    return taken


def items_sweep() -> int:
    """Return running items whose lease expired (their worker died) to the queue, and wake the
    workers to run them."""
    now = timezone.now()
    with transaction.atomic():
        expired = Item.objects.filter(status=Item.Status.RUNNING, lease_expires_at__lt=now)
        if connection.vendor == "postgresql":
            expired = expired.select_for_update(skip_locked=True)
        found = dict(expired.values_list("id", "attempts")[:1000])
        if not found:
            return 0
        # An item that keeps killing its worker must not take a batch down with it forever.
        exhausted = [pk for pk, attempts in found.items() if attempts >= MAX_ATTEMPTS]
        retried = [pk for pk in found if pk not in set(exhausted)]
        Item.objects.filter(pk__in=retried).update(
            status=Item.Status.QUEUED, lease_owner="", lease_expires_at=None, updated_at=now
        )
        Item.objects.filter(pk__in=exhausted).update(
            status=Item.Status.DEAD_LETTERED,
            lease_owner="",
            lease_expires_at=None,
            error_class="system",
            error_message="its worker stopped on every attempt",
            finished_at=now,
            updated_at=now,
        )
        reason = "lease expired: the worker stopped before finishing"
        LedgerEvent.objects.bulk_create(
            [
                LedgerEvent(
                    item_id=pk,
                    actor="sweeper",
                    from_status=Item.Status.RUNNING,
                    to_status=Item.Status.DEAD_LETTERED if pk in exhausted else Item.Status.QUEUED,
                    detail={"reason": reason, "attempt": found[pk]},
                )
                for pk in found
            ]
        )
        if retried:
            transaction.on_commit(engine_wake)
    return len(found)


# --- Planning and calling ---------------------------------------------------------------------


@dataclass
class Work:
    """One claimed item on its way through one step."""

    item: Item
    step: Step | None = None
    version_number: int | None = None
    version_id: int | None = None
    candidates: list[AiModel] = field(default_factory=list)
    request: CallRequest | None = None
    # Filled by the call.
    result: CallResult | None = None
    model: AiModel | None = None
    error: ProviderError | None = None
    fallbacks_tried: list[str] = field(default_factory=list)
    called: bool = False
    # The result cache: the key of this call's answer, and whether it came from there.
    cache_key: str | None = None
    cache_hit: bool = False
    # The gradual rollout that chose this item's prompt version, if one did.
    rollout_id: int | None = None
    # Cascade routing: models whose low-confidence answers were escalated, and what they cost.
    escalated_from: list[str] = field(default_factory=list)
    escalated_cost: Decimal = Decimal("0")
    escalated_tokens: tuple[int, int] = (0, 0)


@dataclass
class Wave:
    """A batch's calls to a provider not known to be up (its last calls failed, or none
    answered lately: `breaker_doubts`) go out in two waves: the first `size` alone, the rest
    once one of those answered. If every call of the first wave failed, the rest do not go:
    they wait like calls the breaker refused, without using an attempt. So such a batch costs
    an outage `size` attempts (the breaker's threshold, which then opens it), not one per
    item. A provider answering steadily gets whole batches at once: no wave, no delay."""

    size: int
    started: int = 0
    finished: int = 0
    answered: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def join(self) -> bool:
        """Take a place in the first wave if one is left (True), else wait for it (False)."""
        if self.started < self.size:
            self.started += 1
            return True
        return False

    def report(self, *, answered: bool) -> None:
        """A first-wave call is over: one answer lets the rest go; all failed holds them."""
        self.finished += 1
        self.answered = self.answered or answered
        if self.answered or self.finished >= self.size:
            self.ready.set()

    async def passed(self) -> bool:
        await self.ready.wait()
        return self.answered


@dataclass
class Admission:
    """What a batch may send to each provider: calls left under its circuit breaker and rate
    limit (None: no limit), why not when none are left, what the calls answered, and each
    provider's first wave (see `Wave`)."""

    left: dict[int, int | None] = field(default_factory=dict)
    refusals: dict[int, ProviderLimitError] = field(default_factory=dict)
    outcomes: dict[int, list[bool]] = field(default_factory=dict)
    wave_sizes: dict[int, int] = field(default_factory=dict)

    def take(self, provider_id: int) -> ProviderLimitError | None:
        left = self.left.get(provider_id)
        if left is None:
            return None
        if left <= 0:
            return self.refusals[provider_id]
        self.left[provider_id] = left - 1
        return None


def _steps_by_pipeline(items: Sequence[Item]) -> dict[int, list[Step]]:
    steps: dict[int, list[Step]] = {}
    pipeline_ids = {item.pipeline_id for item in items}
    for step in (
        Step.objects.filter(pipeline_id__in=pipeline_ids)
        .prefetch_related("route__model__provider")
        .order_by("position")
    ):
        steps.setdefault(step.pipeline_id, []).append(step)
    return steps


def _pinned_versions(
    items: Sequence[Item], steps: dict[int, list[Step]]
) -> dict[tuple[int, int], PromptVersion]:
    """The prompt versions items are pinned to (a re-drive against another version)."""
    wanted: dict[int, set[int]] = {}
    for item in items:
        for step in steps.get(item.pipeline_id, []):
            number = item.prompt_pins.get(step.slug)
            if isinstance(number, int):
                wanted.setdefault(step.pk, set()).add(number)
    if not wanted:
        return {}
    condition = Q()
    for step_id, numbers in wanted.items():
        condition |= Q(step_id=step_id, number__in=numbers)
    return {(v.step_id, v.number): v for v in PromptVersion.objects.filter(condition)}


def _plan(items: Sequence[Item]) -> list[Work]:
    steps = _steps_by_pipeline(items)
    labels = {
        label.step_id: label.version
        for label in PromptLabel.objects.filter(
            step__pipeline_id__in={i.pipeline_id for i in items},
            name=PromptLabel.Name.PRODUCTION,
        ).select_related("version")
    }
    pinned = _pinned_versions(items, steps)
    rollouts = rollouts_active(step_ids={s.pk for group in steps.values() for s in group})
    checked = ConfigChecks()
    plans = []
    for item in items:
        work = Work(item=item)
        plans.append(work)
        try:
            _plan_one(
                work, steps=steps, labels=labels, pinned=pinned, rollouts=rollouts, checked=checked
            )
        except DatabaseError:
            raise  # the database itself failed: nothing here is the configuration's fault
        except Exception as exc:
            # Configuration the checks did not foresee (a value corrupted in the database):
            # a system error, which keeps the item and pauses its pipeline, never a crashed batch
            # whose items would use up their attempts one lease at a time.
            logger.exception("item %s: its configuration cannot be read", item.pk)
            where = f'Step "{work.step.name}"' if work.step else "The pipeline"
            work.error = ConfigurationError(
                f"{where}'s configuration cannot be read: {type(exc).__name__}: {exc}"
            )
            work.request = None
    return plans


@dataclass
class ConfigChecks:
    """What a batch found wrong with each step and prompt version it planned, checked once a
    batch: None when it is fine."""

    steps: dict[int, str | None] = field(default_factory=dict)
    versions: dict[int, str | None] = field(default_factory=dict)

    def step(self, step: Step) -> str | None:
        if step.pk not in self.steps:
            self.steps[step.pk] = _step_config_problem(step)
        return self.steps[step.pk]

    def version(self, step: Step, version: PromptVersion) -> str | None:
        if version.pk not in self.versions:
            self.versions[version.pk] = _version_config_problem(step, version)
        return self.versions[version.pk]


def _step_config_problem(step: Step) -> str | None:
    """Why the step's gate cannot judge any output (saved configuration is checked when it is
    saved; this catches what changed under it, such as a value edited in the database)."""
    if step.output_schema:
        problems = schema_problems(step.output_schema)
        if problems:
            return f'Step "{step.name}" has an output schema that is not valid: {problems[0]}'
    problems = rules_problems(step.rules) if step.rules else []
    if problems:
        return f'Step "{step.name}" has business rules that are not valid: {problems[0]}'
    if step.kind == Step.Kind.CLASSIFY and (
        not isinstance(step.labels, list) or not all(isinstance(x, str) for x in step.labels)
    ):
        return f'Step "{step.name}" has labels that are not a list of strings.'
    return None


def _version_config_problem(step: Step, version: PromptVersion) -> str | None:
    """Why a prompt version cannot run for any item: a template that no longer parses, or
    parameters that are not an object. (A template that parses but fails on one item's data
    is that item's input error.)"""
    try:
        template_variables(version.template)
    except PromptTemplateError as exc:
        return f'Step "{step.name}": prompt version {version.number} cannot be parsed: {exc}'
    if not isinstance(version.parameters, dict):
        return (
            f'Step "{step.name}": prompt version {version.number} has parameters that are '
            "not an object."
        )
    return None


def _plan_one(
    work: Work,
    *,
    steps: dict[int, list[Step]],
    labels: dict[int, PromptVersion],
    pinned: dict[tuple[int, int], PromptVersion],
    rollouts: dict[int, Rollout],
    checked: ConfigChecks,
) -> None:
    """Plan one item's call, or set the error that decides its outcome."""
    item = work.item
    pipeline_steps = steps.get(item.pipeline_id, [])
    if item.step_position > len(pipeline_steps):
        work.error = ConfigurationError(
            f"The pipeline has no step {item.step_position}: add a step to it."
        )
        return
    step = pipeline_steps[item.step_position - 1]
    work.step = step
    pin = item.prompt_pins.get(step.slug)
    if pin is not None:
        version = pinned.get((step.pk, pin))
        if version is None:
            work.error = InputError(
                f'Step "{step.name}" has no prompt version {pin} to run this item against.'
            )
            return
    else:
        version = labels.get(step.pk)
        rollout = rollouts.get(step.pk)
        if rollout is not None and version is not None:
            version = _rollout_version(item, step=step, rollout=rollout, production=version)
            work.rollout_id = rollout.pk
    if version is None:
        work.error = ConfigurationError(f'Step "{step.name}" has no production prompt.')
        return
    work.version_number = version.number
    work.version_id = version.pk
    problem = checked.step(step) or checked.version(step, version)
    if problem:
        work.error = ConfigurationError(problem)
        return
    try:
        prompt = render_prompt(template=version.template, data=item.data)
    except PromptTemplateError as exc:
        work.error = InputError(f"The prompt cannot be rendered for this item: {exc}")
        return
    text = input_text(item.data)
    matching = route_candidates(
        list(step.route.all()), input_chars=len(text), priority=item.priority
    )
    # A model switched off after the route was set is skipped; the route's next model serves.
    work.candidates = [entry.model for entry in matching if entry.model.is_active]
    if not work.candidates:
        if matching:
            names = ", ".join(str(entry.model) for entry in matching)
            work.error = ConfigurationError(
                f'Step "{step.name}" routes this item only to models that are switched off '
                f"({names}): switch one on or change the route."
            )
        else:
            work.error = ConfigurationError(f'Step "{step.name}" has no model: set its route.')
        return
    work.request = CallRequest(
        prompt=prompt,
        model=work.candidates[0].name,
        parameters=dict(version.parameters),
        labels=tuple(step.labels) if step.kind == Step.Kind.CLASSIFY else None,
        output_schema=step.output_schema or None,
        input_text=text,
    )


def _rollout_version(
    item: Item, *, step: Step, rollout: Rollout, production: PromptVersion
) -> PromptVersion:
    """The version a rollout gives the item at `step`: the arm recorded on the item when it has
    one for this rollout (a re-run keeps its version), else drawn by the sticky hash against
    the candidate's current share, and recorded."""
    arm = item.rollout_arms.get(step.slug)
    if isinstance(arm, dict) and arm.get("rollout") == rollout.pk:
        return rollout.candidate if arm.get("version") == rollout.candidate.number else production
    chosen = (
        rollout.candidate
        if takes_candidate(item_id=item.pk, rollout_id=rollout.pk, share=rollout.share)
        else production
    )
    item.rollout_arms = {
        **item.rollout_arms,
        step.slug: {"rollout": rollout.pk, "version": chosen.number},
    }
    return chosen


def _local_models(plans: Sequence[Work]) -> dict[int, bytes | ProviderError]:
    """Trained local models of the steps that route to a local provider (ORM work: done before
    the event loop starts), or why a step has none yet."""
    from pipelines.services.local_model import local_model_bytes

    found: dict[int, bytes | ProviderError] = {}
    for work in plans:
        if work.step is None or work.step.pk in found:
            continue
        if any(model.provider.kind == "local" for model in work.candidates):
            try:
                found[work.step.pk] = local_model_bytes(step=work.step)
            except (ConfigurationError, ProviderLimitError) as exc:
                found[work.step.pk] = exc
    return found


def _admission(plans: Sequence[Work]) -> Admission:
    """Ask each provider's circuit breaker and rate limit how many calls this batch may make.
    The rate limit is asked for the calls a provider is the first choice of; a fallback call
    to a rate-limited provider that was not counted waits like any refused call."""
    providers = {m.provider_id: m.provider for w in plans for m in w.candidates}
    admission = Admission()
    if not providers:
        return admission
    allowed = breaker_allowances(list(providers.values()))
    doubted = breaker_doubts([p for p in providers.values() if p.kind != "local"])
    views = None
    for pid, provider in providers.items():
        left = allowed.get(pid)
        if left is not None:
            # Half-open: this batch won the one probe call; the rest wait for its answer.
            admission.refusals[pid] = ProviderLimitError(
                f"The circuit breaker of {provider.name} is half-open: a probe call is under way.",
                retry_after=5 + random.uniform(0, 5),
            )
        if left == 0:
            views = views or breaker_states(list(providers.values()))
            retry_in = max(1.0, views[pid].retry_in or provider.breaker_reset_seconds)
            admission.refusals[pid] = ProviderLimitError(
                f"The circuit breaker of {provider.name} is open.", retry_after=retry_in
            )
        elif provider.rate_limit_per_minute:
            wanted = sum(1 for w in plans if w.request and w.candidates[0].provider_id == pid)
            granted = rate_grant(provider=provider, wanted=wanted)
            if left is None or granted < left:
                left = granted
                admission.refusals[pid] = ProviderLimitError(
                    f"{provider.name} is at its rate limit of "
                    f"{provider.rate_limit_per_minute} calls a minute.",
                    retry_after=5 + random.uniform(0, 10),
                )
        admission.left[pid] = left
        # A provider not known to be up gets a first wave of calls before the rest. (Not the
        # local model: it cannot have an outage, and predicts a loop turn's calls at once.)
        calls = sum(1 for w in plans if any(m.provider_id == pid for m in w.candidates))
        if pid in doubted and calls > provider.breaker_failure_threshold:
            admission.wave_sizes[pid] = max(1, provider.breaker_failure_threshold)
    return admission


# What the circuit breaker counts as the provider failing (it answered nothing useful).
_BREAKER_FAILURES = (TransientError,)
# Errors that say nothing about the provider's health.
_BREAKER_NEUTRAL = (ProviderLimitError, ConfigurationError)


async def _call_all(
    plans: Sequence[Work], local: dict[int, bytes | ProviderError], admission: Admission
) -> None:
    """Run every planned call at once; each provider's own semaphore bounds its concurrency."""
    providers: dict[tuple[int, int | None], Any] = {}
    # Made here: an asyncio.Event belongs to the loop that runs this batch.
    waves = {pid: Wave(size=size) for pid, size in admission.wave_sizes.items()}

    async def wave_refusal(model: AiModel) -> tuple[Wave | None, ProviderLimitError | None]:
        """(the wave this call opens, if it is in a first wave; a refusal when it is not and
        the first wave failed)."""
        wave = waves.get(model.provider_id)
        if wave is None or wave.join():
            return wave, None
        if await wave.passed():
            return None, None
        return None, ProviderLimitError(
            f"The first {wave.size} calls of this batch to {model.provider.name} failed; "
            "the rest wait for its circuit breaker.",
            retry_after=5 + random.uniform(0, 5),
        )

    def provider_of(model: AiModel, step: Step):
        # Local providers hold a step's model, so they are per step; the rest per provider.
        is_local = model.provider.kind == "local"
        key = (model.provider_id, step.pk if is_local else None)
        if key not in providers:
            model_bytes = None
            if is_local:
                trained = local.get(step.pk)
                if isinstance(trained, ProviderError):
                    raise trained
                model_bytes = trained
            try:
                providers[key] = provider_for(
                    kind=model.provider.kind,
                    settings=provider_settings(model.provider),
                    local_model_bytes=model_bytes,
                )
            except ProviderError:
                raise
            except Exception as exc:
                # Settings that passed validation once and were changed under it since.
                raise ConfigurationError(
                    f"The settings of provider {model.provider.name} cannot be used: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return providers[key]

    async def run(work: Work) -> None:
        # Each call is its own asyncio task, so its log records carry its own item's ids.
        with log_context(
            item_id=work.item.pk,
            pipeline_id=work.item.pipeline_id,
            step_id=work.step.pk,
            attempt=work.item.attempts,
        ):
            await call(work)

    async def call(work: Work) -> None:
        for index, model in enumerate(work.candidates):
            if work.escalated_from and work.result is not None:
                escalating = (work.model, work.result)
            else:
                escalating = None
            refusal = admission.take(model.provider_id)
            wave = None
            if refusal is None:
                wave, refusal = await wave_refusal(model)
            if refusal is not None:
                if escalating:  # the stronger model cannot answer: the cheaper answer stands
                    work.model, work.result = escalating
                    _escalation_undo(work)
                    return
                work.model, work.error = model, refusal
                work.fallbacks_tried.append(str(model))
                continue
            request = CallRequest(
                prompt=work.request.prompt,
                model=model.name,
                parameters=work.request.parameters,
                labels=work.request.labels,
                output_schema=work.request.output_schema,
                input_text=work.request.input_text,
            )
            outcomes = admission.outcomes.setdefault(model.provider_id, [])
            work.called = True
            answered = False
            try:
                work.result = await provider_of(model, work.step).call(request)
                answered = True
                work.model, work.error = model, None
                outcomes.append(True)
                if _escalates(work, index):
                    _escalation_note(work)
                    continue
                return
            except ProviderError as exc:
                if not isinstance(exc, _BREAKER_NEUTRAL):
                    outcomes.append(not isinstance(exc, _BREAKER_FAILURES))
                # A provider that answered (an invalid output, a refusal) is up.
                answered = not isinstance(exc, _BREAKER_FAILURES + _BREAKER_NEUTRAL)
                if escalating:  # the stronger model failed: the cheaper answer stands
                    work.model, work.result = escalating
                    _escalation_undo(work)
                    return
                if isinstance(exc, ProviderLimitError):
                    # The next model in the route is the fallback for an exhausted provider.
                    work.model, work.error = model, exc
                    work.fallbacks_tried.append(str(model))
                    continue
                work.model, work.error = model, exc
                return
            except Exception as exc:  # a provider bug must not lose the batch
                logger.exception("provider call failed unexpectedly")
                outcomes.append(False)
                if escalating:
                    work.model, work.result = escalating
                    _escalation_undo(work)
                    return
                work.model, work.error = model, TransientError(f"unexpected error: {exc!r}")
                return
            finally:
                if wave is not None:  # this call was of the first wave: the rest may go on
                    wave.report(answered=answered)

    try:
        await asyncio.gather(*(run(w) for w in plans if w.request is not None))
    finally:
        for provider in providers.values():
            await provider.aclose()


def _escalates(work: Work, index: int) -> bool:
    """Cascade routing: a step that cascades sends an answer under its confidence threshold
    to the next (stronger) model of the route, while there is one."""
    if not work.step.cascade or index + 1 >= len(work.candidates):
        return False
    confidence = work.result.confidence
    return confidence is None or confidence < float(work.step.confidence_threshold)


def _escalation_note(work: Work) -> None:
    """The escalated answer was paid for and set aside; the next model answers instead."""
    work.escalated_from.append(str(work.model))
    work.escalated_cost += _call_price(work)
    tokens_in, tokens_out = work.escalated_tokens
    work.escalated_tokens = (
        tokens_in + work.result.input_tokens,
        tokens_out + work.result.output_tokens,
    )


def _escalation_undo(work: Work) -> None:
    """The stronger model could not answer: the last answer set aside is the item's answer
    again (it goes to the gate, and so to review), and is no longer counted as set aside."""
    work.escalated_from.pop()
    work.escalated_cost -= _call_price(work)
    tokens_in, tokens_out = work.escalated_tokens
    work.escalated_tokens = (
        tokens_in - work.result.input_tokens,
        tokens_out - work.result.output_tokens,
    )
    work.error = None


def _cascade_saved(work: Work) -> Decimal:
    """What answering before the last model of a cascading route saved: the price the route's
    strongest (last) model would have charged for the same tokens, less what was paid."""
    if (
        work.step is None
        or not work.step.cascade
        or work.result is None
        or work.cache_hit
        or work.model is None
        or len(work.candidates) < 2
        or work.model == work.candidates[-1]
    ):
        return Decimal("0")
    strongest = work.candidates[-1]
    would = cost_of(
        input_tokens=work.result.input_tokens,
        output_tokens=work.result.output_tokens,
        input_price_per_mtok=strongest.input_price_per_mtok,
        output_price_per_mtok=strongest.output_price_per_mtok,
    )
    return max(Decimal("0"), would - _cost(work))


def _run_calls(plans: Sequence[Work]) -> None:
    _cache_lookup(plans)
    to_call = [work for work in plans if not work.cache_hit]
    admission = _admission(to_call)
    try:
        run_sync(_call_all(to_call, _local_models(to_call), admission))
    finally:
        # Outside the batch's write transaction: the breaker's state is not rolled back with it.
        breaker_record({pid: found for pid, found in admission.outcomes.items() if found})
    _cache_store(to_call)


def _cache_lookup(plans: Sequence[Work]) -> None:
    """Answer from the result cache the calls of steps that keep one: the first-choice model's
    earlier answer to the same prompt version, parameters and input (one cache read for the
    batch). A hit costs nothing; the cost it saved is counted."""
    for work in plans:
        if work.request is not None and work.step.result_cache_seconds and work.candidates:
            work.cache_key = result_key(
                version_id=work.version_id, model_id=work.candidates[0].pk, request=work.request
            )
    keys = [work.cache_key for work in plans if work.cache_key]
    if not keys:
        return
    found = cache.get_many(keys)
    for work in plans:
        hit = found.get(work.cache_key) if work.cache_key else None
        if hit is None:
            continue
        work.result = CallResult(latency_ms=0.0, **hit)
        work.model = work.candidates[0]
        work.cache_hit = True


def _cache_store(plans: Sequence[Work]) -> None:
    """Keep the first-choice model's good answers for their step's cache time."""
    by_timeout: dict[int, dict[str, dict[str, Any]]] = {}
    for work in plans:
        if (
            work.cache_key
            and work.result is not None
            and work.error is None
            and work.model == work.candidates[0]
        ):
            by_timeout.setdefault(work.step.result_cache_seconds, {})[work.cache_key] = {
                "output": work.result.output,
                "confidence": work.result.confidence,
                "input_tokens": work.result.input_tokens,
                "output_tokens": work.result.output_tokens,
                "simulated": work.result.simulated,
            }
    for timeout, values in by_timeout.items():
        cache.set_many(values, timeout=timeout)


# --- Writing outcomes -------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str
    detail: dict[str, Any]
    verdict: GateVerdict | None = None


def _call_detail(work: Work) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "step": work.step.slug if work.step else None,
        "attempt": work.item.attempts,
    }
    if work.version_number is not None:
        detail["prompt_version"] = work.version_number
    if work.model is not None:
        detail["model"] = str(work.model)
    if work.fallbacks_tried:
        detail["fallbacks_tried"] = work.fallbacks_tried
    if work.rollout_id is not None:
        detail["rollout"] = work.rollout_id
    if work.escalated_from:
        detail["escalated_from"] = work.escalated_from
    saved = _cascade_saved(work)
    if saved:
        detail["cascade_saved"] = str(saved)
    if work.cache_hit:
        detail["cache_hit"] = True
        detail["cost_saved"] = str(_call_price(work))
    if work.result is not None:
        detail.update(
            input_tokens=work.result.input_tokens,
            output_tokens=work.result.output_tokens,
            latency_ms=round(work.result.latency_ms, 1),
            cost=str(_cost(work)),
            simulated=work.result.simulated,
        )
    return detail


def _cost(work: Work) -> Decimal:
    """What the call cost (with the answers a cascade set aside): nothing when the result
    cache answered it."""
    if work.cache_hit:
        return Decimal("0")
    return _call_price(work) + work.escalated_cost


def _call_price(work: Work) -> Decimal:
    if work.result is None or work.model is None:
        return Decimal("0")
    return cost_of(
        input_tokens=work.result.input_tokens,
        output_tokens=work.result.output_tokens,
        input_price_per_mtok=work.model.input_price_per_mtok,
        output_price_per_mtok=work.model.output_price_per_mtok,
    )


def _decide(work: Work, steps_count: dict[int, int]) -> Outcome:
    item, step = work.item, work.step
    detail = _call_detail(work)
    error = work.error
    if error is None and work.result is not None:
        try:
            verdict = gate_evaluate(
                output=work.result.output,
                confidence=work.result.confidence,
                threshold=step.confidence_threshold,
                output_schema=step.output_schema,
                rules=step.rules,
            )
        except Exception as exc:
            # The batch's writes must go through: a gate that cannot judge is the step's
            # configuration at fault (a system error), not the item's.
            logger.exception("step %s: the gate cannot judge an output", step.pk)
            work.error = ConfigurationError(
                f'Step "{step.name}"\'s gate cannot judge outputs: {type(exc).__name__}: {exc}'
            )
            return _decide(work, steps_count)
        detail["confidence"] = work.result.confidence
        detail["verdict"] = verdict.summary
        if verdict.accepted:
            if item.step_position < steps_count.get(item.pipeline_id, 0):
                return Outcome(
                    Item.Status.QUEUED, {**detail, "next_step": item.step_position + 1}, verdict
                )
            return Outcome(Item.Status.ACCEPTED, detail, verdict)
        if step.on_gate_failure == Step.OnGateFailure.REJECT:
            return Outcome(Item.Status.REJECTED, detail, verdict)
        return Outcome(Item.Status.IN_REVIEW, detail, verdict)
    detail["error_class"] = str(error.error_class)
    detail["error"] = str(error)[:1000]
    if isinstance(error, InputError):
        return Outcome(Item.Status.QUARANTINED, detail)
    if isinstance(error, ProcessingError):
        return Outcome(Item.Status.IN_REVIEW, detail)
    if isinstance(error, ProviderLimitError):
        detail["retry_in_seconds"] = round(error.retry_after or PROVIDER_LIMIT_WAIT_SECONDS, 2)
        return Outcome(Item.Status.WAITING_RETRY, detail)
    if isinstance(error, ConfigurationError):
        # A system error is not the item's: it goes back to the queue and its pipeline pauses.
        return Outcome(Item.Status.QUEUED, detail)
    if item.attempts >= MAX_ATTEMPTS:
        return Outcome(Item.Status.DEAD_LETTERED, {**detail, "max_attempts": MAX_ATTEMPTS})
    retry_after = error.retry_after if isinstance(error, TransientError) else None
    detail["retry_in_seconds"] = round(
        retry_delay(attempt=item.attempts, retry_after=retry_after), 2
    )
    return Outcome(Item.Status.WAITING_RETRY, detail)


def _apply(plans: Sequence[Work], *, worker: str) -> dict[str, int]:
    now = timezone.now()
    steps_count = {
        pid: len(steps) for pid, steps in _steps_by_pipeline([w.item for w in plans]).items()
    }
    counts: dict[str, int] = {}
    events: list[LedgerEvent] = []
    held: list[Held] = []
    sampled: list[Sampled] = []
    paused: dict[int, str] = {}
    changed: list[Item] = []
    for work in plans:
        item = work.item
        outcome = _decide(work, steps_count)
        if outcome.status != Item.Status.ACCEPTED and logger.isEnabledFor(logging.INFO):
            logger.info(
                "item %s: running -> %s",
                item.pk,
                outcome.status,
                extra=log_fields(
                    item_id=item.pk,
                    pipeline_id=item.pipeline_id,
                    step_id=work.step.pk if work.step else None,
                    attempt=item.attempts,
                    worker=worker,
                    error_class=outcome.detail.get("error_class") or None,
                    model=str(work.model) if work.model else None,
                ),
            )
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        result = work.result
        if result is not None:
            if not work.cache_hit:  # an answer from the cache used no tokens
                item.input_tokens += result.input_tokens + work.escalated_tokens[0]
                item.output_tokens += result.output_tokens + work.escalated_tokens[1]
                item.cost += _cost(work)
            item.outputs = {
                **item.outputs,
                work.step.slug: {
                    "output": result.output,
                    "confidence": result.confidence,
                    "model": str(work.model),
                    "prompt_version": work.version_number,
                    "verdict": outcome.verdict.summary if outcome.verdict else None,
                },
            }
            item.confidence = result.confidence
        item.status = outcome.status
        item.updated_at = now
        item.lease_owner, item.lease_expires_at = "", None
        item.next_attempt_at = None
        item.error_class = outcome.detail.get("error_class", "")
        item.error_message = outcome.detail.get("error", "")
        item.hold_reason = ""
        if (
            outcome.verdict is not None
            and outcome.verdict.accepted
            and work.step.audit_rate
            and random.random() < float(work.step.audit_rate)
        ):
            sampled.append(Sampled(item, work.step, result.output))
        if outcome.status == Item.Status.QUEUED and "next_step" in outcome.detail:
            item.step_position += 1
            item.attempts = 0
        elif outcome.status == Item.Status.ACCEPTED:
            item.result = result.output
            item.finished_at = now
            if item.pipeline.client.webhook_url:
                item.status = Item.Status.DELIVERING
        elif outcome.status in (
            Item.Status.REJECTED,
            Item.Status.QUARANTINED,
            Item.Status.DEAD_LETTERED,
        ):
            item.finished_at = now
        elif outcome.status == Item.Status.IN_REVIEW:
            reason = (
                outcome.verdict.summary if outcome.verdict else f"processing error: {work.error}"
            )
            item.hold_reason = reason
            held.append(Held(item, work.step, reason))
        elif outcome.status == Item.Status.WAITING_RETRY:
            item.next_attempt_at = now + timedelta(
                seconds=outcome.detail.get("retry_in_seconds", 0)
            )
            if isinstance(work.error, ProviderLimitError):
                item.attempts = max(0, item.attempts - 1)
        elif outcome.status == Item.Status.QUEUED:  # a system error: not the item's attempt
            item.attempts = max(0, item.attempts - 1)
            paused[item.pipeline_id] = outcome.detail.get("error", "")
        changed.append(item)
        events.append(
            LedgerEvent(
                item=item,
                actor=worker[:150],
                from_status=Item.Status.RUNNING,
                to_status=item.status,
                detail=outcome.detail,
            )
        )
    with transaction.atomic():
        # Only rows this worker still holds: if its lease expired and another worker took an
        # item meanwhile, that worker's outcome stands and this late one is dropped.
        held_rows = Item.objects.filter(
            pk__in=[item.pk for item in changed],
            status=Item.Status.RUNNING,
            lease_owner=worker[:120],
        )
        if connection.vendor == "postgresql":
            held_rows = held_rows.select_for_update()
        still_ours = set(held_rows.values_list("id", flat=True))
        if len(still_ours) < len(changed):
            logger.warning(
                "%s lost the lease of %d items; their late results are dropped",
                worker,
                len(changed) - len(still_ours),
            )
        changed = [item for item in changed if item.pk in still_ours]
        events = [event for event in events if event.item.pk in still_ours]
        held = [entry for entry in held if entry.item.pk in still_ours]
        sampled = [entry for entry in sampled if entry.item.pk in still_ours]
        paused = {
            pid: reason
            for pid, reason in paused.items()
            if any(item.pipeline_id == pid for item in changed)
        }
        rows_update(
            changed,
            [
                "status",
                "lease_owner",
                "lease_expires_at",
                "next_attempt_at",
                "error_class",
                "error_message",
                "hold_reason",
                "step_position",
                "attempts",
                "outputs",
                "rollout_arms",
                "result",
                "confidence",
                "input_tokens",
                "output_tokens",
                "cost",
                "finished_at",
                "updated_at",
            ],
        )
        LedgerEvent.objects.bulk_create(events)
        ours = [w for w in plans if w.item.pk in still_ours]
        rollups_add(_rollup_counts(ours), at=now)
        latencies_add(_latency_samples(ours, now=now), at=now)
        step_counts, step_latencies = _step_rollup_counts(ours)
        step_rollups_add(step_counts, at=now)
        step_latencies_add(step_latencies, at=now)
        deliveries_open(
            items=[i for i in changed if i.status in (Item.Status.DELIVERING, Item.Status.REJECTED)]
        )
        if held:
            items_held.send(sender=Item, held=held)
        if sampled:
            items_sampled_for_audit.send(sender=Item, sampled=sampled)
        for pipeline_id, reason in paused.items():
            _pipeline_pause_for_system_error(pipeline_id=pipeline_id, reason=reason)
    return counts


_ROLLUP_STATUS = {
    Item.Status.ACCEPTED: "accepted",
    Item.Status.DELIVERING: "accepted",
    Item.Status.IN_REVIEW: "held_for_review",
    Item.Status.REJECTED: "rejected",
    Item.Status.QUARANTINED: "quarantined",
    Item.Status.DEAD_LETTERED: "dead_lettered",
}


def _rollup_counts(plans: Sequence[Work]) -> dict[int, dict[str, Any]]:
    """What a batch adds to each pipeline's rollup for this minute."""
    counts: dict[int, dict[str, Any]] = {}
    for work in plans:
        row = counts.setdefault(work.item.pipeline_id, {})

        def add(counter: str, amount: Any = 1, row=row) -> None:
            row[counter] = row.get(counter, 0) + amount

        if work.called:
            add("calls")
        if work.item.status in _ROLLUP_STATUS:
            add(_ROLLUP_STATUS[work.item.status])
        # Input errors are counted as quarantined items.
        if work.error is not None and work.error.error_class != "input":
            add(f"failed_{work.error.error_class}")
        if work.cache_hit:
            add("cache_hits")
            add("cost_saved", _call_price(work))
        elif work.result is not None:
            add("input_tokens", work.result.input_tokens + work.escalated_tokens[0])
            add("output_tokens", work.result.output_tokens + work.escalated_tokens[1])
            add("cost", _cost(work))
            add("escalations", len(work.escalated_from))
            add("cascade_saved", _cascade_saved(work))
    return counts


# Errors that are not the prompt version's doing: nothing started for the guards.
_NOT_STARTED = ("provider_limit", "system")


def _step_rollup_counts(
    plans: Sequence[Work],
) -> tuple[dict[tuple[int, int, int], dict[str, Any]], dict[tuple[int, int], list[float]]]:
    """What a batch adds to each step and prompt version's rollup, and its call latencies."""
    counts: dict[tuple[int, int, int], dict[str, Any]] = {}
    latencies: dict[tuple[int, int], list[float]] = {}
    for work in plans:
        if work.step is None or work.version_number is None:
            continue
        if work.error is not None and work.error.error_class in _NOT_STARTED:
            continue
        row = counts.setdefault((work.item.pipeline_id, work.step.pk, work.version_number), {})

        def add(counter: str, amount: Any = 1, row=row) -> None:
            row[counter] = row.get(counter, 0) + amount

        add("started")
        status = work.item.status
        if work.error is not None:
            add("failed")
        elif work.result is not None:
            add("held" if status in (Item.Status.IN_REVIEW, Item.Status.REJECTED) else "accepted")
            add("cost", _cost(work))
            add("escalations", len(work.escalated_from))
            add("cascade_saved", _cascade_saved(work))
            if not work.cache_hit:
                latencies.setdefault((work.step.pk, work.version_number), []).append(
                    work.result.latency_ms / 1000
                )
    return counts, latencies


def _latency_samples(plans: Sequence[Work], *, now: datetime) -> dict[tuple[int, str], list]:
    """A batch's model-call latencies, and the end-to-end time of items it finished (those
    with a webhook are counted when they are delivered instead)."""
    samples: dict[tuple[int, str], list[float]] = {}
    for work in plans:
        item = work.item
        if work.result is not None and not work.cache_hit:
            samples.setdefault((item.pipeline_id, "processing"), []).append(
                work.result.latency_ms / 1000
            )
        webhook = bool(item.pipeline.client.webhook_url)
        if item.status == Item.Status.ACCEPTED or (
            item.status == Item.Status.REJECTED and not webhook
        ):
            samples.setdefault((item.pipeline_id, "end_to_end"), []).append(
                (now - item.created_at).total_seconds()
            )
    return samples


def _pipeline_pause_for_system_error(*, pipeline_id: int, reason: str) -> None:
    """Pause an active pipeline whose configuration failed (its items are back in the queue),
    with an audit entry naming the cause; `pipeline_paused` tells the shell after commit."""
    pipeline = Pipeline.objects.select_for_update().get(pk=pipeline_id)
    if pipeline.status != Pipeline.Status.ACTIVE:
        return
    pipeline.status = Pipeline.Status.PAUSED
    pipeline.save(update_fields=["status", "updated_at"])
    audit_record(
        actor=None,
        actor_label=ENGINE,
        action="pipeline.pause",
        obj=pipeline,
        client=pipeline.client,
        before={"status": "active"},
        after={"status": "paused", "reason": f"system error: {reason}"[:500]},
    )
    logger.error(
        "pipeline %s paused by a system error: %s",
        pipeline.pk,
        reason,
        extra=log_fields(pipeline_id=pipeline.pk, error_class="system"),
    )
    transaction.on_commit(
        lambda: pipeline_paused.send(
            sender=Pipeline, pipeline=pipeline, reason=reason, error_class="system"
        )
    )


# --- Entry points ---------------------------------------------------------------------------


def engine_run_batch(*, worker: str, limit: int = BATCH_SIZE) -> dict[str, int]:
    """Claim one batch, run it, write it. Returns how many items ended in each status."""
    with log_context(worker=worker):
        items = items_claim(worker=worker, limit=limit)
        if not items:
            return {}
        plans = _plan(items)
        _run_calls(plans)
        return _apply(plans, worker=worker)


def engine_drain(*, worker: str, seconds: float = 30.0) -> dict[str, int]:
    """Run batches until nothing is runnable or `seconds` have passed.

    A full batch means more work is waiting: it sends a wake-up (at most one a second for
    all workers), so idle worker processes, on this host or another, join in; and a drain
    that stops at its deadline with work left hands it on the same way rather than leaving
    it for the minute schedule. A drain that finds nothing waits out the current wake-up
    window and looks once more, so work whose wake-up was folded into this one is not left
    for the minute schedule either."""
    deadline = time.monotonic() + seconds
    totals: dict[str, int] = {}
    looked_again = False
    while time.monotonic() < deadline:
        counts = engine_run_batch(worker=worker)
        if not counts:
            # Work committed since this drain's wake-up may have had its own wake-up folded
            # into ours: look once more when the wake-up window closes.
            if looked_again or not wake_window_wait(ENGINE_WAKE_KEY):
                break
            looked_again = True
            continue
        for status, n in counts.items():
            totals[status] = totals.get(status, 0) + n
        if sum(counts.values()) >= BATCH_SIZE:
            engine_wake()
    else:
        engine_wake()
    return totals
