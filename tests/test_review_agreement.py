"""Second opinions on blind audits: a share of the sampled outputs is audited by two different
reviewers, never both by the same person, and the statistics show how often reviewers agree
with each other; operators set the share per queue."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from controlplane.models import AuditEntry
from controlplane.roles import Role
from pipelines.signals import Sampled
from review.models import ReviewQueue, ReviewTask
from review.selectors import peer_agreement_get, reviewer_stats_list
from review.services import task_claim, task_claim_next, task_decide, tasks_open_for_audit
from tests.conftest import login
from tests.factories import ItemFactory, make_user
from tests.reviewing import join

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def rex(acme):
    return make_user("rex", role=Role.REVIEWER, clients=[acme])


@pytest.fixture
def queue(acme_step, reviewer, rex):
    return join(acme_step, reviewer, rex)


def second_opinions(queue, rate: str) -> None:
    ReviewQueue.objects.filter(pk=queue.pk).update(second_opinion_rate=Decimal(rate))


def sample(step, n=1, *, label="bug"):
    """Sample `n` accepted outputs of `step` for a blind audit, in one batch."""
    items = [
        ItemFactory(
            pipeline=step.pipeline,
            status="accepted",
            outputs={step.slug: {"output": {"label": label}, "confidence": 0.9}},
        )
        for _ in range(n)
    ]
    tasks_open_for_audit(sampled=[Sampled(item, step, {"label": label}) for item in items])
    return items


def audits_of(item) -> list[ReviewTask]:
    return list(ReviewTask.objects.filter(item=item, kind="audit").order_by("opinion"))


# --- Opening ---------------------------------------------------------------------------------


def test_at_rate_one_every_sampled_output_gets_two_audits_in_one_insert(acme_step, queue):
    second_opinions(queue, "1")
    with CaptureQueriesContext(connection) as queries:
        items = sample(acme_step, 3)
    inserts = [
        q for q in queries if q["sql"].startswith("INSERT") and '"review_reviewtask"' in q["sql"]
    ]
    assert len(inserts) == 1
    for item in items:
        first, second = audits_of(item)
        assert (first.opinion, second.opinion) == (1, 2)
        assert first.status == second.status == "open" and first.queue == second.queue == queue
        assert first.model_output == second.model_output == {"label": "bug"}


def test_at_rate_zero_no_audit_is_doubled(acme_step, queue):
    second_opinions(queue, "0")
    for item in sample(acme_step, 5):
        assert [t.opinion for t in audits_of(item)] == [1]


def test_sampling_the_same_output_again_opens_nothing_more(acme_step, queue):
    second_opinions(queue, "0.5")
    items = sample(acme_step, 6)
    before = ReviewTask.objects.count()
    tasks_open_for_audit(sampled=[Sampled(item, acme_step, {"label": "bug"}) for item in items])
    assert ReviewTask.objects.count() == before


def test_a_new_queue_gives_one_audit_in_five_a_second_opinion(acme_step):
    assert join(acme_step).second_opinion_rate == Decimal("0.2")


# --- Claiming --------------------------------------------------------------------------------


def test_the_same_reviewer_never_gets_both_audits_of_an_output(acme_step, queue, reviewer, rex):
    second_opinions(queue, "1")
    [item] = sample(acme_step)
    first, second = audits_of(item)
    mine = task_claim_next(user=reviewer)
    assert mine.pk == first.pk
    # Holding one copy, the other is refused by id too.
    with pytest.raises(ValidationError) as refused:
        task_claim(task=second, user=reviewer)
    assert refused.value.code == "second_opinion" and "second opinion" in refused.value.messages[0]
    task_decide(task=mine, user=reviewer, decision="edit", output={"label": "bug"})
    assert task_claim_next(user=reviewer) is None
    with pytest.raises(ValidationError):
        task_claim(task=second, user=reviewer)
    assert task_claim_next(user=rex).pk == second.pk


def test_an_operator_never_gets_both_audits_either(acme_step, queue, operator):
    second_opinions(queue, "1")
    [item] = sample(acme_step)
    first, second = audits_of(item)
    assert task_claim_next(user=operator).pk == first.pk
    with pytest.raises(ValidationError):
        task_claim(task=second, user=operator)


def test_a_released_audit_frees_its_second_copy_for_the_same_reviewer(acme_step, queue, reviewer):
    from review.services import task_release

    second_opinions(queue, "1")
    [item] = sample(acme_step)
    _, second = audits_of(item)
    task_release(task=task_claim_next(user=reviewer), user=reviewer)
    assert task_claim(task=second, user=reviewer).pk == second.pk
    assert task_claim_next(user=reviewer).pk == second.pk  # the held one, not the first copy


def test_the_review_screen_refuses_the_second_copy_with_409(acme_step, queue, reviewer):
    second_opinions(queue, "1")
    [item] = sample(acme_step)
    _, second = audits_of(item)
    task_claim_next(user=reviewer)
    response = login(reviewer).post(reverse("review-task-claim", args=[second.pk]), **HTMX)
    assert response.status_code == 409
    assert "second opinion must come from someone else" in response.content.decode()
    second.refresh_from_db()
    assert second.status == "open"


# --- Agreement between reviewers -------------------------------------------------------------


@pytest.fixture
def two_opinions(acme_step, queue, reviewer, rex):
    """Rita and Rex both audit two outputs: they agree on the first and not on the second."""
    second_opinions(queue, "1")
    agreed, disagreed = sample(acme_step, 2)
    answers = {
        reviewer: {agreed.pk: "billing", disagreed.pk: "bug"},
        rex: {agreed.pk: "billing", disagreed.pk: "account"},
    }
    for person, labels in answers.items():
        for _ in labels:
            task = task_claim_next(user=person)
            label = labels[task.item_id]
            task_decide(task=task, user=person, decision="edit", output={"label": label})
    return agreed, disagreed


def test_peer_agreement_is_the_share_of_outputs_two_reviewers_answered_alike(
    two_opinions, operator, reviewer, rex
):
    rex_stats, rita_stats = reviewer_stats_list(user=operator)
    for stats in (rex_stats, rita_stats):
        assert (stats.audits, stats.peer_audits, stats.peer_agreement) == (2, 2, 0.5)
    # The model said "bug" both times.
    assert (rita_stats.audit_agreement, rex_stats.audit_agreement) == (0.5, 0.0)
    overall = peer_agreement_get(user=operator)
    assert (overall.pairs, overall.agreed, overall.rate) == (2, 1, 0.5)
    [mine] = reviewer_stats_list(user=reviewer)
    assert (mine.peer_audits, mine.peer_agreement) == (2, 0.5)
    assert peer_agreement_get(user=reviewer).pairs == 2


def test_without_second_opinions_there_is_no_peer_agreement(acme_step, queue, operator, reviewer):
    second_opinions(queue, "0")
    sample(acme_step)
    task = task_claim_next(user=reviewer)
    task_decide(task=task, user=reviewer, decision="approve")
    [stats] = reviewer_stats_list(user=operator)
    assert (stats.peer_audits, stats.peer_agreement) == (0, None)
    assert peer_agreement_get(user=operator).rate is None


def test_two_rejections_of_the_same_output_agree(acme_step, queue, operator, reviewer, rex):
    second_opinions(queue, "1")
    sample(acme_step)
    for person in (reviewer, rex):
        task = task_claim_next(user=person)
        task_decide(task=task, user=person, decision="reject", reject_reason="spam")
    assert peer_agreement_get(user=operator).rate == 1.0


def test_the_statistics_page_shows_agreement_with_other_reviewers(two_opinions, operator):
    body = login(operator).get(reverse("review-stats")).content.decode()
    assert "Agreement with other reviewers" in body
    assert body.count('<td data-testid="peer-agreement">50%</td>') == 2
    overall = body.split('data-testid="inter-reviewer-agreement"')[1].split("</p>")[0]
    assert "50% of 2 outputs" in overall


def test_clients_get_no_peer_agreement(two_opinions, client_a):
    assert peer_agreement_get(user=client_a).pairs == 0


# --- The setting -----------------------------------------------------------------------------


def test_an_operator_sets_the_second_opinion_rate_and_it_is_audited(acme_step, queue, operator):
    url = reverse("review-queue-members", args=[queue.pk])
    http = login(operator)
    assert 'name="second_opinion_rate"' in http.get(url).content.decode()
    response = http.post(url, {"second_opinion_rate": "0.5"})
    assert response.status_code == 302 and response["Location"] == url
    queue.refresh_from_db()
    assert queue.second_opinion_rate == Decimal("0.5")
    entry = AuditEntry.objects.get(action="review_queue.second_opinion_rate")
    assert entry.before == {"second_opinion_rate": "0.200"}
    assert entry.after == {"second_opinion_rate": "0.500"}
    assert 'value="0.500"' in http.get(url).content.decode()


@pytest.mark.parametrize("value", ["1.5", "-0.1", "abc", "", "NaN", "0.1234"])
def test_an_invalid_rate_is_refused_with_422_next_to_the_field(acme_step, queue, operator, value):
    url = reverse("review-queue-members", args=[queue.pk])
    response = login(operator).post(url, {"second_opinion_rate": value})
    assert response.status_code == 422
    body = response.content.decode()
    assert 'id="second-opinion-rate-errors"' in body and 'aria-invalid="true"' in body
    queue.refresh_from_db()
    assert queue.second_opinion_rate == Decimal("0.2")
    assert not AuditEntry.objects.filter(action="review_queue.second_opinion_rate").exists()


@pytest.mark.parametrize("persona", ["reviewer", "client_a", "no_role"])
def test_only_operators_may_set_the_rate(acme_step, queue, request, persona):
    url = reverse("review-queue-members", args=[queue.pk])
    http = login(request.getfixturevalue(persona))
    assert http.get(url).status_code == 403
    assert http.post(url, {"second_opinion_rate": "1"}).status_code == 403
    queue.refresh_from_db()
    assert queue.second_opinion_rate == Decimal("0.2")
