"""The circuit breaker: opens on consecutive failures, refuses calls while open, gives exactly one
probe once its reset time has passed, and closes on the probe's success; its state is shared by
every worker process through the cache, and operators see it and can close it by hand."""

from __future__ import annotations

import subprocess
import time

import pytest
from django.core.cache import cache
from django.urls import reverse

from controlplane.models import AuditEntry
from pipelines.models import BreakerEvent, Provider
from pipelines.services import breaker, ratelimit
from pipelines.services.breaker import (
    breaker_allowances,
    breaker_record,
    breaker_reset,
    breaker_state,
    failure_runs,
)
from pipelines.services.configuration import provider_create, provider_update
from tests.conftest import login
from tests.processes import MANAGE, ROOT, env_for_test_database

T0 = 1_800_000_000.0
F, T = False, True


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = Clock(T0)
    monkeypatch.setattr(breaker, "clock", fake)
    monkeypatch.setattr(ratelimit, "clock", fake)
    return fake


@pytest.fixture
def flaky(provider):
    """The local provider, opening after 3 failures and probing 30 s after it opened."""
    return provider_update(
        provider=provider, actor=None, breaker_failure_threshold=3, breaker_reset_seconds=30
    )


def worker(provider: Provider) -> Provider:
    """What another worker process knows: the row from the database, nothing of ours."""
    return Provider.objects.get(pk=provider.pk)


def opened(provider: Provider, clock: Clock) -> Provider:
    breaker_record({provider.pk: [F] * provider.breaker_failure_threshold})
    assert breaker_state(provider).state == "open"
    return provider


def part(html: str, testid: str, end: str = "</table>") -> str:
    """The piece of a page from the element with this data-testid to the next `end`."""
    return html.split(f'data-testid="{testid}"', 1)[1].split(end, 1)[0]


def transitions(provider: Provider) -> list[tuple[str, str]]:
    events = BreakerEvent.objects.filter(provider=provider).order_by("at", "id")
    return list(events.values_list("from_state", "to_state"))


# --- The state machine ----------------------------------------------------------------------


def test_failure_runs_splits_outcomes_at_each_success():
    assert failure_runs([F, F, T, F, T, F, F]) == (2, [1, 2])
    assert failure_runs([F, F]) == (2, None)
    assert failure_runs([T]) == (0, [0])
    assert failure_runs([T, T, F]) == (0, [0, 1])


def test_a_closed_breaker_lets_every_call_through(flaky, clock):
    assert breaker_allowances([flaky]) == {flaky.pk: None}
    view = breaker_state(flaky)
    assert (view.state, view.failures, view.opened_at, view.retry_at) == ("closed", 0, None, None)


def test_it_opens_when_consecutive_failures_reach_the_threshold(flaky, clock):
    breaker_record({flaky.pk: [F, F]})
    assert breaker_state(flaky).state == "closed"
    assert breaker_state(flaky).failures == 2
    assert breaker_allowances([flaky]) == {flaky.pk: None}

    breaker_record({flaky.pk: [F]})

    view = breaker_state(flaky)
    assert view.state == "open"
    assert view.failures == 3
    assert view.opened_at.timestamp() == T0
    assert view.retry_at.timestamp() == T0 + 30
    event = BreakerEvent.objects.get(provider=flaky)
    assert (event.from_state, event.to_state, event.failures) == ("closed", "open", 3)
    assert event.reason == "3 consecutive failures (threshold 3); probing again after 30 s"


def test_a_success_starts_the_count_again(flaky, clock):
    breaker_record({flaky.pk: [F, F, T]})
    assert breaker_state(flaky).failures == 0
    breaker_record({flaky.pk: [F, F]})
    breaker_record({flaky.pk: [T, F, F]})
    assert breaker_state(flaky).state == "closed"
    assert breaker_state(flaky).failures == 2
    assert not BreakerEvent.objects.exists()


def test_a_run_of_failures_inside_one_batch_opens_it(flaky, clock):
    breaker_record({flaky.pk: [T, F, F, F, T, T]})
    assert breaker_state(flaky).state == "open"
    assert transitions(flaky) == [("closed", "open")]


