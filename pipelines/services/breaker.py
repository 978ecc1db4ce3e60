"""Per-provider circuit breaker: stop calling a provider that keeps failing, probe it now and
then, and let work through again once it answers.

    closed ──(threshold consecutive failures)──► open ──(reset time passed)──► half-open
      ▲                                           ▲                              │
      └──────────(the probe call succeeds)────────┼──────────────────────────────┤
                                                  └──────(the probe fails)───────┘

The live state is shared by every worker process on every host through Django's cache (the
database cache embedded, Redis when scaled out), never process memory. Per provider:

- ``breaker:<id>:state``: a small dict (state, rev, failures, opened_at, retry_at). No key
  means closed with no failures counted.
- ``breaker:<id>:failures``: consecutive failures while closed, an integer counter.
- ``breaker:<id>:answered``: present while the provider answered a call in the last
  ``DOUBT_SECONDS``; without it (idle, new, or failing) a batch sends it a first wave of calls
  before the rest (``breaker_doubts``, the engine's ``Wave``).
- ``breaker:<id>:turn:<rev>``: taken with cache.add by the one worker that changes the state
  the record with that rev describes. Every state change writes a new random rev, so each key
  is used once; that also makes the add an INSERT of a new primary key on the database cache,
  which is exclusive there as it is on Redis (SET NX). The key that moves an open breaker to
  half-open is the probe token: of all workers asking at once, exactly one gets the probe.

Each change is written to the database as a BreakerEvent, the breaker's history.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import transaction
from django.db.models import QuerySet

from controlplane.services import audit_record
from pipelines.models import BreakerEvent, Provider
from pipelines.services.ratelimit import cache_counter_add

logger = logging.getLogger(__name__)

# Seconds since the epoch. Tests replace it to move time without sleeping.
clock: Callable[[], float] = time.time

CLOSED = BreakerEvent.State.CLOSED.value
OPEN = BreakerEvent.State.OPEN.value
HALF_OPEN = BreakerEvent.State.HALF_OPEN.value

# A turn key only has to outlive the moment between reading a record and changing it; it is
# short so that the keys of past changes do not pile up (the database cache culls a third of
# its entries, live ones included, once it holds more than its MAX_ENTRIES).
TURN_SECONDS = 60
HISTORY_LENGTH = 50
# A provider that answered within this long, and whose last calls did not fail, is trusted with
# a whole batch of calls at once.
DOUBT_SECONDS = 60


@dataclass(frozen=True)
class BreakerView:
    """A provider's breaker as the pages show it."""

    state: str
    failures: int
    opened_at: datetime | None
    retry_at: datetime | None
    # Open (or half-open with its probe overdue) and the next caller will get a probe call.
    probe_due: bool = False
    # Whole seconds until retry_at, when that is still ahead.
    retry_in: int | None = None

    @property
    def state_label(self) -> str:
        return BreakerEvent.State(self.state).label.lower()


@dataclass(frozen=True)
class _Record:
    state: str = CLOSED
    # None until the first change is written: the provider has never left "closed".
    rev: str | None = None
    failures: int = 0
    opened_at: float | None = None
    retry_at: float | None = None

    @classmethod
    def load(cls, value: Any) -> _Record:
        if not isinstance(value, dict) or value.get("state") not in BreakerEvent.State.values:
            return cls()
        return cls(
            state=value["state"],
            rev=value.get("rev"),
            failures=int(value.get("failures") or 0),
            opened_at=value.get("opened_at"),
            retry_at=value.get("retry_at"),
        )

    def dump(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "rev": self.rev,
            "failures": self.failures,
            "opened_at": self.opened_at,
            "retry_at": self.retry_at,
        }


def _state_key(provider_id: int) -> str:
    return f"breaker:{provider_id}:state"


def _failures_key(provider_id: int) -> str:
    return f"breaker:{provider_id}:failures"


def _answered_key(provider_id: int) -> str:
    return f"breaker:{provider_id}:answered"


def _turn_key(provider_id: int, rev: str) -> str:
    return f"breaker:{provider_id}:turn:{rev}"


def _read(provider_id: int) -> _Record:
    return _Record.load(cache.get(_state_key(provider_id)))


def _read_many(provider_ids: Sequence[int]) -> dict[int, _Record]:
    if not provider_ids:
        return {}
    found = cache.get_many([_state_key(pk) for pk in provider_ids])
    return {pk: _Record.load(found.get(_state_key(pk))) for pk in provider_ids}


def _new_rev() -> str:
    return uuid.uuid4().hex


def _probe_lease(provider: Provider) -> float:
    # A probe that has not reported back within its own timeout plus a reset period is taken to
    # be lost (its worker died), and another caller may probe.
    return float(provider.timeout_seconds) + provider.breaker_reset_seconds


