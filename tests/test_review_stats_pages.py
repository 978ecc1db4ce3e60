"""The reviewer statistics page: operators see everyone, a reviewer their own row, clients
nothing; the numbers of a small known fixture over 24 hours, 7 days and 30 days."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.roles import Role
from review.models import ReviewTask
from tests.conftest import login
from tests.factories import ItemFactory, make_user
from tests.reviewing import hold, join

URL = reverse("review-stats")


@pytest.fixture
def rex(acme):
    return make_user("rex", role=Role.REVIEWER, clients=[acme])


def decided(step, *, by, ago, decision="approve", seconds=10.0, kind="review", agreed=None):
    made = hold(ItemFactory(pipeline=step.pipeline), step)
    ReviewTask.objects.filter(pk=made.pk).update(
        status="decided",
        decision=decision,
        decided_by=by,
        decided_at=timezone.now() - ago,
        handling_seconds=seconds,
        kind=kind,
        agreed=agreed,
    )


@pytest.fixture
def decisions(acme_step, reviewer, rex):
    join(acme_step, reviewer, rex)
    hour = timedelta(hours=1)
    decided(acme_step, by=reviewer, ago=hour, decision="approve", seconds=6)
    decided(acme_step, by=reviewer, ago=hour, decision="edit", seconds=12)
    decided(acme_step, by=reviewer, ago=hour, decision="reject", seconds=30)
    decided(
        acme_step, by=reviewer, ago=hour, decision="approve", seconds=20, kind="audit", agreed=True
    )
    decided(acme_step, by=rex, ago=hour, decision="approve", seconds=4)
    decided(acme_step, by=rex, ago=timedelta(days=3), decision="reject", seconds=50)
    decided(acme_step, by=rex, ago=timedelta(days=20), decision="edit", seconds=70)


def table(response):
    return {row["stats"].username: row for row in response.context["rows"]}


def test_operators_see_every_reviewer_of_the_last_24_hours(operator, decisions):
    response = login(operator).get(URL)
    assert response.status_code == 200
    rows = table(response)
    assert list(rows) == ["rex", "rita"]
    rita = rows["rita"]["stats"]
    assert (rita.decisions, rita.approved, rita.edited, rita.rejected) == (4, 2, 1, 1)
    assert rita.decisions_per_hour == pytest.approx(4 / 24)
    assert rows["rita"]["median"] == "16 s"  # 6, 12, 20, 30
    assert (rita.audits, rita.audit_agreement) == (1, 1.0)
    html = response.content.decode()
    assert 'data-reviewer="rita"' in html and 'data-reviewer="rex"' in html
    assert "50% (2)" in html  # rita's approvals
    assert "100%" in html  # her audit agreed with the model


def test_a_reviewer_sees_only_their_own_row(reviewer, decisions):
    response = login(reviewer).get(URL, {"range": "30d"})
    assert response.status_code == 200
    assert list(table(response)) == ["rita"]
    assert 'data-reviewer="rex"' not in response.content.decode()


@pytest.mark.parametrize("persona", ["client_a", "client_b", "no_role"])
def test_clients_and_people_without_a_role_are_refused(world, persona):
    assert login(world[persona]).get(URL).status_code == 403


@pytest.mark.parametrize(("range_name", "rex_decisions"), [("24h", 1), ("7d", 2), ("30d", 3)])
def test_the_range_widens_the_period(operator, decisions, range_name, rex_decisions):
    response = login(operator).get(URL, {"range": range_name})
    assert table(response)["rex"]["stats"].decisions == rex_decisions
    assert response.context["range_name"] == range_name


def test_an_unknown_range_falls_back_to_24_hours(operator, decisions):
    response = login(operator).get(URL, {"range": "forever"})
    assert response.context["range_name"] == "24h"
    assert table(response)["rex"]["stats"].decisions == 1


def test_a_period_without_decisions_says_so(operator, db):
    html = login(operator).get(URL).content.decode()
    assert "No decisions in the last 24 hours." in html
