"""django-q2 entry points of the pipelines layer: thin, take ids, call one service."""

from __future__ import annotations

from pipelines.services.examples import example_import_run
from pipelines.services.uploads import item_upload_run


def example_import_task(import_id: int) -> str:
    job = example_import_run(import_id=import_id)
    if job is None:
        return "already taken"
    return f"{job.status}: {job.accepted} accepted, {job.rejected} rejected"


def item_upload_task(upload_id: int) -> str:
    upload = item_upload_run(upload_id=upload_id)
    if upload is None:
        return "already taken"
    return (
        f"{upload.status}: {upload.accepted} queued, {upload.deduplicated} duplicates, "
        f"{upload.quarantined} quarantined, {upload.rejected} rejected"
    )


def engine_drain_task() -> str:
    """Wake-up: run batches until the queue is empty or 30 s have passed."""
    import os
    import socket

    from pipelines.services.engine import engine_drain

    totals = engine_drain(worker=f"worker:{socket.gethostname()}:{os.getpid()}")
    return ", ".join(f"{n} {status}" for status, n in sorted(totals.items())) or "nothing to do"


def items_sweep_task() -> str:
    """Work whose worker died: items whose lease expired, and file imports that stopped."""
    from pipelines.models import ExampleImport, ItemUpload
    from pipelines.services.engine import items_sweep
    from pipelines.services.file_imports import file_imports_sweep

    items = items_sweep()
    files = file_imports_sweep(models=(ExampleImport, ItemUpload))
    return f"{items} items returned, {files} stopped imports ended"


def deliveries_send_task() -> str:
    """Send due deliveries until none are left or 30 s have passed."""
    import time

    from pipelines.services.delivery import DELIVERY_WAKE_KEY, deliveries_send
    from pipelines.wake import wake_window_wait

    deadline, totals = time.monotonic() + 30, {"delivered": 0, "held": 0}
    looked_again = False
    while time.monotonic() < deadline:
        counts = deliveries_send()
        if not any(counts.values()):
            # As engine_drain: deliveries whose wake-up was folded into ours get one more look.
            if looked_again or not wake_window_wait(DELIVERY_WAKE_KEY):
                break
            looked_again = True
            continue
        for key, n in counts.items():
            totals[key] += n
    return f"{totals['delivered']} delivered, {totals['held']} held"


def local_models_refresh_task() -> str:
    from pipelines.services.local_model import local_models_refresh

    return f"{local_models_refresh()} local models trained"


def rollouts_evaluate_task() -> str:
    """Judge running rollouts on their guards: roll back, step up or promote."""
    from pipelines.services.rollouts import rollouts_evaluate

    counts = rollouts_evaluate()
    return ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "no rollout running"


def evaluation_run_task(evaluation_id: int) -> str:
    from pipelines.services.evaluation_runs import evaluation_run

    evaluation = evaluation_run(evaluation_id=evaluation_id)
    if evaluation is None:
        return "already taken"
    return f"{evaluation.status}: {evaluation.done} of {evaluation.total}"
