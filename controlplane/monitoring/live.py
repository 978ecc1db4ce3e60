"""What the dashboards show, read once per tick and fanned out to every viewer in the process.

A dashboard page is rendered from `dashboard_read`; its websocket then subscribes to the process's
one `ticker`. The ticker runs while anyone watches: about once a second it reads the rollups, the
live gauges, the budgets and (for operators) the breakers and worker heartbeats for the union of
the pipelines its viewers watch, builds one update per subscription (a subscription is what a
viewer watches: a set of pipelines, a range, and whether operations details are shown), and sends
that same text to every consumer of the subscription. A hundred viewers of one dashboard cost the
same queries as one.

The ticker keeps in memory the per-pipeline minutes of the current and previous hour (re-reading
only the last few minutes each tick). The queue depth and review backlog charts take their history
from the gauge samples the schedule stores once a minute (`samples.py`), read with the rest of a
snapshot; each tick then appends the live gauges it read.

A pipeline's own dashboard also shows its steps over the range (the step rollups, every prompt
version together). The ticker keeps their minutes the same way for the pipelines watched on
their own dashboard and, for the 24 h and 7 d ranges, the totals before those minutes, read
again only when the hour changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from controlplane.monitoring.figures import (
    BudgetBar,
    Sample,
    charts_build,
    health_figure,
    step_rows,
    step_throughput_figure,
    tiles_build,
    traces_of,
    x_of,
)
from controlplane.monitoring.health import HEARTBEAT_SILENT_SECONDS, health_sample_series
from controlplane.monitoring.samples import gauge_sample_series
from controlplane.selectors import heartbeat_list
from controlplane.ticking import TickLoop, Viewer
from pipelines import metrics
from pipelines.metrics import DEFAULT_RANGE, RANGES, Point
from pipelines.models import Pipeline, Provider, Step
from pipelines.selectors import pipeline_get_for_user, pipeline_list_for_user, provider_list
from pipelines.services.breaker import breaker_states
from pipelines.services.budgets import Budget, budgets_for, day_bounds

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0
# The latency measures the dashboards draw (the latency chart and the p95 tile): only these
# latency rows are read.
DRAWN = ("end_to_end",)
# Minutes re-read on every tick: a batch that finishes late still lands in a minute re-read.
LIVE_MINUTES = 3
# The tiles' rates (items per minute, p95, error rate) cover the last five minutes.
RECENT_MINUTES = 5


@dataclass(frozen=True)
class Subscription:
    """What a viewer watches; viewers with equal subscriptions share every update."""

    pipeline_ids: tuple[int, ...]
    range_name: str
    # One pipeline's dashboard (with its SLA line) rather than the overview.
    single: bool
    # Breakers and worker heartbeats: provider names and hosts are for operators only.
    operations: bool

    @property
    def health(self) -> bool:
        """The overview of an operator also draws the breaker and worker history."""
        return self.operations and not self.single


def dashboard_scope(*, user, client_slug: str = "", slug: str = "") -> list[Pipeline]:
    """The pipelines a dashboard shows: the one named (404 outside the user's clients) or every
    pipeline the user may see."""
    if slug:
        return [pipeline_get_for_user(user=user, client_slug=client_slug, slug=slug)]
    return list(pipeline_list_for_user(user=user).order_by("client__name", "name"))


def range_name_of(value: str | None) -> str:
    return value if value in RANGES else DEFAULT_RANGE


def dashboard_read(
    *,
    pipelines: Sequence[Pipeline],
    single: bool,
    range_name: str,
    operations: bool,
    now: datetime,
) -> dict[str, Any]:
    """Everything a dashboard shows over its whole range, read from the rollups and the gauge
    samples, with the live gauges as the last point: the page is rendered from it and a
    (re)subscribing websocket receives it as its snapshot."""
    range_name = range_name_of(range_name)
    since, until, resolution = metrics.range_bounds(range_name, now=now)
    ids = [p.pk for p in pipelines]
    points = metrics.series(
        pipeline_ids=ids, since=since, until=until, resolution=resolution, measures=DRAWN
    )
    if resolution == "minute":
        recent_points = points[-RECENT_MINUTES:]
    else:
        recent_points = metrics.series(
            pipeline_ids=ids,
            since=until - timedelta(minutes=RECENT_MINUTES),
            until=until,
            measures=DRAWN,
        )
    gauges = metrics.gauges_total(metrics.gauges(pipeline_ids=ids))
    history = gauge_sample_series(pipeline_ids=ids, since=since, until=until, resolution=resolution)
    costs = metrics.cost_since(pipeline_ids=ids, since=day_bounds(now)[0])
    payload: dict[str, Any] = {
        "type": "snapshot",
        "range": range_name,
        "since": x_of(since),
        "charts": charts_build(
            points=points,
            samples=[*history, Sample(now, gauges)],
            budgets=budget_bars(pipelines, budgets_for(pipelines, now=now)),
            resolution=resolution,
            sla_seconds=pipelines[0].latency_target_seconds if single and pipelines else None,
        ),
        "tiles": tiles_build(
            recent=metrics.totals(recent_points),
            minutes=RECENT_MINUTES,
            gauges=gauges,
            cost_today=sum((c for c, _ in costs.values()), Decimal(0)),
            saved_today=sum((s for _, s in costs.values()), Decimal(0)),
        ),
    }
    if single and pipelines:
        # A pipeline's own dashboard also shows its steps over the range (from the hour
        # `series` starts at on the long ranges, as the charts do).
        start = points[0].at if points else since
        totals = metrics.step_totals(pipeline_ids=ids, since=start, until=until)
        rows, figure = steps_view(step_list(ids)[ids[0]], totals.get(ids[0], {}))
        payload["steps"] = rows
        payload["charts"]["steps"] = figure
    if operations:
        providers = operations_providers()
        payload.update(operations_read(now=now, providers=providers))
        if not single:
            points = health_sample_series(since=since, until=until, resolution=resolution)
            payload["charts"]["health"] = health_figure(points, providers=_named(providers))
    return payload


def step_list(pipeline_ids: Sequence[int]) -> dict[int, list[tuple[int, str]]]:
    """Per pipeline, its steps as (id, name) in their order; one query. The caller has scoped
    `pipeline_ids` to what the viewer may see."""
    found: dict[int, list[tuple[int, str]]] = {pid: [] for pid in pipeline_ids}
    rows = (
        Step.objects.filter(pipeline_id__in=list(pipeline_ids))
        .order_by("pipeline_id", "position", "pk")
        .values_list("pipeline_id", "pk", "name")
    )
    for pid, pk, name in rows:
        found[pid].append((pk, name))
    return found


def steps_view(
    steps: Sequence[tuple[int, str]], totals: dict[int, Point]
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The per-step table rows and the throughput per step chart of one pipeline's dashboard."""
    return step_rows(steps, totals), step_throughput_figure(steps, totals)


def budget_bars(pipelines: Iterable[Pipeline], budgets: dict[int, list[Budget]]) -> list[BudgetBar]:
    """One bar per budget: a pipeline's own per day, its client's per month (once per client)."""
    bars: dict[tuple[str, int], BudgetBar] = {}
    for pipeline in pipelines:
        for budget in budgets.get(pipeline.pk, []):
            if budget.scope == "pipeline":
                key, owner = ("pipeline", pipeline.pk), pipeline.name
            else:
                key, owner = ("client", pipeline.client_id), pipeline.client.name
            label = f"{owner} · {budget.label}"
            bars.setdefault(key, BudgetBar(label=label, spent=budget.spent, limit=budget.limit))
    return list(bars.values())


def operations_providers() -> list[Provider]:
    """The providers of the breaker table and the health chart, in their order."""
    return list(provider_list().prefetch_related(None).order_by("name"))


def _named(providers: Iterable[Provider]) -> list[tuple[int, str]]:
    return [(p.pk, p.name) for p in providers]


def operations_read(
    *, now: datetime, providers: Sequence[Provider] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Breaker states per provider and worker heartbeats, as shown to operators."""
    if providers is None:
        providers = operations_providers()
    states = breaker_states(providers)
    breakers = [
        {
            "provider": p.name,
            "kind": p.get_kind_display(),
            "state": states[p.pk].state_label,
            "failures": states[p.pk].failures,
        }
        for p in providers
    ]
    workers = []
    for beat in heartbeat_list():
        age = max(0.0, (now - beat.last_seen).total_seconds())
        workers.append(
            {
                "host": beat.host,
                "cluster": beat.cluster,
                "pid": beat.pid,
                "seen": f"{age:.0f} s ago",
                "status": "alive" if age < HEARTBEAT_SILENT_SECONDS else "silent",
            }
        )
    return {"breakers": breakers, "workers": workers}


def _hour_of(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _live_window(now: datetime) -> tuple[datetime, datetime, datetime]:
    """(current minute, its end, start of the previous hour): the ticker keeps the minutes
    from the last to the second."""
    current = metrics.range_bounds("15m", now=now)[1] - timedelta(minutes=1)
    return current, current + timedelta(minutes=1), _hour_of(current) - timedelta(hours=1)


def _keep_minutes[T](
    kept_by_pipeline: dict[int, dict[datetime, T]],
    ids: Sequence[int],
    now: datetime,
    read: Callable[[list[int], datetime, datetime], dict[int, dict[datetime, T]]],
) -> None:
    """Keep the minutes of the current and previous hour per pipeline: pipelines seen before
    re-read only their last LIVE_MINUTES minutes, new ones read the two hours once (`read`
    answers per pipeline, by minute, for a window: one query or two)."""
    current, until, keep_from = _live_window(now)
    known = [pid for pid in ids if pid in kept_by_pipeline]
    new = [pid for pid in ids if pid not in kept_by_pipeline]
    if known:
        since = current - timedelta(minutes=LIVE_MINUTES - 1)
        fresh = read(known, since, until)
        for pid in known:
            kept = kept_by_pipeline[pid]
            for at in [at for at in kept if at >= since or at < keep_from]:
                del kept[at]
            kept.update(fresh.get(pid, {}))
    if new:
        fresh = read(new, keep_from, until)
        kept_by_pipeline.update({pid: fresh.get(pid, {}) for pid in new})


def _summed(points: Iterable[Point], at: datetime) -> Point:
    total = metrics.totals(list(points))
    total.at = at
    return total


class Ticker(TickLoop):
    """One per web process: reads once per tick for every viewer of the process (see above)."""

    label = "dashboard"

    def __init__(self, *, interval: float = TICK_SECONDS) -> None:
        self.interval = interval
        self.viewers: dict[Subscription, set[Viewer]] = {}
        self.subscriptions: dict[Viewer, Subscription] = {}
        self.minutes: dict[int, dict[datetime, Point]] = {}
        # The same window per step, for pipelines watched on their own dashboard.
        self.step_minutes: dict[int, dict[datetime, dict[int, Point]]] = {}
        # The long ranges' step totals before that window, per (range, pipeline): (from, to,
        # totals by step). They change only when the hour does.
        self.step_base: dict[tuple[str, int], tuple[datetime, datetime, dict[int, Point]]] = {}
        self.task: asyncio.Task | None = None

    # --- viewers ---------------------------------------------------------------------------

    async def subscribe(self, viewer: Viewer, subscription: Subscription) -> None:
        """Send the viewer the full current window, then the updates of every tick."""
        self.unsubscribe(viewer)
        snapshot = await database_sync_to_async(self.snapshot)(subscription, timezone.now())
        await viewer.send(text_data=snapshot)
        self.subscriptions[viewer] = subscription
        self.viewers.setdefault(subscription, set()).add(viewer)
        self.ensure_running()

    def unsubscribe(self, viewer: Viewer) -> None:
        """Stop sending to the viewer; the ticker stops by itself once nobody watches."""
        subscription = self.subscriptions.pop(viewer, None)
        if subscription is None:
            return
        viewers = self.viewers.get(subscription, set())
        viewers.discard(viewer)
        if not viewers:
            self.viewers.pop(subscription, None)

    def watched(self) -> bool:
        return bool(self.viewers)

    def idle(self) -> None:
        self.minutes.clear()
        self.step_minutes.clear()
        self.step_base.clear()

    async def tick(self) -> None:
        """One read for every subscription, one send of the same text per viewer."""
        subscriptions = list(self.viewers)
        if not subscriptions:
            return
        texts = await database_sync_to_async(self.read)(subscriptions, timezone.now())
        await self.send_all(
            (viewer, texts[subscription])
            for subscription in subscriptions
            if subscription in texts
            for viewer in list(self.viewers.get(subscription, ()))
        )

    # --- reading (in a database thread) -----------------------------------------------------

    def snapshot(self, subscription: Subscription, now: datetime) -> str:
        pipelines = list(
            Pipeline.objects.filter(pk__in=subscription.pipeline_ids)
            .select_related("client")
            .order_by("pk")
        )
        payload = dashboard_read(
            pipelines=pipelines,
            single=subscription.single,
            range_name=subscription.range_name,
            operations=subscription.operations,
            now=now,
        )
        return json.dumps(payload, cls=DjangoJSONEncoder)

    def read(self, subscriptions: Sequence[Subscription], now: datetime) -> dict[Subscription, str]:
        """The tick's one read for the union of the pipelines watched, and each subscription's
        update built from it."""
        ids = sorted({pid for s in subscriptions for pid in s.pipeline_ids})
        pipelines = {p.pk: p for p in Pipeline.objects.filter(pk__in=ids).select_related("client")}
        ids = sorted(pipelines)
        self._forget_others(ids)
        self._read_minutes(ids, now)
        gauges = metrics.gauges(pipeline_ids=ids)
        budgets = budgets_for(pipelines.values(), now=now)
        costs = metrics.cost_since(pipeline_ids=ids, since=day_bounds(now)[0])
        steps = self._read_steps(subscriptions, pipelines, now)
        operations = health = None
        if any(s.operations for s in subscriptions):
            providers = operations_providers()
            operations = operations_read(now=now, providers=providers)
            health = self._read_health(subscriptions, providers, now)
        texts = {}
        for subscription in subscriptions:
            watched = [pipelines[pid] for pid in subscription.pipeline_ids if pid in pipelines]
            update = self._update(subscription, watched, gauges, budgets, costs, now)
            if subscription.single and watched:
                rows, figure = self._steps_view(subscription, steps, now)
                update["steps"] = rows
                update["charts"]["steps"] = {"figure": figure}
            if subscription.operations and operations is not None:
                update.update(operations)
            if subscription.health and health is not None:
                resolution = RANGES[subscription.range_name][1]
                update["charts"]["health"] = {"traces": health[resolution]}
            texts[subscription] = json.dumps(update, cls=DjangoJSONEncoder)
        return texts

    def _read_health(
        self, subscriptions: Sequence[Subscription], providers: Sequence[Provider], now: datetime
    ) -> dict[str, list[dict[str, list]]] | None:
        """The newest health samples as health chart traces, per resolution the operators'
        overviews use: the last few minutes, or the previous and current hour. Two queries per
        resolution."""
        resolutions = {RANGES[s.range_name][1] for s in subscriptions if s.health}
        if not resolutions:
            return None
        until = metrics.range_bounds("15m", now=now)[1]
        current = until - timedelta(minutes=1)
        found = {}
        for resolution in sorted(resolutions):
            if resolution == "hour":
                since = _hour_of(current) - timedelta(hours=1)
            else:
                since = current - timedelta(minutes=LIVE_MINUTES - 1)
            points = health_sample_series(since=since, until=until, resolution=resolution)
            found[resolution] = traces_of(health_figure(points, providers=_named(providers)))
        return found

    def _forget_others(self, ids: Sequence[int]) -> None:
        for pid in set(self.minutes) - set(ids):
            del self.minutes[pid]

    def _read_minutes(self, ids: Sequence[int], now: datetime) -> None:
        _keep_minutes(
            self.minutes,
            ids,
            now,
            lambda pids, since, until: metrics.series_by_pipeline(
                pipeline_ids=pids, since=since, until=until, measures=DRAWN
            ),
        )

    def _read_steps(
        self, subscriptions: Sequence[Subscription], pipelines: dict[int, Pipeline], now: datetime
    ) -> dict[int, list[tuple[int, str]]]:
        """For the pipelines watched on their own dashboard: their steps, the minutes of their
        step rollups (kept like the pipeline minutes) and, for the long ranges, the totals
        before those minutes (read again only when the hour changes). Two queries a tick, and
        one more per long range once an hour; none without such a viewer."""
        single = [s for s in subscriptions if s.single]
        ids = sorted({pid for s in single for pid in s.pipeline_ids if pid in pipelines})
        for pid in set(self.step_minutes) - set(ids):
            del self.step_minutes[pid]
        for key in [key for key in self.step_base if key[1] not in ids]:
            del self.step_base[key]
        if not ids:
            return {}
        names = step_list(ids)
        _keep_minutes(
            self.step_minutes,
            ids,
            now,
            lambda pids, since, until: metrics.step_minutes(
                pipeline_ids=pids, since=since, until=until
            ),
        )
        keep_from = _live_window(now)[2]
        for range_name in sorted({s.range_name for s in single}):
            since, _, resolution = metrics.range_bounds(range_name, now=now)
            if resolution != "hour":
                continue  # the whole range is in the kept minutes
            start = _hour_of(since)
            watched = {pid for s in single if s.range_name == range_name for pid in s.pipeline_ids}
            stale = [
                pid
                for pid in ids
                if pid in watched
                and self.step_base.get((range_name, pid), (None, None))[:2] != (start, keep_from)
            ]
            if stale:
                totals = metrics.step_totals(pipeline_ids=stale, since=start, until=keep_from)
                for pid in stale:
                    self.step_base[(range_name, pid)] = (start, keep_from, totals.get(pid, {}))
        return names

    def _steps_view(
        self,
        subscription: Subscription,
        names: dict[int, list[tuple[int, str]]],
        now: datetime,
    ) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """One pipeline's steps over the subscription's range: the totals before the kept
        minutes (long ranges) and the kept minutes of the range."""
        [pid] = subscription.pipeline_ids
        since, _, resolution = metrics.range_bounds(subscription.range_name, now=now)
        parts: dict[int, list[Point]] = {}
        if resolution == "hour":
            since = _live_window(now)[2]
            base = self.step_base.get((subscription.range_name, pid), (None, None, {}))[2]
            for step_id, point in base.items():
                parts.setdefault(step_id, []).append(point)
        for at, steps in self.step_minutes.get(pid, {}).items():
            if at >= since:
                for step_id, point in steps.items():
                    parts.setdefault(step_id, []).append(point)
        totals = {step_id: metrics.totals(points) for step_id, points in parts.items()}
        return steps_view(names.get(pid, []), totals)

    def _update(
        self,
        subscription: Subscription,
        pipelines: Sequence[Pipeline],
        gauges: dict[int, dict[str, int]],
        budgets: dict[int, list[Budget]],
        costs: dict[int, tuple[Decimal, Decimal]],
        now: datetime,
    ) -> dict[str, Any]:
        since, until, resolution = metrics.range_bounds(subscription.range_name, now=now)
        ids = [p.pk for p in pipelines]
        minutes = [self.minutes.get(pid, {}) for pid in ids]
        current = until - timedelta(minutes=1)
        if resolution == "minute":
            ats = [current - timedelta(minutes=k) for k in reversed(range(LIVE_MINUTES))]
            points = [_summed((m[at] for m in minutes if at in m), at) for at in ats]
        else:
            hours = [_hour_of(current) - timedelta(hours=1), _hour_of(current)]
            points = [
                _summed((p for m in minutes for at, p in m.items() if _hour_of(at) == h), h)
                for h in hours
            ]
        recent_from = until - timedelta(minutes=RECENT_MINUTES)
        recent = _summed((p for m in minutes for at, p in m.items() if at >= recent_from), now)
        total = metrics.gauges_total({pid: gauges.get(pid, {}) for pid in ids})
        charts = charts_build(
            points=points,
            samples=[Sample(now, total)],
            budgets=budget_bars(pipelines, {pid: budgets.get(pid, []) for pid in ids}),
            resolution=resolution,
            sla_seconds=None,
        )
        return {
            "type": "update",
            "at": x_of(now),
            "since": x_of(since),
            "charts": {
                name: {"figure": figure} if name == "budget" else {"traces": traces_of(figure)}
                for name, figure in charts.items()
            },
            "tiles": tiles_build(
                recent=recent,
                minutes=RECENT_MINUTES,
                gauges=total,
                cost_today=sum((costs.get(pid, (0, 0))[0] for pid in ids), Decimal(0)),
                saved_today=sum((costs.get(pid, (0, 0))[1] for pid in ids), Decimal(0)),
            ),
        }


# The process's one ticker: every dashboard websocket of this process subscribes here.
ticker = Ticker()
