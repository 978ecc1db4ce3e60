"""`manage.py loadtest`: drive a pipeline through the public API at a given rate and report stage by
stage; the work is in bench/loadtest.py (`manage.py loadtest --help` lists the options)."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from controlplane.settings import BASE_DIR


class Command(BaseCommand):
    help = "Load-test a pipeline through the API (a private Sluice on loopback by default)."

    def run_from_argv(self, argv):
        # The options are bench/loadtest.py's own, so the command and `python -m bench.loadtest`
        # take exactly the same ones.
        sys.path.insert(0, str(BASE_DIR))
        from bench.loadtest import main

        main(argv[2:])

    def handle(self, *args, **options):
        from bench.loadtest import main

        main(list(args))