def _change(
    provider: Provider,
    seen: _Record,
    *,
    to: str,
    reason: str,
    failures: int,
    opened_at: float | None = None,
    retry_at: float | None = None,
) -> bool:
    """Move the breaker from the state `seen` describes to `to`, unless another worker has
    already moved it from there. True if this caller made the change (and wrote its event)."""
    pk = provider.pk
    if seen.rev is None:
        # First change ever: agree on a rev to take the turn on (add keeps the first one).
        cache.add(_state_key(pk), _Record(rev=_new_rev()).dump(), timeout=None)
        current = _read(pk)
        if current.state != seen.state:
            return False
        seen = current
    if not cache.add(_turn_key(pk, seen.rev), 1, timeout=TURN_SECONDS):
        return False
    # A caller that read the record more than TURN_SECONDS ago could win a turn key that has
    # since expired; it must not overwrite a newer state. (Reading and writing here are not one
    # step, but only such a long-stalled caller can get this far with a stale record.)
    if _read(pk).rev != seen.rev:
        return False
    record = _Record(
        state=to,
        rev=_new_rev(),
        failures=failures,
        opened_at=opened_at,
        retry_at=retry_at,
    )
    cache.set(_state_key(pk), record.dump(), timeout=None)
    # The counter only runs while closed. A worker that read "closed" just before this change
    # may still add its failures after it; closing always starts again from zero, so such
    # leftovers never count towards the next opening.
    cache.set(_failures_key(pk), 0, timeout=None)
    BreakerEvent.objects.create(
        provider=provider,
        from_state=seen.state,
        to_state=to,
        reason=reason[:500],
        failures=failures,
    )
    log = logger.warning if to == OPEN else logger.info
    log("breaker of provider %s: %s -> %s (%s)", provider, seen.state, to, reason)
    return True


def breaker_allowances(providers: Sequence[Provider]) -> dict[int, int | None]:
    """Per provider id, how many calls this batch may make now: None = no limit (closed),
    0 = none (open and its reset time not yet passed), 1 = one probe call (the reset time passed:
    this caller won the half-open probe; other workers asking at the same time get 0).

    Ask only for providers the batch is about to call: a probe won and never made holds the
    breaker half-open until the probe's lease runs out."""
    records = _read_many([p.pk for p in providers])
    now = clock()
    allowances: dict[int, int | None] = {}
    for provider in providers:
        record = records[provider.pk]
        if record.state == CLOSED:
            allowances[provider.pk] = None
        elif record.retry_at is not None and now < record.retry_at:
            allowances[provider.pk] = 0
        else:
            if record.state == OPEN:
                reason = "reset time passed: one probe call"
            else:
                reason = "the probe call did not report back: probing again"
            won = _change(
                provider,
                record,
                to=HALF_OPEN,
                reason=reason,
                failures=record.failures,
                opened_at=record.opened_at,
                retry_at=now + _probe_lease(provider),
            )
            allowances[provider.pk] = 1 if won else 0
    return allowances


def breaker_doubts(providers: Sequence[Provider]) -> set[int]:
    """Ids of the providers a batch should not trust with all its calls at once: their last
    calls failed, or none answered in the last DOUBT_SECONDS (one cache read for all)."""
    if not providers:
        return set()
    keys = {p.pk: (_failures_key(p.pk), _answered_key(p.pk)) for p in providers}
    found = cache.get_many([key for pair in keys.values() for key in pair])
    return {
        pk
        for pk, (failures, answered) in keys.items()
        if (found.get(failures) or 0) > 0 or answered not in found
    }


def failure_runs(outcomes: Sequence[bool]) -> tuple[int, list[int] | None]:
    """Split outcomes into the failures before the first success and, if anything succeeded,
    the length of each run of failures after each success (the last one is the trailing run).

    >>> failure_runs([False, False, True, False, True, False, False])
    (2, [1, 2])
    """
    leading = 0
    for ok in outcomes:
        if ok:
            break
        leading += 1
    if leading == len(outcomes):
        return leading, None
    runs: list[int] = []
    for ok in outcomes[leading:]:
        if ok:
            runs.append(0)
        else:
            runs[-1] += 1
    return leading, runs


def _record_closed(provider: Provider, seen: _Record, outcomes: Sequence[bool], now: float) -> None:
    threshold = provider.breaker_failure_threshold
    key = _failures_key(provider.pk)

    def open_it(failures: int) -> None:
        _change(
            provider,
            seen,
            to=OPEN,
            reason=(
                f"{failures} consecutive failures (threshold {threshold}); "
                f"probing again after {provider.breaker_reset_seconds} s"
            ),
            failures=failures,
            opened_at=now,
            retry_at=now + provider.breaker_reset_seconds,
        )

    leading, runs = failure_runs(outcomes)
    if leading:
        # Failures before this batch's first success continue the run other workers counted.
        failures = cache_counter_add(key, leading, timeout=None)
        if failures >= threshold:
            open_it(failures)
            return
    if runs is None:
        return
    # After a success the count restarts. Later runs are this batch's own: a success seen here
    # and failures of other workers at the same moment have no shared order anyway.
    for run in runs:
        if run >= threshold:
            open_it(run)
            return
    cache.set(key, runs[-1], timeout=None)


