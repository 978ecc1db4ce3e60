"""Gradual rollout arithmetic, pure: which arm an item takes, the guard metrics of an arm from
its summed rollups, and the comparison of a candidate with production. No ORM here."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from pipelines.histogram import percentile


def arm_point(*, item_id: int, rollout_id: int) -> float:
    """Where an item falls in [0, 100) for a rollout: the same for the same pair, every time and
    in every process, and independent between rollouts."""
    digest = hashlib.sha256(f"{rollout_id}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def takes_candidate(*, item_id: int, rollout_id: int, share: float) -> bool:
    """Whether the item goes to the candidate while it takes `share` percent of the traffic.
    A rising share only adds items: one that took the candidate keeps it."""
    return arm_point(item_id=item_id, rollout_id=rollout_id) < share


@dataclass(frozen=True)
class ArmNumbers:
    """What one prompt version did over a window, from its step rollups."""

    started: int = 0
    accepted: int = 0
    held: int = 0
    failed: int = 0
    approved: int = 0
    edited: int = 0
    rejected: int = 0
    cost: Decimal = Decimal("0")
    latency: Mapping[int, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        """Attempts that ended in an answer the gate judged or an error."""
        return self.accepted + self.held + self.failed

    @property
    def reviewed(self) -> int:
        return self.approved + self.edited + self.rejected

    def metrics(self) -> dict[str, float | None]:
        """Each guard metric, or None without anything to measure it on."""

        def share(part: int, whole: int) -> float | None:
            return part / whole if whole else None

        return {
            "review_rate": share(self.held, self.accepted + self.held),
            "edit_rate": share(self.edited, self.reviewed),
            "reject_rate": share(self.rejected, self.reviewed),
            "error_rate": share(self.failed, self.started),
            "p95_latency": percentile(self.latency, 95),
            "cost_per_item": float(self.cost) / self.finished if self.finished else None,
        }


# Guard -> how its margin is read: "rate" in points (0 to 1), "relative" as a share of
# production's value.
GUARDS: dict[str, str] = {
    "error_rate": "rate",
    "review_rate": "rate",
    "edit_rate": "rate",
    "reject_rate": "rate",
    "p95_latency": "relative",
    "cost_per_item": "relative",
}
GUARD_LABELS = {
    "error_rate": "error rate",
    "review_rate": "review rate",
    "edit_rate": "edit rate (of reviewed)",
    "reject_rate": "reject rate (of reviewed)",
    "p95_latency": "p95 model latency",
    "cost_per_item": "cost per item",
}
# Reviewer-based rates need this many decisions on each side to mean anything.
MIN_REVIEWS = 10


@dataclass(frozen=True)
class GuardResult:
    guard: str
    candidate: float | None
    production: float | None
    limit: float | None
    tripped: bool
    judged: bool

    def sentence(self) -> str:
        label = GUARD_LABELS[self.guard]
        if not self.judged:
            return f"{label}: not enough data yet"
        verb = "worse than" if self.tripped else "within"
        return (
            f"{label}: candidate {format_value(self.guard, self.candidate)} vs production "
            f"{format_value(self.guard, self.production)}, {verb} the limit "
            f"{format_value(self.guard, self.limit)}"
        )


def format_value(guard: str, value: float | None) -> str:
    if value is None:
        return "—"
    if GUARDS[guard] == "rate":
        return f"{value * 100:.1f}%"
    if guard == "p95_latency":
        return f"{value * 1000:.0f} ms"
    return f"{value:.6f}"


@dataclass(frozen=True)
class Comparison:
    """A candidate against production: each guard's result, and whether the candidate has the
    minimum sample for a verdict."""

    results: list[GuardResult]
    enough: bool

    @property
    def tripped(self) -> list[GuardResult]:
        return [r for r in self.results if r.tripped]


def compare(
    *,
    candidate: ArmNumbers,
    production: ArmNumbers,
    min_items: int,
    rate_margin: float,
    relative_margin: float,
) -> Comparison:
    """Compare on every guard. A guard trips when the candidate is worse than production by
    more than its margin; none is judged before both arms have `min_items` finished attempts
    (reviewer rates also need MIN_REVIEWS decisions on each side)."""
    enough = candidate.finished >= min_items and production.finished >= min_items
    mine, theirs = candidate.metrics(), production.metrics()
    results = []
    for guard, kind in GUARDS.items():
        c, p = mine[guard], theirs[guard]
        judged = enough and c is not None and p is not None
        if guard in ("edit_rate", "reject_rate"):
            judged = judged and min(candidate.reviewed, production.reviewed) >= MIN_REVIEWS
        limit = None
        if p is not None:
            limit = p + rate_margin if kind == "rate" else p * (1 + relative_margin)
        tripped = bool(judged and c > limit + 1e-12)
        results.append(GuardResult(guard, c, p, limit, tripped, judged))
    return Comparison(results=results, enough=enough)
