"""Offline evaluation: run one prompt version (and the step's route, or another model) over the
step's labeled examples or a sample of recently reviewed items, in the background in batches
with progress on the row; kept, reopened and compared case by case."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane.services import audit_record
from pipelines.histogram import bucket_counts, percentile
from pipelines.models import AiModel, Evaluation, Item, LedgerEvent, PromptVersion, Step
from pipelines.services.trial import step_try

logger = logging.getLogger(__name__)

BATCH = 25
MAX_SAMPLE = 2000
# Inputs are kept on the row to show differences; long texts are cut.
KEPT_INPUT_CHARS = 500


@transaction.atomic
def evaluation_create(
    *,
    step: Step,
    version: PromptVersion,
    source: str = Evaluation.Source.EXAMPLES,
    sample_size: Any = 100,
    model: AiModel | None = None,
    actor: AbstractBaseUser | None,
    enqueue: bool = True,
) -> Evaluation:
    """Record an evaluation to run and, after commit, wake a worker for it. ValidationError
    with the field when the version is another step's, the source unknown or the sample size
    out of range, or when there is nothing to evaluate on."""
    if version.step_id != step.pk:
        raise ValidationError({"version": "That version belongs to another step."})
    if source not in Evaluation.Source.values:
        raise ValidationError({"source": "Choose labeled examples or reviewed items."})
    try:
        size = int(str(sample_size))
    except ValueError:
        raise ValidationError({"sample_size": "Enter a whole number."}) from None
    if not 1 <= size <= MAX_SAMPLE:
        raise ValidationError({"sample_size": f"Enter a whole number from 1 to {MAX_SAMPLE}."})
    if model is not None and not model.is_active:
        raise ValidationError({"model": "That model is not active."})
    cases = _cases(step=step, source=source, limit=size)
    if not cases:
        what = "labeled examples" if source == Evaluation.Source.EXAMPLES else "reviewed items"
        raise ValidationError({"source": f"This step has no {what} to evaluate on."})
    evaluation = Evaluation.objects.create(
        step=step,
        version=version,
        model=model,
        source=source,
        sample_size=size,
        total=len(cases),
        created_by=actor,
    )
    audit_record(
        actor=actor,
        action="evaluation.create",
        obj=evaluation,
        client=step.pipeline.client,
        after={
            "version": version.number,
            "source": source,
            "sample_size": size,
            "model": str(model) if model else None,
        },
    )
    if enqueue:
        from django_q.tasks import async_task

        pk = evaluation.pk
        transaction.on_commit(
            lambda: async_task(
                "pipelines.tasks.evaluation_run_task", pk, task_name=f"evaluation-{pk}"
            )
        )
    return evaluation


@dataclass(frozen=True)
class Case:
    key: str
    data: dict[str, Any]
    expected: Any
    priority: int | None = None


def _cases(*, step: Step, source: str, limit: int) -> list[Case]:
    """What to run on: the newest labeled examples, or the newest items a person approved or
    edited at this step (their decided output is what is expected)."""
    if source == Evaluation.Source.EXAMPLES:
        return [
            Case(key=f"example:{pk}", data=data, expected=expected)
            for pk, data, expected in step.examples.order_by("-id").values_list(
                "id", "data", "expected"
            )[:limit]
        ]
    decided = (
        LedgerEvent.objects.filter(
            item__pipeline_id=step.pipeline_id,
            from_status=Item.Status.IN_REVIEW,
            detail__step=step.slug,
            detail__decision__in=["approve", "edit"],
        )
        .order_by("-id")
        .values_list("item_id", flat=True)[: limit * 2]
    )
    ids = list(dict.fromkeys(decided))[:limit]
    items = Item.objects.filter(pk__in=ids).only("id", "data", "outputs", "priority")
    cases = []
    for item in sorted(items, key=lambda i: -i.pk):
        entry = item.outputs.get(step.slug) or {}
        if "output" in entry:
            cases.append(
                Case(
                    key=f"item:{item.pk}",
                    data=item.data,
                    expected=entry["output"],
                    priority=item.priority,
                )
            )
    return cases


def _correct(expected: Any, output: Any) -> bool:
    """A classify answer is right when its label is; any other answer when it is the same."""
    if isinstance(expected, dict) and isinstance(output, dict) and "label" in expected:
        return str(output.get("label")) == str(expected["label"])
    return expected == output


def _short(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: (v[:KEPT_INPUT_CHARS] if isinstance(v, str) else v) for k, v in data.items()}
    return data


def evaluation_run(*, evaluation_id: int) -> Evaluation | None:
    """Run a pending evaluation batch by batch, writing its progress and running totals after
    each batch. Safe to run twice: only the call that moves the row from pending to running
    works; None for the other."""
    claimed = Evaluation.objects.filter(pk=evaluation_id, status=Evaluation.Status.PENDING).update(
        status=Evaluation.Status.RUNNING, progress_at=timezone.now()
    )
    if not claimed:
        return None
    evaluation = Evaluation.objects.select_related(
        "step__pipeline", "version", "model__provider"
    ).get(pk=evaluation_id)
    step, version = evaluation.step, evaluation.version
    # The task queue kills a task that runs past its timeout, which would leave the row
    # running for ever; stopping first, and saying where, leaves it failed with the truth.
    deadline = time.monotonic() + 0.8 * settings.Q_CLUSTER.get("timeout", 300)
    try:
        cases = _cases(step=step, source=evaluation.source, limit=evaluation.sample_size)
        evaluation.total = len(cases)
        results: list[dict[str, Any]] = []
        latencies: list[float] = []
        for start in range(0, len(cases), BATCH):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"out of time after {start} of {len(cases)} items: evaluate a smaller sample"
                )
            for case in cases[start : start + BATCH]:
                trial = step_try(
                    step=step,
                    template=version.template,
                    parameters=version.parameters,
                    data=case.data,
                    priority=case.priority,
                    model=evaluation.model,
                )
                row = {
                    "key": case.key,
                    "input": _short(case.data),
                    "expected": case.expected,
                    "output": trial.output,
                    "confidence": trial.confidence,
                    "correct": trial.error == "" and _correct(case.expected, trial.output),
                    "passed": bool(trial.verdict and trial.verdict.accepted),
                    "cost": str(trial.cost or Decimal("0")),
                    "latency_ms": trial.latency_ms,
                    "error": trial.error,
                }
                results.append(row)
                if trial.latency_ms is not None:
                    latencies.append(trial.latency_ms / 1000)
            _progress(evaluation, results, latencies)
        evaluation.status = Evaluation.Status.DONE
    except Exception as exc:  # the row must say why it stopped rather than stay running
        logger.exception("evaluation %s failed", evaluation_id)
        evaluation.status = Evaluation.Status.FAILED
        evaluation.error = f"{type(exc).__name__}: {exc}"[:1000]
    evaluation.finished_at = timezone.now()
    evaluation.save(update_fields=["status", "error", "finished_at", "total"])
    return evaluation


def _progress(evaluation: Evaluation, results: list[dict], latencies: list[float]) -> None:
    buckets = bucket_counts(latencies)
    evaluation.results = results
    evaluation.done = len(results)
    evaluation.correct = sum(1 for r in results if r["correct"])
    evaluation.passed = sum(1 for r in results if r["passed"])
    evaluation.errors = sum(1 for r in results if r["error"])
    evaluation.cost = sum((Decimal(r["cost"]) for r in results), Decimal("0"))
    evaluation.latency = {
        "p50": percentile(buckets, 50),
        "p95": percentile(buckets, 95),
        "buckets": {str(k): v for k, v in buckets.items()},
    }
    evaluation.progress_at = timezone.now()
    evaluation.save(
        update_fields=[
            "results",
            "done",
            "correct",
            "passed",
            "errors",
            "cost",
            "latency",
            "progress_at",
            "total",
        ]
    )


@dataclass(frozen=True)
class CaseDifference:
    key: str
    input: Any
    expected: Any
    left: dict[str, Any] | None
    right: dict[str, Any] | None

    @property
    def change(self) -> str:
        if self.left is None or self.right is None:
            return "only in one"
        if self.left["correct"] != self.right["correct"]:
            return "fixed" if self.right["correct"] else "broken"
        if self.left["passed"] != self.right["passed"]:
            return "now passes the gate" if self.right["passed"] else "now held by the gate"
        return "different answer"


def evaluations_compare(*, left: Evaluation, right: Evaluation) -> list[CaseDifference]:
    """The cases where two evaluations of a step differ (answer, correctness, gate), in the
    order of the first; ValidationError when they are of different steps."""
    if left.step_id != right.step_id:
        raise ValidationError({"right": "Compare two evaluations of the same step."})
    theirs = {r["key"]: r for r in right.results}
    differences = []
    seen = set()
    for mine in left.results:
        other = theirs.get(mine["key"])
        seen.add(mine["key"])
        if other is not None and (
            other["output"] == mine["output"]
            and other["correct"] == mine["correct"]
            and other["passed"] == mine["passed"]
            and other["error"] == mine["error"]
        ):
            continue
        differences.append(
            CaseDifference(mine["key"], mine["input"], mine["expected"], mine, other)
        )
    for other in right.results:
        if other["key"] not in seen:
            differences.append(
                CaseDifference(other["key"], other["input"], other["expected"], None, other)
            )
    return differences


def evaluation_summary(evaluation: Evaluation) -> dict[str, Any]:
    """Accuracy, share passing the gate, errors, cost and latency of a (partial) evaluation."""
    done = evaluation.done or 0

    def share(n: int) -> float | None:
        return n / done if done else None

    return {
        "accuracy": share(evaluation.correct),
        "pass_rate": share(evaluation.passed),
        "error_rate": share(evaluation.errors),
        "cost": evaluation.cost,
        "cost_per_item": (evaluation.cost / done) if done else None,
        "p50": (evaluation.latency or {}).get("p50"),
        "p95": (evaluation.latency or {}).get("p95"),
    }
