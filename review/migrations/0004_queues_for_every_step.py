from __future__ import annotations

from django.db import migrations


def open_queues(apps, schema_editor):
    """Every step has a review queue from its creation on; steps created before that get
    theirs here, named as review names them."""
    Step = apps.get_model("pipelines", "Step")
    ReviewQueue = apps.get_model("review", "ReviewQueue")
    missing = Step.objects.exclude(review_queues__isnull=False).select_related("pipeline")
    ReviewQueue.objects.bulk_create(
        [
            ReviewQueue(
                pipeline_id=step.pipeline_id,
                step=step,
                name=f"{step.pipeline.name} · {step.name}"[:200],
            )
            for step in missing.iterator(chunk_size=1000)
        ],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("review", "0003_second_opinions"),
        ("pipelines", "0018_latency_rollups"),
    ]

    operations = [migrations.RunPython(open_queues, migrations.RunPython.noop)]
