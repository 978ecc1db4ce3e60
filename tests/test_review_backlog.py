"""The backlog page: who may see which queues, the age buckets, overdue count, oldest task,
last hour's decisions and the time to drain per queue and overall, and its chart."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from review.figures import backlog_figure, duration_text
from review.models import ReviewTask
from review.selectors import queue_backlog_list
from tests.conftest import login
from tests.factories import ItemFactory
from tests.reviewing import classify_step, hold, join

URL = reverse("review-backlog")


def task(step, **fields):
    """A held item's task with `fields` set as if time had passed."""
    made = hold(ItemFactory(pipeline=step.pipeline), step)
    if fields:
        ReviewTask.objects.filter(pk=made.pk).update(**fields)
    return made


@pytest.fixture
def globex_step(globex_pipeline, operator):
    return classify_step(globex_pipeline, operator, slug="clause", name="Clause")


@pytest.fixture
def queues(acme_step, globex_step, reviewer):
    """Acme's queue with the reviewer as member, and Globex's queue, each with work."""
    now = timezone.now()
    for age in (timedelta(minutes=30), timedelta(hours=2), timedelta(hours=5), timedelta(days=2)):
        task(acme_step, opened_at=now - age)
    task(acme_step, opened_at=now - timedelta(minutes=10), overdue=True)
    for minutes in (5, 50):
        task(acme_step, status="decided", decided_at=now - timedelta(minutes=minutes))
    task(acme_step, status="decided", decided_at=now - timedelta(minutes=70))
    task(globex_step, opened_at=now - timedelta(hours=3))
    return join(acme_step, reviewer), join(globex_step)


def rows(response):
    return {row["name"]: row for row in response.context["rows"]}


# --- Who sees what ----------------------------------------------------------------------------


def test_operators_see_every_queue_and_the_total(operator, queues):
    response = login(operator).get(URL)
    assert response.status_code == 200
    acme_queue, globex_queue = queues
    assert set(rows(response)) == {acme_queue.name, globex_queue.name}
    assert response.context["overall"]["backlog"].waiting == 6
    html = response.content.decode()
    assert acme_queue.name in html and globex_queue.name in html


def test_reviewers_see_only_the_queues_they_work(reviewer, queues):
    response = login(reviewer).get(URL)
    assert response.status_code == 200
    acme_queue, globex_queue = queues
    assert list(rows(response)) == [acme_queue.name]
    assert globex_queue.name not in response.content.decode()
    assert response.context["overall"]["backlog"].waiting == 5


@pytest.mark.parametrize("persona", ["client_a", "client_b", "no_role"])
def test_clients_and_people_without_a_role_are_refused(world, persona):
    assert login(world[persona]).get(URL).status_code == 403


def test_anonymous_visitors_are_sent_to_log_in(db, client):
    response = client.get(URL)
    assert response.status_code == 302 and "login" in response["Location"]


def test_a_reviewer_without_queues_is_told_so(acme):
    from controlplane.roles import Role
    from tests.factories import make_user

    rae = make_user("rae", role=Role.REVIEWER, clients=[acme])
    html = login(rae).get(URL).content.decode()
    assert "You are not a member of any review queue yet." in html
    assert "data-plotly" not in html


# --- The numbers ------------------------------------------------------------------------------


def test_the_page_shows_buckets_overdue_oldest_decisions_and_time_to_drain(reviewer, queues):
    response = login(reviewer).get(URL)
    [row] = rows(response).values()
    backlog = row["backlog"]
    assert [(b.label, b.count) for b in backlog.buckets] == [
        ("< 1 h", 2),
        ("1-4 h", 1),
        ("4-24 h", 1),
        ("> 24 h", 1),
    ]
    assert (backlog.waiting, backlog.overdue, backlog.decided_last_hour) == (5, 1, 2)
    assert row["oldest"] == "2.0 days"
    # 5 waiting at 2 decisions an hour.
    assert row["drain"] == "2.5 h"
    tiles = response.content.decode()
    assert 'data-testid="tile-drain">2.5 h<' in tiles
    assert 'data-testid="tile-overdue">1<' in tiles


def test_without_recent_decisions_the_forecast_says_so(operator, globex_step):
    join(globex_step)
    task(globex_step)
    response = login(operator).get(URL)
    assert response.context["overall"]["drain"] == "no recent decisions"
    assert "no recent decisions" in response.content.decode()


def test_an_empty_queue_has_nothing_to_drain(operator, globex_step):
    join(globex_step)
    [row] = login(operator).get(URL).context["rows"]
    assert (row["backlog"].waiting, row["drain"], row["oldest"]) == (0, "nothing waiting", "—")


def test_the_chart_stacks_each_queues_age_buckets(operator, queues):
    response = login(operator).get(URL)
    acme_queue, globex_queue = queues
    figure = response.context["figure"]
    assert [trace["name"] for trace in figure["data"]] == ["< 1 h", "1-4 h", "4-24 h", "> 24 h"]
    by_queue = {
        name: [trace["x"][i] for trace in figure["data"]]
        for i, name in enumerate(figure["data"][0]["y"])
    }
    assert by_queue == {acme_queue.name: [2, 1, 1, 1], globex_queue.name: [0, 1, 0, 0]}
    html = response.content.decode()
    assert 'data-plotly="backlog-figure"' in html and 'id="backlog-figure"' in html


def test_htmx_refreshes_get_only_the_backlog_region(operator, queues):
    response = login(operator).get(URL, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="backlog-table"' in html and "<html" not in html


def test_the_subnav_links_the_review_pages(reviewer, queues):
    html = login(reviewer).get(URL).content.decode()
    for name in ("review-queue", "review-backlog", "review-stats"):
        assert f'href="{reverse(name)}"' in html
    assert 'aria-current="page" class="current">Backlog' in html


def test_queue_backlogs_are_listed_per_queue_in_order(operator, reviewer, queues):
    now = timezone.now()
    listed = queue_backlog_list(user=operator, now=now)
    assert [entry.queue for entry in listed] == list(queues)
    assert [entry.backlog.waiting for entry in listed] == [5, 1]
    assert [entry.queue for entry in queue_backlog_list(user=reviewer, now=now)] == [queues[0]]


# --- Pure helpers -----------------------------------------------------------------------------


def test_the_backlog_figure_is_plotly_json():
    figure = backlog_figure(["< 1 h", "> 1 h"], [("A", [3, 1]), ("B", [0, 2])])
    assert json.loads(json.dumps(figure)) == figure
    assert [trace["x"] for trace in figure["data"]] == [[3, 0], [1, 2]]
    go = pytest.importorskip("plotly.graph_objects")
    assert len(go.Figure(figure).data) == 2


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0, "0 s"),
        (42.4, "42 s"),
        (600, "10 min"),
        (9000, "2.5 h"),
        (3 * 86400, "3.0 days"),
    ],
)
def test_durations_read_as_people_say_them(seconds, text):
    assert duration_text(seconds) == text
