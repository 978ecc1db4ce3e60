from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from pipelines.models import Step
from pipelines.services.examples import example_import_run, example_import_start


class Command(BaseCommand):
    help = "Import labeled examples for a step from a CSV or JSONL file."

    def add_arguments(self, parser):
        parser.add_argument("pipeline", help="CLIENT/PIPELINE, e.g. acme/support-triage")
        parser.add_argument("step", help="the step's slug")
        parser.add_argument("file", type=Path)
        parser.add_argument("--actor", help="username recorded in the audit log")

    def handle(self, *args, pipeline: str, step: str, file: Path, actor: str | None, **options):
        client_slug, _, pipeline_slug = pipeline.partition("/")
        target = (
            Step.objects.select_related("pipeline__client")
            .filter(pipeline__client__slug=client_slug, pipeline__slug=pipeline_slug, slug=step)
            .first()
        )
        if target is None:
            raise CommandError(f'no step "{step}" in {pipeline}')
        user = None
        if actor:
            user = get_user_model().objects.filter(username=actor).first()
            if user is None:
                raise CommandError(f'no user "{actor}"')
        try:
            content = file.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        try:
            job = example_import_start(
                step=target, filename=file.name, content=content, actor=user, enqueue=False
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        job = example_import_run(import_id=job.pk)
        for row in job.rejected_rows:
            self.stdout.write(f"line {row['line']}: {row['reason']}")
        if job.status == job.Status.FAILED:
            raise CommandError(job.error)
        self.stdout.write(f"{job.filename}: {job.accepted} accepted, {job.rejected} rejected.")
