from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from pipelines.configfile import config_load, pipeline_import, pipeline_import_plan


class Command(BaseCommand):
    help = (
        "Create or update a pipeline from a YAML file written by export_pipeline; all or nothing, "
        "every change audited."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--actor", help="username recorded in the audit log")
        parser.add_argument(
            "--dry-run", action="store_true", help="check the file and say what would change"
        )

    def handle(self, *args, file: Path, actor: str | None, dry_run: bool, **options):
        user = None
        if actor:
            user = get_user_model().objects.filter(username=actor).first()
            if user is None:
                raise CommandError(f'no user "{actor}"')
        try:
            # utf-8-sig: editors on Windows start files with a byte order mark.
            text = file.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"cannot read {file}: not UTF-8 text") from None
        try:
            doc = config_load(text=text)
            plan = pipeline_import_plan(doc=doc)
            if dry_run:
                would = f"would {plan.describe()}" if plan.changed else plan.describe()
                self.stdout.write(f"valid: {would}; nothing was written.")
                return
            pipeline_import(doc=doc, actor=user)
        except ValidationError as exc:
            problems = exc.messages
            raise CommandError(
                f"{file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}, "
                "nothing was written:\n" + "\n".join(problems)
            ) from None
        if plan.changed:
            self.stdout.write(f"Imported: {plan.describe()}.")
        else:
            self.stdout.write(f"{plan.describe()}; nothing changed.")
