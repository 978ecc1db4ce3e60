"""django-q2 entry points of the pipelines layer: thin, take ids, call one service."""

from __future__ import annotations

from pipelines.services.examples import example_import_run


def example_import_task(import_id: int) -> str:
    job = example_import_run(import_id=import_id)
    if job is None:
        return "already taken"
    return f"{job.status}: {job.accepted} accepted, {job.rejected} rejected"


def engine_drain_task() -> str:
    """Wake-up: run batches until the queue is empty or 30 s have passed."""
    import os
    import socket

    from pipelines.services.engine import engine_drain

    totals = engine_drain(worker=f"worker:{socket.gethostname()}:{os.getpid()}")
    return ", ".join(f"{n} {status}" for status, n in sorted(totals.items())) or "nothing to do"


def items_sweep_task() -> int:
    from pipelines.services.engine import items_sweep

    return items_sweep()