def test_failures_of_different_workers_add_up(flaky, clock):
    breaker_record({flaky.pk: [F]})
    breaker_record({worker(flaky).pk: [F]})
    breaker_record({worker(flaky).pk: [F]})
    assert breaker_state(flaky).state == "open"


def test_an_open_breaker_refuses_calls_until_its_reset_time(flaky, clock):
    opened(flaky, clock)
    assert breaker_allowances([flaky]) == {flaky.pk: 0}
    clock.advance(29.9)
    assert breaker_allowances([flaky]) == {flaky.pk: 0}
    assert breaker_allowances([worker(flaky)]) == {flaky.pk: 0}
    assert breaker_state(flaky).state == "open"


def test_after_the_reset_time_exactly_one_caller_gets_a_probe(flaky, clock):
    opened(flaky, clock)
    clock.advance(30)
    assert breaker_state(flaky).probe_due

    first = breaker_allowances([worker(flaky)])
    second = breaker_allowances([worker(flaky)])
    third = breaker_allowances([worker(flaky)])

    assert [first[flaky.pk], second[flaky.pk], third[flaky.pk]] == [1, 0, 0]
    assert breaker_state(flaky).state == "half_open"
    assert transitions(flaky) == [("closed", "open"), ("open", "half_open")]
    assert BreakerEvent.objects.filter(to_state="half_open").get().reason == (
        "reset time passed: one probe call"
    )


def test_a_successful_probe_closes_it_and_forgets_the_failures(flaky, clock):
    opened(flaky, clock)
    clock.advance(30)
    assert breaker_allowances([flaky]) == {flaky.pk: 1}

    breaker_record({flaky.pk: [T]})

    view = breaker_state(flaky)
    assert (view.state, view.failures, view.opened_at, view.retry_at) == ("closed", 0, None, None)
    assert breaker_allowances([worker(flaky)]) == {flaky.pk: None}
    assert transitions(flaky)[-1] == ("half_open", "closed")
    # Counting starts from zero: it takes the full threshold to open it again.
    breaker_record({flaky.pk: [F, F]})
    assert breaker_state(flaky).state == "closed"


def test_a_failed_probe_opens_it_for_another_reset_time(flaky, clock):
    opened(flaky, clock)
    clock.advance(30)
    assert breaker_allowances([flaky]) == {flaky.pk: 1}
    clock.advance(2)

    breaker_record({flaky.pk: [F]})

    view = breaker_state(flaky)
    assert view.state == "open"
    assert view.failures == 4
    assert view.opened_at.timestamp() == T0  # open since the first failure run
    assert view.retry_at.timestamp() == T0 + 32 + 30
    assert transitions(flaky)[-1] == ("half_open", "open")
    assert breaker_allowances([flaky]) == {flaky.pk: 0}
    clock.advance(30)
    assert breaker_allowances([flaky]) == {flaky.pk: 1}
    assert breaker_allowances([worker(flaky)]) == {flaky.pk: 0}


def test_a_probe_that_never_reports_back_is_given_to_another_caller(flaky, clock):
    opened(flaky, clock)
    clock.advance(30)
    assert breaker_allowances([flaky]) == {flaky.pk: 1}
    # The probe's worker died. Until its lease (timeout + reset time) ends, nobody else probes.
    lease = float(flaky.timeout_seconds) + 30
    clock.advance(lease - 1)
    assert breaker_allowances([worker(flaky)]) == {flaky.pk: 0}
    clock.advance(1)
    assert breaker_allowances([worker(flaky)]) == {flaky.pk: 1}
    assert breaker_allowances([worker(flaky)]) == {flaky.pk: 0}
    assert transitions(flaky)[-1] == ("half_open", "half_open")


def test_late_outcomes_do_not_change_an_open_breaker(flaky, clock):
    opened(flaky, clock)
    before = breaker_state(flaky)
    # Calls that started before it opened come back after it.
    breaker_record({flaky.pk: [T, F, F, F, F]})
    assert breaker_state(flaky) == before
    assert len(transitions(flaky)) == 1


def test_a_change_is_written_once_when_two_workers_see_it_together(flaky, clock):
    breaker_record({flaky.pk: [F, F]})
    # Both read "closed" before either wrote; the second finds the change already made.
    seen = breaker._read(flaky.pk)
    assert breaker._change(flaky, seen, to="open", reason="a", failures=3, retry_at=T0 + 30)
    assert not breaker._change(flaky, seen, to="open", reason="b", failures=3, retry_at=T0 + 30)
    assert transitions(flaky) == [("closed", "open")]


