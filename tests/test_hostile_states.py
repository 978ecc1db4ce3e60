"""The item state machine under random sequences of everything that moves an item: ingest,
engine batches against a provider that fails in every way, workers that die holding a lease,
retries falling due, reviewers approving and rejecting, and re-drives. After every step each
item's ledger is an unbroken chain of allowed transitions that ends at the item's status."""

from __future__ import annotations

import itertools
import os
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from pipelines.models import Item, LedgerEvent
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch, items_claim, items_sweep
from pipelines.services.ingest import items_submit
from pipelines.services.redrive import items_redrive
from pipelines.services.resume import item_reject, item_resume
from tests.test_engine import simulated_route

S = Item.Status
# Every move the design allows (DESIGN.md, "The life of an item"; docs/architecture.md, the
# engine's outcomes). "" is where an item's first ledger event comes from.
ALLOWED = {
    "": {S.QUEUED, S.QUARANTINED},
    S.QUEUED: {S.RUNNING},
    S.RUNNING: {
        S.QUEUED,  # the next step, a system error, or the sweeper after a dead worker
        S.WAITING_RETRY,
        S.IN_REVIEW,
        S.ACCEPTED,
        S.DELIVERING,
        S.REJECTED,
        S.QUARANTINED,
        S.DEAD_LETTERED,
    },
    S.WAITING_RETRY: {S.RUNNING},
    S.IN_REVIEW: {S.QUEUED, S.ACCEPTED, S.DELIVERING, S.REJECTED},
    S.DELIVERING: {S.DELIVERED},
    S.DEAD_LETTERED: {S.QUEUED},
    S.REJECTED: {S.QUEUED},
    S.ACCEPTED: set(),
    S.DELIVERED: set(),
    S.QUARANTINED: set(),
}
TEXTS = st.lists(st.sampled_from(["refund", "crash", "login", "", "invoice"]), max_size=6)


class ItemLife(RuleBasedStateMachine):
    pipeline = None

    @rule(texts=TEXTS)
    def submit(self, texts):
        entries = [{"data": {"text": text}} if text else {"data": {}} for text in texts]
        items_submit(pipeline=self.pipeline, entries=entries, actor="fuzz")

    @rule()
    def run_a_batch(self):
        engine_run_batch(worker="worker:fuzz:1", limit=20)

    @rule()
    def a_worker_dies_holding_a_lease_and_the_sweeper_returns_its_items(self):
        claimed = items_claim(worker="worker:fuzz:dead", limit=5)
        Item.objects.filter(pk__in=[i.pk for i in claimed]).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        items_sweep()

    @rule()
    def retries_fall_due(self):
        Item.objects.filter(status=S.WAITING_RETRY).update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )

    @rule(approve=st.booleans())
    def a_reviewer_decides(self, approve):
        held = Item.objects.filter(pipeline=self.pipeline, status=S.IN_REVIEW).first()
        if held is None:
            return
        if approve:
            item_resume(
                item_id=held.pk, output={"label": "billing"}, actor_label="user:1", detail={}
            )
        else:
            item_reject(item_id=held.pk, reason="wrong", actor_label="user:1", detail={})

    @rule()
    def an_operator_redrives_what_failed(self):
        failed = list(Item.objects.filter(status__in=[S.DEAD_LETTERED, S.REJECTED])[:5])
        if failed:
            items_redrive(items=failed, actor=None, actor_label="operator")

    @invariant()
    def every_ledger_is_an_unbroken_chain_of_allowed_moves_ending_at_the_status(self):
        chains: dict[int, list[tuple[str, str]]] = {}
        for item_id, before, after in LedgerEvent.objects.order_by("id").values_list(
            "item_id", "from_status", "to_status"
        ):
            chains.setdefault(item_id, []).append((before, after))
        for item_id, status in Item.objects.values_list("id", "status"):
            chain = chains.get(item_id, [])
            assert chain, f"item {item_id} has no ledger"
            assert chain[0][0] == "", (item_id, chain)
            for (_, reached), (left, _) in itertools.pairwise(chain):
                assert left == reached, (item_id, chain)
            for before, after in chain:
                assert after in ALLOWED[before], (item_id, before, after, chain)
            assert chain[-1][1] == status, (item_id, status, chain)

    @invariant()
    def a_finished_item_holds_no_lease(self):
        finished = Item.objects.exclude(status=S.RUNNING).exclude(lease_owner="")
        assert not finished.exists(), list(finished.values("id", "status", "lease_owner"))


@pytest.mark.django_db
def test_random_lives_of_items_keep_an_unbroken_ledger_of_allowed_moves(operator, acme_step):
    from tests.test_api import SCHEMA

    pipeline = acme_step.pipeline
    config.pipeline_update(pipeline=pipeline, actor=operator, input_schema=SCHEMA)
    second = config.step_create(
        pipeline=pipeline,
        name="Urgency",
        slug="urgency",
        kind="classify",
        labels=["billing", "bug"],
        template="How urgent: {{ text }}",
        actor=operator,
    )
    failures = {"transient": 0.25, "processing": 0.1, "input": 0.05, "provider_limit": 0.05}
    for step in (acme_step, second):
        simulated_route(step, operator, failure_rates=failures, confidence={"alpha": 4, "beta": 1})
        config.step_update(step=step, actor=operator, confidence_threshold="0.6")
    pipeline.refresh_from_db()
    ItemLife.pipeline = pipeline
    run_state_machine_as_test(
        ItemLife,
        settings=settings(
            max_examples=int(os.environ.get("SLUICE_FUZZ_EXAMPLES", "15")),
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
