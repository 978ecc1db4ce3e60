from __future__ import annotations

from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import call_command

from controlplane.demo import DEMO_PASSWORD
from controlplane.models import AuditEntry, Client
from controlplane.roles import Role, role_of
from pipelines.models import (
    AiModel,
    Item,
    LedgerEvent,
    Pipeline,
    PromptLabel,
    PromptVersion,
    Provider,
    RouteEntry,
    Step,
)


def _counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (
            Client,
            get_user_model(),
            Pipeline,
            Item,
            LedgerEvent,
            AuditEntry,
            Provider,
            AiModel,
            Step,
            PromptVersion,
            PromptLabel,
            RouteEntry,
        )
    }


def test_seed_demo_creates_the_documented_data_and_a_second_run_changes_nothing(db):
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "password sluice-demo" in out.getvalue()
    first = _counts()
    assert set(Client.objects.values_list("slug", flat=True)) == {"acme", "globex"}
    User = get_user_model()
    roles = {u.username: role_of(u) for u in User.objects.all()}
    assert roles == {
        "operator": Role.OPERATOR,
        "reviewer": Role.REVIEWER,
        "acme": Role.CLIENT,
        "globex": Role.CLIENT,
    }
    assert all(u.check_password(DEMO_PASSWORD) for u in User.objects.all())
    for slug in ("acme", "globex"):
        assert Pipeline.objects.filter(client__slug=slug).exists()
        assert Item.objects.filter(pipeline__client__slug=slug).exists()
    # Every active demo pipeline has a configured step with a production prompt and a route.
    for pipeline in Pipeline.objects.filter(status="active"):
        step = pipeline.steps.get()
        assert step.prompt_labels.filter(name="production").exists()
        assert step.route.exists()
    # Every item has its first ledger event.
    assert LedgerEvent.objects.count() == Item.objects.count()

    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "nothing changed" in out.getvalue()
    assert _counts() == first


def test_a_migrated_database_has_no_demo_data(db):
    assert not Client.objects.exists()
    assert not get_user_model().objects.exists()


def test_the_demo_pipelines_run_end_to_end_without_pausing(db):
    import random

    from controlplane.demo import demo_traffic_tick
    from pipelines.services.engine import engine_drain

    call_command("seed_demo", stdout=StringIO())
    submitted = demo_traffic_tick(rng=random.Random(5))
    assert submitted > 0
    assert not Item.objects.filter(pipeline__status="draft").exists()
    engine_drain(worker="worker:test", seconds=60)
    # Every active pipeline kept running: its configuration (prompts, routes, the local model's
    # examples) is complete.
    assert not Pipeline.objects.filter(status="paused").exists()
    statuses = set(Item.objects.values_list("status", flat=True))
    assert statuses <= {"accepted", "in_review", "waiting_retry", "dead_lettered", "rejected"}
    assert "accepted" in statuses
