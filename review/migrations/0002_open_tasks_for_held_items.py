from datetime import timedelta

from django.db import migrations

from review.reasons import reason_code_of

NO_OUTPUT = ("processing_error", "content_policy")


def open_tasks_for_held_items(apps, schema_editor):
    """Items held before review tasks existed get their task, due from when they were held."""
    Item = apps.get_model("pipelines", "Item")
    Step = apps.get_model("pipelines", "Step")
    ReviewQueue = apps.get_model("review", "ReviewQueue")
    ReviewTask = apps.get_model("review", "ReviewTask")
    steps = {(s.pipeline_id, s.position): s for s in Step.objects.select_related("pipeline")}
    queues = {}
    batch = []
    held = Item.objects.filter(status="in_review").select_related("pipeline")
    for item in held.iterator(chunk_size=1000):
        step = steps.get((item.pipeline_id, item.step_position))
        if step is None:
            continue
        if step.pk not in queues:
            queues[step.pk], _ = ReviewQueue.objects.get_or_create(
                step=step,
                defaults={
                    "pipeline_id": step.pipeline_id,
                    "name": f"{step.pipeline.name} · {step.name}"[:200],
                },
            )
        code = reason_code_of(item.hold_reason)
        answer = {} if code in NO_OUTPUT else (item.outputs.get(step.slug) or {})
        batch.append(
            ReviewTask(
                item=item,
                step=step,
                queue=queues[step.pk],
                kind="review",
                status="open",
                reason=item.hold_reason,
                reason_code=code,
                priority=min(item.priority, 9),
                opened_at=item.updated_at,
                due_at=item.updated_at + timedelta(seconds=item.pipeline.review_sla_seconds),
                model_output=answer.get("output"),
                confidence=answer.get("confidence"),
            )
        )
        if len(batch) >= 1000:
            ReviewTask.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    ReviewTask.objects.bulk_create(batch, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [
        ("review", "0001_review_tasks"),
        ("pipelines", "0015_review_sla_and_audit_rate"),
    ]

    operations = [
        migrations.RunPython(open_tasks_for_held_items, migrations.RunPython.noop),
    ]
