"""Alert rules as plain logic: the kinds, their defaults, and whether a rule's condition holds
for the numbers read from the rollups. No ORM here: `alert_services` gathers the numbers
(`Facts`) and writes the alerts; everything that decides is here and tested without a database.

Each check answers, per subject (a pipeline, a provider, a worker cluster), a `Finding` when
the condition holds and nothing when it does not; a subject that stops being found resolves
its alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Kind(StrEnum):
    QUEUE_DEPTH = "queue_depth"
    DEAD_LETTERS = "dead_letters"
    ERROR_RATE = "error_rate"
    LATENCY_SLA = "latency_sla"
    BUDGET = "budget"
    REVIEW_OVERDUE = "review_overdue"
    LATENCY_BASELINE = "latency_baseline"
    ERROR_RATE_BASELINE = "error_rate_baseline"
    BREAKER_OPEN = "breaker_open"
    WORKER_SILENT = "worker_silent"
    ROLLOUT_ROLLED_BACK = "rollout_rolled_back"
    PIPELINE_PAUSED = "pipeline_paused"


# What a rule of each kind watches, and what its threshold and window mean (the rule pages
# show these).
KIND_HELP: dict[Kind, tuple[str, str, str]] = {
    Kind.QUEUE_DEPTH: ("Queue depth", "items queued or waiting to retry, above", "—"),
    Kind.DEAD_LETTERS: ("Dead letters growing", "dead-lettered items in the window, above", "yes"),
    Kind.ERROR_RATE: ("Error rate", "% of model calls failed in the window, above", "yes"),
    Kind.LATENCY_SLA: ("p95 end to end over the SLA", "% of the pipeline's SLA, above", "yes"),
    Kind.BUDGET: ("Spend against budget", "% of a daily or monthly budget spent, at least", "—"),
    Kind.REVIEW_OVERDUE: ("Review tasks overdue", "overdue review tasks, above", "—"),
    Kind.LATENCY_BASELINE: (
        "p95 worse than its baseline",
        "% worse than the 24 h before the window, at least",
        "yes",
    ),
    Kind.ERROR_RATE_BASELINE: (
        "Error rate worse than its baseline",
        "% worse than the 24 h before the window, at least",
        "yes",
    ),
    Kind.BREAKER_OPEN: ("Circuit breaker open", "—", "—"),
    Kind.WORKER_SILENT: ("No worker heartbeat", "—", "minutes without a heartbeat"),
    Kind.ROLLOUT_ROLLED_BACK: ("Rollout rolled back by a guard", "—", "—"),
    Kind.PIPELINE_PAUSED: ("Pipeline paused by a system error", "—", "—"),
}

GLOBAL_KINDS = frozenset({Kind.BREAKER_OPEN, Kind.WORKER_SILENT})
# Raised by something that happened rather than found by evaluation on the rollups: evaluation
# neither opens nor resolves their alerts (controlplane/rollout_alerts.py and
# controlplane/system_alerts.py do both).
EVENT_KINDS = frozenset({Kind.ROLLOUT_ROLLED_BACK, Kind.PIPELINE_PAUSED})
PIPELINE_KINDS = frozenset(Kind) - GLOBAL_KINDS

# Rates over fewer calls (or percentiles over fewer items) than this say nothing: one failed
# call out of two is not a 50% error rate anyone should be woken for.
MIN_SAMPLES = 10
# A baseline error rate below this counts as this much, so that 0.1% -> 0.2% is not "100%
# worse"; the same for latency, in seconds.
ERROR_RATE_FLOOR = 1.0
LATENCY_FLOOR_SECONDS = 0.1
# A worker cluster silent for longer than this is taken to be gone for good (a host taken
# out of service), not down: its alert resolves.
WORKER_FORGOTTEN_SECONDS = 24 * 3600


@dataclass(frozen=True)
class RuleDefault:
    kind: Kind
    threshold: float
    window_minutes: int


# Created with every pipeline (and for pipelines that have no rules yet, on migrate).
PIPELINE_DEFAULTS: tuple[RuleDefault, ...] = (
    RuleDefault(Kind.QUEUE_DEPTH, 1000, 5),
    RuleDefault(Kind.DEAD_LETTERS, 0, 15),
    RuleDefault(Kind.ERROR_RATE, 10, 15),
    RuleDefault(Kind.LATENCY_SLA, 100, 15),
    RuleDefault(Kind.BUDGET, 80, 60),
    RuleDefault(Kind.BUDGET, 100, 60),
    RuleDefault(Kind.REVIEW_OVERDUE, 0, 15),
    RuleDefault(Kind.LATENCY_BASELINE, 20, 60),
    RuleDefault(Kind.ERROR_RATE_BASELINE, 20, 60),
    RuleDefault(Kind.ROLLOUT_ROLLED_BACK, 0, 15),
    RuleDefault(Kind.PIPELINE_PAUSED, 0, 15),
)
# One of each, with no pipeline, created on migrate.
GLOBAL_DEFAULTS: tuple[RuleDefault, ...] = (
    RuleDefault(Kind.BREAKER_OPEN, 0, 1),
    RuleDefault(Kind.WORKER_SILENT, 0, 3),
)


@dataclass(frozen=True)
class Window:
    """A pipeline's numbers over a rule's window: model calls, failed calls, dead-lettered
    items and the p95 end to end (None without samples) with how many items it is over."""

    calls: int = 0
    failed: int = 0
    dead_lettered: int = 0
    p95: float | None = None
    latency_samples: int = 0

    @property
    def error_rate(self) -> float | None:
        """Failed calls as a % of calls; None over too few calls to mean anything."""
        if self.calls < MIN_SAMPLES:
            return None
        return 100.0 * self.failed / self.calls


@dataclass(frozen=True)
class PipelineFacts:
    name: str
    sla_seconds: int
    queue_depth: int = 0
    # The most spent of its budgets, as a % (None: no budget), and which one.
    budget_percent: float | None = None
    budget_label: str = ""
    review_overdue: int = 0
    # Per window length in minutes: that window ending now, and the 24 h before it.
    windows: Mapping[int, Window] = field(default_factory=dict)
    baselines: Mapping[int, Window] = field(default_factory=dict)


@dataclass(frozen=True)
class Facts:
    """Everything rules look at, read once per evaluation."""

    now: datetime
    pipelines: Mapping[int, PipelineFacts] = field(default_factory=dict)
    # Provider id -> (name, breaker state, consecutive failures).
    breakers: Mapping[int, tuple[str, str, int]] = field(default_factory=dict)
    # "host/cluster" -> last heartbeat.
    heartbeats: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """The condition holds for `subject`: what to show and the number behind it."""

    subject: str
    summary: str
    value: float
    pipeline_id: int | None = None


@dataclass(frozen=True)
class RuleSpec:
    """What a rule says, without the ORM."""

    kind: Kind
    threshold: float
    window_minutes: int
    pipeline_id: int | None = None


def pipeline_subject(pipeline_id: int) -> str:
    return f"pipeline:{pipeline_id}"


def _pct(value: float) -> str:
    return f"{value:.1f}%"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def rule_check(rule: RuleSpec, facts: Facts) -> list[Finding]:
    """The subjects for which `rule`'s condition holds now."""
    if rule.kind == Kind.BREAKER_OPEN:
        return [
            Finding(
                subject=f"provider:{pid}",
                summary=f"Circuit breaker of provider {name} is {state.replace('_', '-')} "
                f"after {failures} consecutive failures",
                value=float(failures),
            )
            for pid, (name, state, failures) in sorted(facts.breakers.items())
            if state != "closed"
        ]
    if rule.kind == Kind.WORKER_SILENT:
        return _workers_silent(rule, facts)
    pipeline = facts.pipelines.get(rule.pipeline_id) if rule.pipeline_id is not None else None
    if pipeline is None:
        return []
    value, summary = _pipeline_condition(rule, pipeline)
    if summary is None:
        return []
    return [
        Finding(
            subject=pipeline_subject(rule.pipeline_id),
            summary=f"{pipeline.name}: {summary}",
            value=round(value, 6),
            pipeline_id=rule.pipeline_id,
        )
    ]


