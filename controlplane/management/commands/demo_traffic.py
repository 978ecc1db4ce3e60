from __future__ import annotations

import random
import signal
import time

from django.core.management.base import BaseCommand

from controlplane.demo import demo_traffic_tick


class Command(BaseCommand):
    help = "Submit a few demo items every few seconds, so the demo shows work flowing."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=5.0, help="seconds between batches")
        parser.add_argument(
            "--max-items", type=int, default=5000, help="stop after submitting this many items"
        )

    def handle(self, *args, every: float, max_items: int, **options):
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        rng = random.Random()
        total = 0
        while not stopping and total < max_items:
            total += demo_traffic_tick(rng=rng)
            deadline = time.monotonic() + every
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)
        self.stdout.write(f"Demo traffic stopped after {total} items.")
