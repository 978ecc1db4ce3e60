from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from controlplane.models import Client
from controlplane.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a client and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("--client", required=True, help="the client's slug")
        parser.add_argument("--name", required=True, help="what the key is for")

    def handle(self, *args, client: str, name: str, **options):
        found = Client.objects.filter(slug=client).first()
        if found is None:
            raise CommandError(f'no client "{client}"')
        try:
            api_key, key = api_key_create(
                client=found, name=name, actor=None, actor_label="manage.py"
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stderr.write(f"API key {api_key.name!r} for {found.name}; it will not be shown again:")
        self.stdout.write(key)