def _workers_silent(rule: RuleSpec, facts: Facts) -> list[Finding]:
    # Evaluation itself runs on a worker, so "no heartbeat at all" only means the first one
    # is not written yet; a cluster that stopped is one whose heartbeat is old.
    limit = rule.window_minutes * 60
    found = []
    for name, last_seen in sorted(facts.heartbeats.items()):
        silent = (facts.now - last_seen).total_seconds()
        if limit < silent < WORKER_FORGOTTEN_SECONDS:
            found.append(
                Finding(
                    subject=f"worker:{name}"[:200],
                    summary=f"No heartbeat from worker cluster {name} for {_seconds(silent)}",
                    value=round(silent, 1),
                )
            )
    return found


def _pipeline_condition(rule: RuleSpec, p: PipelineFacts) -> tuple[float, str | None]:
    """(the value the rule looks at, a summary when the condition holds or None)."""
    t = rule.threshold
    window = p.windows.get(rule.window_minutes, Window())
    minutes = f"{rule.window_minutes} min"
    if rule.kind == Kind.QUEUE_DEPTH:
        if p.queue_depth > t:
            return p.queue_depth, f"{p.queue_depth} items waiting (threshold {t:g})"
        return p.queue_depth, None
    if rule.kind == Kind.DEAD_LETTERS:
        n = window.dead_lettered
        if n > t:
            return n, f"{n} item{'s' if n != 1 else ''} dead-lettered in the last {minutes}"
        return n, None
    if rule.kind == Kind.ERROR_RATE:
        rate = window.error_rate
        if rate is not None and rate > t:
            return rate, (
                f"error rate {_pct(rate)} ({window.failed} of {window.calls} calls) in the "
                f"last {minutes}, above {t:g}%"
            )
        return rate or 0.0, None
    if rule.kind == Kind.LATENCY_SLA:
        limit = p.sla_seconds * t / 100
        if window.p95 is not None and window.latency_samples >= MIN_SAMPLES and window.p95 > limit:
            return window.p95, (
                f"p95 end to end {_seconds(window.p95)} in the last {minutes}, over "
                f"{_seconds(limit)} ({t:g}% of the {_seconds(p.sla_seconds)} SLA)"
            )
        return window.p95 or 0.0, None
    if rule.kind == Kind.BUDGET:
        spent = p.budget_percent
        if spent is not None and spent >= t:
            return spent, f"{_pct(spent)} of {p.budget_label} spent (threshold {t:g}%)"
        return spent or 0.0, None
    if rule.kind == Kind.REVIEW_OVERDUE:
        n = p.review_overdue
        if n > t:
            return n, f"{n} review task{'s' if n != 1 else ''} overdue"
        return n, None
    if rule.kind in (Kind.LATENCY_BASELINE, Kind.ERROR_RATE_BASELINE):
        return _baseline(rule, window, p.baselines.get(rule.window_minutes, Window()))
    return 0.0, None


