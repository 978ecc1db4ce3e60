from __future__ import annotations

from django.core.management.base import BaseCommand

from controlplane.demo import DEMO_PASSWORD, USERS, demo_seed


class Command(BaseCommand):
    help = "Create the demo clients, users, pipelines and items (idempotent)."

    def handle(self, *args, **options):
        created = demo_seed()
        summary = ", ".join(f"{n} {kind}" for kind, n in created.items())
        self.stdout.write(
            f"Demo data: created {summary}."
            if any(created.values())
            else "Demo data: already present, nothing changed."
        )
        self.stdout.write(f"Demo logins (password {DEMO_PASSWORD}):")
        for username, role, clients in USERS:
            scope = f" ({', '.join(clients)})" if clients else ""
            self.stdout.write(f"  {username:<10} {role.value}{scope}")
