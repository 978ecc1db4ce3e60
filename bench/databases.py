"""What every benchmark on PostgreSQL does first: a database of its own next to the configured
one (so a benchmark never touches a running Sluice's data), and Django pointed at it."""

from __future__ import annotations

import os
import sys
import warnings
from urllib.parse import urlsplit, urlunsplit

from bench.report import ROOT


def database_create(url: str, *, suffix: str) -> str:
    """A fresh, empty database named after the one in `url` plus `suffix`; its URL."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/") + suffix
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_drop(url: str, bench_url: str) -> None:
    """Drop the benchmark's database (`bench_url`), connecting through the one in `url`."""
    import psycopg
    from django.db import connections

    connections.close_all()
    name = urlsplit(bench_url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def django_setup(database_url: str, data_dir: str, **env: str) -> None:
    """Point this process (and the processes it starts) at the benchmark database with DEBUG
    off, and migrate it."""
    os.environ.update(
        DATABASE_URL=database_url,
        SLUICE_DATA_DIR=data_dir,
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        DEBUG="0",
        **env,
    )
    os.environ.pop("REDIS_URL", None)
    # No collectstatic: benchmarks time pages and queries, not static files.
    warnings.filterwarnings("ignore", message="No directory at")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    call_command("createcachetable", verbosity=0)