def worse_by(current: float, baseline: float, floor: float) -> float:
    """How much worse `current` is than `baseline`, in % of the baseline (never below
    `floor`, so that a near-zero baseline does not make any change look enormous)."""
    base = max(baseline, floor)
    return 100.0 * (current - base) / base


def _baseline(rule: RuleSpec, window: Window, baseline: Window) -> tuple[float, str | None]:
    t = rule.threshold
    minutes = f"{rule.window_minutes} min"
    if rule.kind == Kind.LATENCY_BASELINE:
        if (
            window.p95 is None
            or baseline.p95 is None
            or min(window.latency_samples, baseline.latency_samples) < MIN_SAMPLES
        ):
            return 0.0, None
        worse = worse_by(window.p95, baseline.p95, LATENCY_FLOOR_SECONDS)
        if worse >= t:
            return worse, (
                f"p95 end to end {_seconds(window.p95)} in the last {minutes}, {worse:.0f}% "
                f"worse than {_seconds(baseline.p95)} over the 24 h before"
            )
        return worse, None
    now_rate, base_rate = window.error_rate, baseline.error_rate
    if now_rate is None or base_rate is None:
        return 0.0, None
    worse = worse_by(now_rate, base_rate, ERROR_RATE_FLOOR)
    if worse >= t:
        return worse, (
            f"error rate {_pct(now_rate)} in the last {minutes}, {worse:.0f}% worse than "
            f"{_pct(base_rate)} over the 24 h before"
        )
    return worse, None


@dataclass(frozen=True)
class Step:
    """What evaluation does with one (rule, subject): open a new alert, update the open one,
    resolve it, or nothing (cooling down after the last one, or nothing to do)."""

    action: str  # "open", "update", "resolve", "cooldown", "none"


def alert_step(
    *,
    found: bool,
    has_open: bool,
    last_resolved_at: datetime | None,
    cooldown_minutes: int,
    now: datetime,
) -> Step:
    """One incident is one alert: while the condition holds the open alert is updated; when it
    clears the alert resolves; a new alert opens only once the cooldown after the last one has
    passed."""
    if has_open:
        return Step("update" if found else "resolve")
    if not found:
        return Step("none")
    if (
        last_resolved_at is not None
        and (now - last_resolved_at).total_seconds() < cooldown_minutes * 60
    ):
        return Step("cooldown")
    return Step("open")
