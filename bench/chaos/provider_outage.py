"""Chaos: the model provider fails every call for a while, then recovers.

    python -m bench.chaos.provider_outage                      # 500 items, a 120 s outage
    python -m bench.chaos.provider_outage --items 2000 --outage-seconds 300

In a private Sluice (a temporary embedded database and a real `manage.py qcluster`), items go to a
one-step pipeline on the simulated provider with a signed-webhook receiver; the provider then
answers every call with a transient error for --outage-seconds, and works again afterwards. The
alert rules are evaluated every few seconds, as their schedule would. Verdict PASS when:

- the provider's circuit breaker opened during the outage;
- no item was dead-lettered because of the outage;
- every item ended delivered after the recovery, within --recover-timeout;
- the breaker alert fired during the outage and resolved after it.

Prints the figures as JSON and the verdict; exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

from bench.chaos import cluster_inner, scenario_main

ROOT = Path(__file__).resolve().parent.parent.parent
ALERT_EVERY_SECONDS = 3.0


def outage_set(provider, *, failing: bool) -> None:
    from pipelines.services import configuration as config

    simulation = dict(provider.simulation or {})
    simulation["failure_rates"] = {"transient": 1.0 if failing else 0.0}
    config.provider_update(provider=provider, actor=None, simulation=simulation)
    provider.refresh_from_db()


def statuses(pipeline) -> dict[str, int]:
    from django.db.models import Count

    from pipelines.models import Item

    rows = Item.objects.filter(pipeline=pipeline).values_list("status").annotate(n=Count("id"))
    return dict(sorted(rows))


def failed_calls(pipeline) -> int:
    from django.db.models import Sum

    from pipelines.models import Rollup

    rows = Rollup.objects.filter(pipeline=pipeline)
    return rows.aggregate(n=Sum("failed_transient"))["n"] or 0


def scenario(
    *,
    pipeline,
    items: int,
    outage_seconds: float,
    recover_timeout: float,
    work: Callable[[], None],
) -> dict:
    """Run the outage against `pipeline` (one step, simulated provider, breaker configured);
    `work()` is called in a loop: it runs engine batches in-process, or just waits while a real
    worker cluster runs them."""
    from controlplane.monitoring.alert_services import alert_rules_ensure, alerts_evaluate
    from controlplane.monitoring.models import Alert
    from pipelines.models import BreakerEvent, Item
    from pipelines.services.breaker import breaker_state
    from pipelines.services.ingest import items_submit

    step = pipeline.steps.get()
    provider = step.route.get().model.provider
    alert_rules_ensure()
    alerts = Alert.objects.filter(rule__kind="breaker_open")
    started_at = time.monotonic()
    outage_set(provider, failing=True)
    for first in range(0, items, 1000):
        entries = [
            {"data": {"text": f"ticket {n}: my invoice is wrong"}, "external_id": f"o{n}"}
            for n in range(first, min(items, first + 1000))
        ]
        items_submit(pipeline=pipeline, entries=entries, actor="chaos")

    states_seen: set[str] = set()
    dead_lettered_in_outage = 0
    next_alerts = 0.0
    while time.monotonic() - started_at < outage_seconds:
        work()
        states_seen.add(breaker_state(provider).state)
        if time.monotonic() >= next_alerts:
            alerts_evaluate()
            next_alerts = time.monotonic() + ALERT_EVERY_SECONDS
    during = statuses(pipeline)
    failed_in_outage = failed_calls(pipeline)
    max_attempts_used = max(
        Item.objects.filter(pipeline=pipeline).values_list("attempts", flat=True), default=0
    )
    dead_lettered_in_outage = during.get(Item.Status.DEAD_LETTERED, 0)
    fired = alerts.exists()

    outage_set(provider, failing=False)
    recovered_at = time.monotonic()
    delivered = Item.objects.filter(pipeline=pipeline, status=Item.Status.DELIVERED)
    resolved = False
    while time.monotonic() - recovered_at < recover_timeout:
        work()
        if time.monotonic() >= next_alerts:
            alerts_evaluate()
            next_alerts = time.monotonic() + ALERT_EVERY_SECONDS
        resolved = alerts.exists() and not alerts.filter(resolved_at__isnull=True).exists()
        if delivered.count() == items and resolved:
            break
    recovery_seconds = time.monotonic() - recovered_at
    after = statuses(pipeline)
    breaker_opened = BreakerEvent.objects.filter(provider=provider, to_state="open").exists()
    checks = {
        "breaker_opened": breaker_opened,
        "nothing_dead_lettered": dead_lettered_in_outage == 0
        and after.get(Item.Status.DEAD_LETTERED, 0) == 0,
        "all_delivered_after_recovery": after == {Item.Status.DELIVERED: items},
        "alert_fired_and_resolved": fired and resolved,
    }
    return {
        "items": items,
        "outage_seconds": outage_seconds,
        "breaker_reset_seconds": provider.breaker_reset_seconds,
        "breaker_states_seen": sorted(states_seen),
        "statuses_at_end_of_outage": during,
        # What the outage cost: calls that failed (each an attempt of an item) before the
        # breaker stopped them, and the most attempts any item had used by its end.
        "failed_calls_in_outage": failed_in_outage,
        "max_attempts_used_in_outage": max_attempts_used,
        "statuses_at_end": after,
        "seconds_from_recovery_to_all_delivered": round(recovery_seconds, 1),
        "breaker_events": BreakerEvent.objects.filter(provider=provider).count(),
        "alerts": list(alerts.values("state", "summary", "opened_at", "resolved_at")),
        "checks": checks,
        "verdict": "PASS" if all(checks.values()) else "FAIL",
    }


def chaos_pipeline(*, webhook_url: str, breaker_reset_seconds: int):
    """The bench's one-step pipeline on the simulated provider, with a short breaker reset."""
    from bench.scenario import _pipeline as bench_pipeline
    from pipelines.services import configuration as config

    pipeline = bench_pipeline(name="outage", latency_ms=5, webhook_url=webhook_url)
    provider = pipeline.steps.get().route.get().model.provider
    config.provider_update(
        provider=provider,
        actor=None,
        breaker_failure_threshold=5,
        breaker_reset_seconds=breaker_reset_seconds,
    )
    return pipeline


def inner(args: argparse.Namespace) -> None:
    """In a process whose environment points at the private database: the real cluster."""
    cluster_inner(
        args,
        make_pipeline=lambda webhook_url: chaos_pipeline(
            webhook_url=webhook_url, breaker_reset_seconds=args.breaker_reset_seconds
        ),
        run=lambda pipeline: scenario(
            pipeline=pipeline,
            items=args.items,
            outage_seconds=args.outage_seconds,
            recover_timeout=args.recover_timeout,
            work=lambda: time.sleep(0.5),
        ),
    )


def main() -> None:
    scenario_main(
        module="bench.chaos.provider_outage",
        doc=__doc__,
        inner=inner,
        items=500,
        outage_seconds=120,
        recover_timeout=300,
        extra=lambda parser: parser.add_argument("--breaker-reset-seconds", type=int, default=10),
    )


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    main()
