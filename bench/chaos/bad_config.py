"""Chaos: a step's configuration is corrupted in the database while items flow, then fixed.

    python -m bench.chaos.bad_config                         # 300 items, broken for 30 s
    python -m bench.chaos.bad_config --corruption output_schema --outage-seconds 60

In a private Sluice (a temporary embedded database and a real `manage.py qcluster`), items flow
through a one-step pipeline on the simulated provider with a webhook receiver. Once the first
are delivered, one configuration value is overwritten with an UPDATE that bypasses the services'
validation and audit, as a bad deploy or a manual edit would (--corruption: the production
prompt's template stops parsing, the output schema stops being JSON Schema, the provider's
simulation settings become unusable, or the route's model is switched off), and the rest of the
items are submitted. After --outage-seconds the operator puts the value right and resumes the
pipeline. Verdict PASS when:

- items were being delivered before the corruption;
- the engine detected it: the pipeline paused, with an audit entry naming the cause;
- the "pipeline paused by a system error" alert fired;
- while broken, no item was lost, dead-lettered, quarantined or rejected, and none ran;
- after the fix and resume every item was delivered within --recover-timeout, and the alert
  resolved.

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
FLOWING_TIMEOUT_SECONDS = 60.0
# What each corruption writes, and the words the pause's audit entry must use for it.
CORRUPTIONS = ("template", "output_schema", "simulation", "model_off")
CAUSES = {
    "template": "cannot be parsed",
    "output_schema": "output schema",
    "simulation": "Simulation settings",
    "model_off": "switched off",
}


def _targets(pipeline) -> dict:
    """The rows a corruption touches: the step, its production prompt version, its model."""
    from pipelines.models import PromptLabel

    step = pipeline.steps.get()
    model = step.route.get().model
    version = PromptLabel.objects.get(step=step, name=PromptLabel.Name.PRODUCTION).version
    return {"step": step, "version": version, "model": model, "provider": model.provider}


def corrupt(pipeline, corruption: str) -> Callable[[], None]:
    """Overwrite one configuration value in the database (no service, no validation, no
    audit); returns how to put it right."""
    from pipelines.models import AiModel, PromptVersion, Provider, Step

    t = _targets(pipeline)
    if corruption == "template":
        rows, field = PromptVersion.objects.filter(pk=t["version"].pk), "template"
        good = t["version"].template
        bad = good.replace("}}", "", 1) + " {% if"  # an unclosed tag: it no longer parses
    elif corruption == "output_schema":
        rows, field = Step.objects.filter(pk=t["step"].pk), "output_schema"
        good, bad = t["step"].output_schema, {"type": "object", "properties": {"label": 5}}
    elif corruption == "simulation":
        rows, field = Provider.objects.filter(pk=t["provider"].pk), "simulation"
        good, bad = t["provider"].simulation, {**t["provider"].simulation, "latency_ms": "fast"}
    elif corruption == "model_off":
        rows, field, good, bad = AiModel.objects.filter(pk=t["model"].pk), "is_active", True, False
    else:
        raise ValueError(f"unknown corruption {corruption!r}; one of {', '.join(CORRUPTIONS)}")
    rows.update(**{field: bad})
    return lambda: rows.update(**{field: good})


def _submit(pipeline, first: int, last: int) -> None:
    from pipelines.services.ingest import items_submit

    for start in range(first, last, 1000):
        entries = [
            {"data": {"text": f"ticket {n}: my invoice is wrong"}, "external_id": f"c{n}"}
            for n in range(start, min(last, start + 1000))
        ]
        items_submit(pipeline=pipeline, entries=entries, actor="chaos")


def scenario(
    *,
    pipeline,
    items: int,
    corruption: str,
    outage_seconds: float,
    recover_timeout: float,
    work: Callable[[], None],
) -> dict:
    """Run the corruption against `pipeline` (one step on the simulated provider, with a
    webhook); `work()` is called in a loop: it runs engine batches and deliveries in-process,
    or just waits while a real worker cluster runs them."""
    from bench.chaos.provider_outage import statuses
    from controlplane.models import AuditEntry
    from controlplane.monitoring.alert_services import alert_rules_ensure
    from controlplane.monitoring.models import Alert
    from pipelines.models import Item, Pipeline
    from pipelines.services.configuration import pipeline_update

    alert_rules_ensure()
    alerts = Alert.objects.filter(rule__kind="pipeline_paused", pipeline=pipeline)
    delivered = Item.objects.filter(pipeline=pipeline, status=Item.Status.DELIVERED)
    lost_kinds = (Item.Status.DEAD_LETTERED, Item.Status.QUARANTINED, Item.Status.REJECTED)

    first_half = max(1, items // 2)
    _submit(pipeline, 0, first_half)
    started_at = time.monotonic()
    while time.monotonic() - started_at < FLOWING_TIMEOUT_SECONDS and not delivered.exists():
        work()
    delivered_before = delivered.count()

    fix = corrupt(pipeline, corruption)
    corrupted_at = time.monotonic()
    _submit(pipeline, first_half, items)
    detected_after = None
    while time.monotonic() - corrupted_at < outage_seconds:
        work()
        if detected_after is None:
            pipeline.refresh_from_db()
            if pipeline.status == Pipeline.Status.PAUSED:
                detected_after = time.monotonic() - corrupted_at
    pipeline.refresh_from_db()
    during = statuses(pipeline)
    delivered_during = delivered.count()
    pause = AuditEntry.objects.filter(action="pipeline.pause", actor_label="engine").first()
    reason = (pause.after or {}).get("reason", "") if pause else ""
    alert_fired = alerts.filter(resolved_at__isnull=True).exists()
    alert_summary = alerts.values_list("summary", flat=True).first()

    fix()
    pipeline_update(
        pipeline=pipeline, actor=None, actor_label="chaos operator", status=Pipeline.Status.ACTIVE
    )
    resumed_at = time.monotonic()
    while time.monotonic() - resumed_at < recover_timeout and delivered.count() < items:
        work()
    recovery_seconds = time.monotonic() - resumed_at
    after = statuses(pipeline)
    checks = {
        "flowing_before_corruption": delivered_before > 0,
        "detected_and_paused": detected_after is not None
        and during.get("queued", 0) > 0
        and CAUSES[corruption] in reason,
        "alert_fired": alert_fired,
        "nothing_lost_while_broken": sum(during.values()) == items
        and not any(during.get(kind, 0) for kind in lost_kinds),
        "all_delivered_after_resume": after == {Item.Status.DELIVERED: items},
        "alert_resolved_on_resume": alerts.exists()
        and not alerts.filter(resolved_at__isnull=True).exists(),
    }
    return {
        "items": items,
        "corruption": corruption,
        "broken_for_seconds": outage_seconds,
        "delivered_before_corruption": delivered_before,
        "seconds_from_corruption_to_pause": round(detected_after, 2) if detected_after else None,
        "pause_reason": reason,
        "alert": alert_summary,
        "statuses_while_broken": during,
        "delivered_while_broken": delivered_during - delivered_before,
        "statuses_at_end": after,
        "seconds_from_resume_to_all_delivered": round(recovery_seconds, 1),
        "checks": checks,
        "verdict": "PASS" if all(checks.values()) else "FAIL",
    }


def bad_config_pipeline(*, webhook_url: str):
    from bench.scenario import _pipeline as bench_pipeline

    return bench_pipeline(name="bad-config", latency_ms=5, webhook_url=webhook_url)


def inner(args: argparse.Namespace) -> None:
    """In a process whose environment points at the private database: the real cluster."""
    cluster_inner(
        args,
        make_pipeline=bad_config_pipeline,
        run=lambda pipeline: scenario(
            pipeline=pipeline,
            items=args.items,
            corruption=args.corruption,
            outage_seconds=args.outage_seconds,
            recover_timeout=args.recover_timeout,
            work=lambda: time.sleep(0.5),
        ),
    )


def main() -> None:
    scenario_main(
        module="bench.chaos.bad_config",
        doc=__doc__,
        inner=inner,
        items=300,
        outage_seconds=30,
        recover_timeout=300,
        extra=lambda parser: parser.add_argument(
            "--corruption", choices=CORRUPTIONS, default="template"
        ),
    )


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    main()
