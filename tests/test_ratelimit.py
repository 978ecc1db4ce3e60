"""The per-provider rate limit: calls granted within the last minute never exceed the limit,
whichever worker process asks, and 0 means no limit."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from pipelines.models import Provider
from pipelines.services import ratelimit
from pipelines.services.configuration import provider_create, provider_update
from pipelines.services.ratelimit import cache_counter_add, rate_grant, rate_used
from tests.test_breaker import T0, Clock, run_workers


@pytest.fixture
def clock(monkeypatch):
    fake = Clock(T0)  # T0 starts a minute
    monkeypatch.setattr(ratelimit, "clock", fake)
    return fake


@pytest.fixture
def limited(provider):
    return provider_update(provider=provider, actor=None, rate_limit_per_minute=10)


def worker(provider: Provider) -> Provider:
    return Provider.objects.get(pk=provider.pk)


def test_no_limit_grants_every_call(provider, clock):
    assert provider.rate_limit_per_minute == 0
    for _ in range(5):
        assert rate_grant(provider=provider, wanted=1000) == 1000
    assert rate_grant(provider=provider, wanted=0) == 0


def test_calls_are_granted_up_to_the_limit_and_the_rest_wait(limited, clock):
    assert rate_grant(provider=limited, wanted=6) == 6
    assert rate_grant(provider=worker(limited), wanted=6) == 4
    assert rate_grant(provider=worker(limited), wanted=5) == 0
    assert rate_grant(provider=limited, wanted=0) == 0
    # Only what was granted counts, not what was asked for.
    assert rate_used(provider=limited) == 10


def test_the_limit_frees_up_as_the_minute_slides_on(limited, clock):
    clock.advance(50)
    assert rate_grant(provider=limited, wanted=10) == 10
    clock.advance(10)  # a new minute has started, but those ten calls were 10 s ago
    assert rate_grant(provider=limited, wanted=10) == 0
    clock.advance(30)  # half of that minute is behind us
    assert rate_grant(provider=limited, wanted=10) == 5
    assert rate_used(provider=limited) == 10
    clock.advance(90)  # two minutes on: nothing was granted in the last 60 s
    assert rate_used(provider=limited) == 0
    assert rate_grant(provider=limited, wanted=10) == 10


def test_a_burst_across_a_minute_boundary_stays_within_the_limit(limited, clock):
    clock.advance(59)
    assert rate_grant(provider=limited, wanted=10) == 10
    clock.advance(1)
    assert rate_grant(provider=limited, wanted=10) == 0


def test_a_lower_limit_applies_at_once(limited, clock):
    assert rate_grant(provider=limited, wanted=4) == 4
    lowered = provider_update(provider=limited, actor=None, rate_limit_per_minute=3)
    assert rate_grant(provider=lowered, wanted=4) == 0


def test_providers_have_their_own_counts(limited, clock):
    other = provider_create(name="Spare", kind="local", actor=None, rate_limit_per_minute=10)
    assert rate_grant(provider=limited, wanted=10) == 10
    assert rate_grant(provider=other, wanted=10) == 10


def test_the_shared_counter_counts_from_zero_and_goes_both_ways(db):
    assert cache_counter_add("ratelimit:test:counter", 3, timeout=60) == 3
    assert cache_counter_add("ratelimit:test:counter", 4, timeout=60) == 7
    assert cache_counter_add("ratelimit:test:counter", -2, timeout=60) == 5
    assert cache.get("ratelimit:test:counter") == 5


@pytest.mark.django_db(transaction=True)
def test_worker_processes_share_one_limit():
    provider = provider_create(name="Shared", kind="local", actor=None, rate_limit_per_minute=25)
    code = (
        "from pipelines.models import Provider\n"
        "from pipelines.services import ratelimit\n"
        f"ratelimit.clock = lambda: {T0}\n"
        f"p = Provider.objects.get(pk={provider.pk})\n"
        "print('RESULT', sum(ratelimit.rate_grant(provider=p, wanted=2) for _ in range(5)))\n"
    )
    try:
        grants = [int(n) for n in run_workers(code, 4)]
        # 4 workers asked for 40 calls; the minute has room for 25, and all of it is used.
        assert sum(grants) == 25
    finally:
        # The database cache table is not emptied between transactional tests.
        cache.delete(f"ratelimit:{provider.pk}:{int(T0 // 60)}")
