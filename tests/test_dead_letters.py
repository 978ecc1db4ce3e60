"""Dead letters: listed with their reason, filtered, each ledger on demand, tried without
writing, re-driven on purpose (the selected or all matching, optionally against another prompt
version)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.models import AuditEntry
from pipelines.models import Item, LedgerEvent, Provider
from pipelines.services import configuration as config
from pipelines.services.engine import MAX_ATTEMPTS, engine_run_batch
from pipelines.views import dead_letters as page
from tests.conftest import login
from tests.test_engine import simulated_route, submit

URL = "/dead-letters/"


def dead_letter(step, operator, n=2):
    model = simulated_route(step, operator, failure_rates={"transient": 1.0})
    # Every call fails: a breaker would stop calling and keep the items waiting instead.
    Provider.objects.filter(pk=model.provider_id).update(breaker_failure_threshold=10_000)
    items = submit(step.pipeline, *[f"text {i}" for i in range(n)])
    for _ in range(MAX_ATTEMPTS):
        engine_run_batch(worker="w")
        Item.objects.filter(status="waiting_retry").update(next_attempt_at=timezone.now())
    assert set(Item.objects.values_list("status", flat=True)) == {"dead_lettered"}
    return items


def healthy(step, operator):
    """Route the step to a provider that answers, and accept whatever it says."""
    simulated_route(step, operator)
    config.step_update(step=step, actor=operator, confidence_threshold="0")


def second_step(pipeline, operator):
    return config.step_create(
        pipeline=pipeline,
        name="Urgency",
        slug="urgency",
        kind="classify",
        labels=["low", "high"],
        template="How urgent: {{ text }}",
        actor=operator,
    )


def listed(response) -> list[int]:
    return [item.pk for item in response.context["items"]]


def unchanged() -> tuple:
    return (
        list(Item.objects.order_by("id").values_list("status", "attempts", "prompt_pins")),
        LedgerEvent.objects.count(),
        AuditEntry.objects.filter(action="items.redrive").count(),
    )


def test_dead_letters_are_listed_with_their_error(operator, acme_step):
    items = dead_letter(acme_step, operator)
    html = login(operator).get(reverse("dead-letter-list")).content.decode()
    for item in items:
        assert f"#{item.pk}<" in html
    assert "transient" in html
    assert "1 · topic" in html


def test_dead_letters_filter_by_pipeline_step_error_class_and_time(
    operator, acme_step, globex_pipeline
):
    old, new = dead_letter(acme_step, operator)
    Item.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=3))
    http = login(operator)

    def ids(**query):
        response = http.get(URL, query)
        assert response.status_code == 200, response.content
        return listed(response)

    assert ids() == [new.pk, old.pk]
    assert ids(pipeline=acme_step.pipeline.pk) == [new.pk, old.pk]
    assert ids(pipeline=globex_pipeline.pk) == []
    assert ids(client="acme") == [new.pk, old.pk]
    assert ids(client="globex") == []
    assert ids(step="1") == ids(step="topic") == [new.pk, old.pk]
    assert ids(step="2") == []
    assert ids(error_class="transient") == [new.pk, old.pk]
    assert ids(error_class="system") == []
    yesterday = (timezone.localtime() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert ids(since=yesterday) == [new.pk]
    assert ids(until=yesterday) == [old.pk]
    assert ids(status="rejected") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "last tuesday"}, "since"),
        ({"since": "2030-01-02T00:00", "until": "2030-01-01T00:00"}, "until"),
        ({"step": "no-such-step"}, "step"),
        ({"step": "not a slug!"}, "step"),
        ({"step": "99999999999999999999"}, "step"),
        ({"pipeline": "abc"}, "pipeline"),
        ({"client": "nobody"}, "client"),
        ({"error_class": "cosmic"}, "error_class"),
    ],
)
def test_a_bad_filter_is_a_422_naming_the_field(operator, acme_step, query, field):
    dead_letter(acme_step, operator, n=1)
    response = login(operator).get(URL, query)
    assert response.status_code == 422
    assert field in response.context["form"].errors
    assert listed(response) == []
    assert "Fix the filter above." in response.content.decode()


def test_the_list_pages_by_keyset_and_keeps_the_filter(operator, acme_step, monkeypatch):
    monkeypatch.setattr(page, "PAGE", 2)
    items = dead_letter(acme_step, operator, n=3)
    http = login(operator)
    first = http.get(URL, {"step": "topic"})
    assert listed(first) == [items[2].pk, items[1].pk]
    query = first.context["next_query"]
    assert "step=topic" in query and f"before={items[1].pk}" in query
    assert f'href="?{query.replace("&", "&amp;")}"' in first.content.decode()
    second = http.get(f"{URL}?{query}")
    assert listed(second) == [items[0].pk]
    assert second.context["next_query"] is None


def test_an_items_ledger_opens_in_its_row(operator, acme_step):
    [item] = dead_letter(acme_step, operator, n=1)
    http = login(operator)
    html = http.get(URL).content.decode()
    assert f'hx-get="/dead-letters/?ledger={item.pk}"' in html
    assert f'href="/items/{item.pk}/"' in html  # without JavaScript: the item page
    response = http.get(URL, {"ledger": item.pk}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    fragment = response.content.decode()
    assert fragment.lstrip().startswith(f'<tr id="ledger-{item.pk}"')
    assert "running → dead_lettered" in fragment
    assert fragment.count("<li>") == 1 + 2 * MAX_ATTEMPTS


def test_a_dry_run_shows_what_would_happen_and_writes_nothing(operator, acme_step):
    [item, _] = dead_letter(acme_step, operator)
    healthy(acme_step, operator)
    before = unchanged()
    response = login(operator).post(URL, {"ids": [item.pk], "action": "dry-run"})
    assert response.status_code == 200
    assert "would be accepted" in response.content.decode()
    assert "with the production prompt" in response.content.decode()
    assert unchanged() == before


def test_a_dry_run_and_re_drive_against_another_prompt_version(operator, acme_step):
    items = dead_letter(acme_step, operator)
    healthy(acme_step, operator)
    config.prompt_version_create(
        step=acme_step, template="Topic: {{ text }}", change_note="terse", actor=operator
    )
    http = login(operator)
    html = http.get(URL).content.decode()
    assert 'data-testid="prompt-version"' in html and "v2: terse" in html
    ids = [i.pk for i in items]
    before = unchanged()
    dry = http.post(URL, {"ids": ids, "action": "dry-run", "prompt_version": "2"})
    assert dry.status_code == 200
    assert "against prompt version 2" in dry.content.decode()
    assert {run.prompt_version for run in dry.context["dry_run"]} == {2}
    assert unchanged() == before
    response = http.post(URL, {"ids": ids, "action": "redrive", "prompt_version": "2"})
    assert response.status_code == 302
    assert AuditEntry.objects.get(action="items.redrive").after["prompt_version"] == 2
    engine_run_batch(worker="w")
    for item in items:
        item.refresh_from_db()
        assert item.prompt_pins == {"topic": 2}
        assert (item.status, item.outputs["topic"]["prompt_version"]) == ("accepted", 2)


def test_a_re_drive_without_a_version_drops_an_earlier_pin(operator, acme_step):
    [item] = dead_letter(acme_step, operator, n=1)
    Item.objects.filter(pk=item.pk).update(prompt_pins={"topic": 1, "later": 3})
    login(operator).post(URL, {"ids": [item.pk], "action": "redrive"})
    item.refresh_from_db()
    assert item.status == "queued" and item.prompt_pins == {"later": 3}


def test_re_drive_queues_them_with_fresh_attempts_and_an_audit_entry(operator, acme_step):
    items = dead_letter(acme_step, operator)
    healthy(acme_step, operator)
    response = login(operator).post(
        reverse("dead-letter-list"), {"ids": [i.pk for i in items], "action": "redrive"}
    )
    assert response.status_code == 302
    for item in items:
        item.refresh_from_db()
        assert (item.status, item.attempts, item.error_class) == ("queued", 0, "")
        assert item.ledger.order_by("id").last().actor == f"user:{operator.username}"
    entry = AuditEntry.objects.get(action="items.redrive")
    assert entry.after["items"] == 2 and entry.actor == operator
    engine_run_batch(worker="w")
    assert set(Item.objects.values_list("status", flat=True)) == {"accepted"}


def test_all_matching_the_filter_are_re_driven_in_bounded_goes(operator, acme_step, monkeypatch):
    monkeypatch.setattr(page, "REDRIVE_LIMIT", 2)
    items = dead_letter(acme_step, operator, n=3)
    http = login(operator)
    html = http.get(URL, {"step": "topic"}).content.decode()
    assert "2+ items matching the filter" in html and "At most 2 are re-driven per click" in html
    response = http.post(URL, {"all": "1", "action": "redrive", "step": "topic"}, follow=True)
    assert "2 items queued again. More items match the filter" in response.content.decode()
    assert response.redirect_chain[-1][0] == f"{URL}?step=topic"
    statuses = dict(Item.objects.values_list("id", "status"))
    assert [statuses[i.pk] for i in items] == ["queued", "queued", "dead_lettered"]
    http.post(URL, {"all": "1", "action": "redrive", "step": "topic"})
    assert set(Item.objects.values_list("status", flat=True)) == {"queued"}


def test_all_matching_respects_the_filter(operator, acme_step):
    old, new = dead_letter(acme_step, operator)
    Item.objects.filter(pk=old.pk).update(error_class="system")
    login(operator).post(URL, {"all": "1", "action": "redrive", "error_class": "transient"})
    assert dict(Item.objects.values_list("id", "status")) == {
        old.pk: "dead_lettered",
        new.pk: "queued",
    }


def test_items_at_different_steps_refuse_a_prompt_version_with_a_422(operator, acme_step):
    items = dead_letter(acme_step, operator)
    second_step(acme_step.pipeline, operator)
    Item.objects.filter(pk=items[1].pk).update(step_position=2)
    before = unchanged()
    http = login(operator)
    html = http.get(URL).content.decode()
    assert "stopped at different steps" in html  # no version select offered
    for action in ("dry-run", "redrive"):
        response = http.post(
            URL, {"ids": [i.pk for i in items], "action": action, "prompt_version": "1"}
        )
        assert response.status_code == 422
        assert "different steps" in response.context["errors"]["prompt_version"]
    assert unchanged() == before


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"action": "redrive", "prompt_version": "9"}, "prompt_version"),
        ({"action": "dry-run", "prompt_version": "9"}, "prompt_version"),
        ({"action": "redrive", "prompt_version": "two"}, "prompt_version"),
        ({"action": "redrive", "since": "soon"}, "filter"),
    ],
)
def test_bad_actions_come_back_as_422_with_the_field(operator, acme_step, form, field):
    [item] = dead_letter(acme_step, operator, n=1)
    before = unchanged()
    response = login(operator).post(URL, {"ids": [item.pk], **form})
    assert response.status_code == 422
    assert field in response.context["errors"]
    assert 'data-testid="dead-letter-errors"' in response.content.decode()
    assert unchanged() == before


def test_only_dead_letters_and_rejections_can_be_re_driven(operator, acme_step, acme_item):
    response = login(operator).post(
        reverse("dead-letter-list"), {"ids": [acme_item.pk], "action": "redrive"}
    )
    assert response.status_code == 422
    assert "Select at least one item" in response.context["errors"]["ids"]
    acme_item.refresh_from_db()
    assert acme_item.status == "queued"
    assert not AuditEntry.objects.filter(action="items.redrive").exists()


def test_rejected_items_are_listed_and_re_driven_apart(operator, acme_step):
    [dead, rejected] = dead_letter(acme_step, operator)
    Item.objects.filter(pk=rejected.pk).update(status="rejected", error_class="")
    http = login(operator)
    assert listed(http.get(URL, {"status": "rejected"})) == [rejected.pk]
    http.post(URL, {"all": "1", "action": "redrive", "status": "rejected"})
    assert dict(Item.objects.values_list("id", "status")) == {
        dead.pk: "dead_lettered",
        rejected.pk: "queued",
    }


def test_the_page_is_for_operators_only(client_a, reviewer, acme_step, operator):
    [item] = dead_letter(acme_step, operator, n=1)
    for user in (client_a, reviewer):
        http = login(user)
        assert http.get(URL, {"ledger": item.pk}).status_code == 403
        assert http.post(URL, {"ids": [item.pk], "action": "redrive"}).status_code == 403
    item.refresh_from_db()
    assert item.status == "dead_lettered"