def breaker_record(results: Mapping[int, Sequence[bool]]) -> None:
    """After a batch: per provider id, the outcomes of its calls in completion order (True = the
    provider answered, False = a provider failure: timeout, connection error, 5xx, 429).
    Consecutive failures >= provider.breaker_failure_threshold opens the breaker; a probe
    success closes it; a probe failure opens it again for another breaker_reset_seconds.
    Every state change writes a BreakerEvent row (history) with the reason."""
    results = {pk: list(outcomes) for pk, outcomes in results.items() if outcomes}
    if not results:
        return
    providers = Provider.objects.in_bulk(list(results))
    records = _read_many(list(providers))
    now = clock()
    answered = [pk for pk, outcomes in results.items() if any(outcomes)]
    if answered:
        cache.set_many({_answered_key(pk): now for pk in answered}, timeout=DOUBT_SECONDS)
    for pk, provider in providers.items():
        outcomes = results[pk]
        record = records[pk]
        if record.state == OPEN:
            # Calls that started before it opened: they neither close it nor keep it open longer.
            continue
        if record.state == HALF_OPEN:
            # Only the probe is let through while half-open, so the first outcome is its answer.
            if outcomes[0]:
                _change(provider, record, to=CLOSED, reason="the probe call succeeded", failures=0)
                continue
            _change(
                provider,
                record,
                to=OPEN,
                reason=(
                    f"the probe call failed; open for another {provider.breaker_reset_seconds} s"
                ),
                failures=record.failures + 1,
                opened_at=record.opened_at,
                retry_at=now + provider.breaker_reset_seconds,
            )
            continue
        _record_closed(provider, record, outcomes, now)


def _when(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC)


def breaker_states(providers: Sequence[Provider]) -> dict[int, BreakerView]:
    """Per provider id, its breaker as the pages show it (two cache reads for all of them)."""
    if not providers:
        return {}
    records = _read_many([p.pk for p in providers])
    counted = cache.get_many([_failures_key(p.pk) for p in providers])
    now = clock()
    views = {}
    for provider in providers:
        record = records[provider.pk]
        if record.state == CLOSED:
            failures = int(counted.get(_failures_key(provider.pk)) or 0)
        else:
            failures = record.failures
        views[provider.pk] = BreakerView(
            state=record.state,
            failures=failures,
            opened_at=_when(record.opened_at),
            retry_at=_when(record.retry_at),
            probe_due=(
                record.state != CLOSED and record.retry_at is not None and now >= record.retry_at
            ),
            retry_in=(
                math.ceil(record.retry_at - now)
                if record.state != CLOSED and record.retry_at is not None and now < record.retry_at
                else None
            ),
        )
    return views


def breaker_state(provider: Provider) -> BreakerView:
    """The provider's breaker now: state, consecutive failures, when it opened, when it probes."""
    return breaker_states([provider])[provider.pk]


def breaker_event_list(
    *, provider: Provider, limit: int = HISTORY_LENGTH
) -> QuerySet[BreakerEvent]:
    """The provider's most recent breaker changes, newest first."""
    return BreakerEvent.objects.filter(provider=provider).order_by("-at", "-id")[:limit]


@transaction.atomic
def breaker_reset(*, provider: Provider, actor: AbstractBaseUser | None) -> None:
    """Close the breaker by hand and forget its failures, whatever state it is in; audited.
    Does nothing if it is closed with no failures counted."""
    before = breaker_state(provider)
    if before.state == CLOSED and before.failures == 0:
        return
    pk = provider.pk
    # An operator's decision wins over whatever a worker is doing, so no turn is taken here.
    cache.set(_state_key(pk), _Record(rev=_new_rev()).dump(), timeout=None)
    cache.set(_failures_key(pk), 0, timeout=None)
    who = actor.get_username() if actor is not None else "system"
    if before.state != CLOSED:
        BreakerEvent.objects.create(
            provider=provider,
            from_state=before.state,
            to_state=CLOSED,
            reason=f"closed by hand by {who}",
            failures=before.failures,
        )
    audit_record(
        actor=actor,
        action="provider.breaker_reset",
        obj=provider,
        before={"state": before.state, "failures": before.failures},
        after={"state": CLOSED, "failures": 0},
    )
    logger.info("breaker of provider %s closed by hand by %s", provider, who)
