from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from pipelines.configfile import pipeline_export_yaml
from pipelines.models import Pipeline


class Command(BaseCommand):
    help = "Write a pipeline's configuration as YAML, to stdout unless --output is given."

    def add_arguments(self, parser):
        parser.add_argument("pipeline", help="CLIENT/SLUG, e.g. acme/triage")
        parser.add_argument("--output", type=Path, help="file to write instead of stdout")

    def handle(self, *args, pipeline: str, output: Path | None, **options):
        client_slug, _, slug = pipeline.partition("/")
        target = Pipeline.objects.filter(client__slug=client_slug, slug=slug).first()
        if target is None:
            raise CommandError(f'no pipeline "{pipeline}"')
        text = pipeline_export_yaml(pipeline=target)
        if output is None:
            self.stdout.write(text, ending="")
            return
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc.strerror}") from None
        # On stderr, so the confirmation never mixes with YAML piped from stdout.
        self.stderr.write(f"Wrote {pipeline} to {output}.")