def test_empty_results_change_nothing_and_ask_nothing(flaky, clock, django_assert_num_queries):
    with django_assert_num_queries(0):
        breaker_record({})
        breaker_record({flaky.pk: []})


def test_asking_about_no_providers_asks_the_cache_nothing(db):
    assert breaker_allowances([]) == {}
    assert breaker.breaker_states([]) == {}


def test_providers_are_independent(flaky, clock):
    other = provider_create(name="Spare", kind="local", actor=None, breaker_failure_threshold=3)
    breaker_record({flaky.pk: [F, F, F], other.pk: [F, T]})
    assert breaker_allowances([flaky, other]) == {flaky.pk: 0, other.pk: None}


# --- Worker processes -----------------------------------------------------------------------


def run_workers(code: str, n: int) -> list[str]:
    """Run `code` in `n` fresh Django processes at once, against this test's database and cache;
    return what each printed after "RESULT "."""
    processes = [
        subprocess.Popen(
            [*MANAGE, "shell", "-v", "0", "-c", code],
            env=env_for_test_database(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        results += [line.removeprefix("RESULT ") for line in out.splitlines() if "RESULT " in line]
    return results


@pytest.mark.django_db(transaction=True)
def test_worker_processes_share_the_breaker_and_only_one_gets_the_probe(monkeypatch):
    provider = provider_create(name="Shared", kind="local", actor=None, breaker_failure_threshold=2)
    keys = [f"breaker:{provider.pk}:state", f"breaker:{provider.pk}:failures"]
    try:
        # Opened long enough ago (by this process's clock) that the probe is due now.
        monkeypatch.setattr(breaker, "clock", lambda: time.time() - 3600)
        breaker_record({provider.pk: [F, F]})
        code = (
            "from pipelines.models import Provider\n"
            "from pipelines.services.breaker import breaker_allowances\n"
            f"p = Provider.objects.get(pk={provider.pk})\n"
            "print('RESULT', breaker_allowances([p])[p.pk])\n"
        )
        results = run_workers(code, 4)
        assert sorted(results) == ["0", "0", "0", "1"]
        assert transitions(provider) == [("closed", "open"), ("open", "half_open")]
    finally:
        # The database cache table is not emptied between transactional tests.
        cache.delete_many(keys)


# --- Pages ----------------------------------------------------------------------------------


def test_the_provider_list_shows_each_breaker(operator, flaky, clock):
    other = provider_create(name="Spare", kind="local", actor=None)
    opened(flaky, clock)
    html = login(operator).get(reverse("provider-list")).content.decode()
    rows = part(html, "provider-table")
    assert rows.index("Local") < rows.index(">open<") < rows.index(other.name)
    assert rows.count('data-testid="breaker-state"') == 2
    assert ">closed<" in rows


def test_the_provider_page_shows_state_failures_times_and_history(operator, flaky, clock, settings):
    settings.TIME_ZONE = "UTC"
    provider_update(provider=flaky, actor=None, rate_limit_per_minute=120)
    opened(flaky, clock)
    clock.advance(30)
    breaker_allowances([flaky])
    breaker_record({flaky.pk: [F]})

    response = login(operator).get(reverse("provider-detail", args=[flaky.pk]))

    html = response.content.decode()
    section = part(html, "breaker", end="</section>")
    assert ">open<" in section
    assert '4 <small class="muted">(it opens at 3)' in section
    assert "2027-01-15 08:00:00" in section  # opened (T0, UTC)
    assert "2027-01-15 08:01:00" in section  # next probe: 30 s after the failed probe at +30 s
    assert "(in 30 s)" in section
    assert "120 calls a minute" in section
    assert "Close the breaker" in section
    history = part(section + "</table>", "breaker-history")
    assert history.count("<tr>") == 1 + 3
    assert "the probe call failed; open for another 30 s" in history
    assert "3 consecutive failures (threshold 3)" in history


def test_a_healthy_breaker_offers_no_close_button(operator, flaky, clock):
    html = login(operator).get(reverse("provider-detail", args=[flaky.pk])).content.decode()
    assert ">closed<" in html
    assert "no limit" in html
    assert "The breaker has never opened." in html
    assert "Close the breaker" not in html


def test_the_history_shows_the_last_50_changes(operator, flaky, clock):
    BreakerEvent.objects.bulk_create(
        BreakerEvent(provider=flaky, from_state="closed", to_state="open", reason=f"change {i}")
        for i in range(60)
    )
    html = login(operator).get(reverse("provider-detail", args=[flaky.pk])).content.decode()
    history = part(html, "breaker-history")
    assert history.count("<tr>") == 1 + 50


def test_the_breaker_section_refreshes_on_its_own_for_htmx(operator, flaky, clock):
    opened(flaky, clock)
    response = login(operator).get(
        reverse("provider-detail", args=[flaky.pk]), headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="breaker"')
    assert "<html" not in html and "Add a model" not in html
    assert ">open<" in html


def test_an_operator_closes_the_breaker_by_hand(operator, flaky, clock):
    opened(flaky, clock)
    http = login(operator)

    response = http.post(reverse("provider-breaker-reset", args=[flaky.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("provider-detail", args=[flaky.pk])
    view = breaker_state(flaky)
    assert (view.state, view.failures) == ("closed", 0)
    assert breaker_allowances([worker(flaky)]) == {flaky.pk: None}
    event = BreakerEvent.objects.filter(provider=flaky).first()
    assert (event.from_state, event.to_state) == ("open", "closed")
    assert event.reason == "closed by hand by olivia"
    entry = AuditEntry.objects.get(action="provider.breaker_reset")
    assert entry.actor == operator
    assert entry.object_id == str(flaky.pk)
    assert entry.before == {"state": "open", "failures": 3}
    assert entry.after == {"state": "closed", "failures": 0}
    page = http.get(response["Location"]).content.decode()
    assert "is closed: calls go through again" in page


def test_closing_by_htmx_reloads_the_page(operator, flaky, clock):
    opened(flaky, clock)
    response = login(operator).post(
        reverse("provider-breaker-reset", args=[flaky.pk]), headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("provider-detail", args=[flaky.pk])
    assert breaker_state(flaky).state == "closed"


def test_closing_by_hand_also_forgets_failures_of_a_closed_breaker(operator, flaky, clock):
    breaker_record({flaky.pk: [F, F]})
    breaker_reset(provider=flaky, actor=operator)
    assert breaker_state(flaky).failures == 0
    assert not BreakerEvent.objects.exists()  # no change of state
    assert AuditEntry.objects.filter(action="provider.breaker_reset").count() == 1
    breaker_reset(provider=flaky, actor=operator)  # nothing to do: nothing audited
    assert AuditEntry.objects.filter(action="provider.breaker_reset").count() == 1


@pytest.mark.parametrize("persona", ["reviewer", "client_a", "client_b", "no_role"])
def test_only_operators_may_close_a_breaker(request, persona, flaky, clock):
    opened(flaky, clock)
    response = login(request.getfixturevalue(persona)).post(
        reverse("provider-breaker-reset", args=[flaky.pk])
    )
    assert response.status_code == 403
    assert breaker_state(flaky).state == "open"
    assert not AuditEntry.objects.filter(action="provider.breaker_reset").exists()


def test_anonymous_visitors_are_sent_to_log_in(client, flaky, clock):
    opened(flaky, clock)
    response = client.post(reverse("provider-breaker-reset", args=[flaky.pk]))
    assert response.status_code == 302
    assert "login" in response["Location"]
    assert breaker_state(flaky).state == "open"


def test_closing_needs_a_csrf_token(operator, flaky, clock):
    from django.test import Client as HttpClient

    opened(flaky, clock)
    http = HttpClient(enforce_csrf_checks=True)
    http.force_login(operator)
    response = http.post(reverse("provider-breaker-reset", args=[flaky.pk]))
    assert response.status_code == 403
    assert breaker_state(flaky).state == "open"


def test_closing_an_unknown_provider_is_not_found(operator):
    response = login(operator).post(reverse("provider-breaker-reset", args=[999_999]))
    assert response.status_code == 404
