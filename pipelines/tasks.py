"""django-q2 entry points of the pipelines layer: thin, take ids, call one service."""

from __future__ import annotations

from pipelines.services.examples import example_import_run


def example_import_task(import_id: int) -> str:
    job = example_import_run(import_id=import_id)
    if job is None:
        return "already taken"
    return f"{job.status}: {job.accepted} accepted, {job.rejected} rejected"
