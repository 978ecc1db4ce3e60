"""A step's threshold from its blind audits: the pure suggestion on constructed outcomes, and
the operator's page (also loaded into the threshold tool) on decided audit tasks."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from django.utils import timezone

from pipelines.threshold import Outcome, threshold_curve
from review.audit_threshold import (
    audit_error_figure,
    audit_floor,
    audit_threshold_suggest,
    audits_needed,
)
from review.models import ReviewTask
from tests.conftest import login
from tests.factories import ItemFactory

# Audited outputs only: the gate accepted them at 0.80 or more. Wrong ones at 0.81 and 0.86.
AUDITS = [
    Outcome(confidence=0.81, correct=False),
    Outcome(confidence=0.83, correct=True),
    Outcome(confidence=0.86, correct=False),
    Outcome(confidence=0.9, correct=True),
    Outcome(confidence=0.92, correct=True),
    Outcome(confidence=0.95, correct=True),
    Outcome(confidence=0.97, correct=True),
    Outcome(confidence=0.99, correct=True),
]


# --- The pure suggestion ----------------------------------------------------------------------


def test_the_suggestion_is_the_lowest_threshold_within_the_target():
    point = audit_threshold_suggest(AUDITS, target_error_rate=0.2)
    # At 0.82 one of 7 is wrong (14%); at 0.81 two of 8 (25%).
    assert point.threshold == 0.82
    assert (point.accepted, point.error_rate) == (7, pytest.approx(1 / 7))


def test_a_zero_target_needs_a_threshold_above_every_error():
    point = audit_threshold_suggest(AUDITS, target_error_rate=0.0)
    assert point.threshold == 0.87 and point.accepted == 5 and point.error_rate == 0.0


def test_the_suggestion_never_goes_below_what_was_audited():
    clean = [Outcome(confidence=c, correct=True) for c in (0.8, 0.85, 0.9)]
    # Every threshold from 0 up meets the target, but only 0.80 and above were ever audited.
    point = audit_threshold_suggest(clean, target_error_rate=0.05)
    assert point.threshold == 0.8 and point.accepted == 3


def test_no_suggestion_when_no_audited_threshold_meets_the_target():
    wrong = [Outcome(confidence=c, correct=False) for c in (0.8, 0.9, 1.0)]
    assert audit_threshold_suggest(wrong, target_error_rate=0.1) is None


def test_no_suggestion_and_no_floor_without_audits():
    assert audit_threshold_suggest([], target_error_rate=0.05) is None
    assert audit_floor(threshold_curve([])) is None


def test_the_floor_is_the_highest_threshold_that_counts_every_audit():
    assert audit_floor(threshold_curve(AUDITS)).threshold == 0.81
    assert audit_floor(threshold_curve([Outcome(confidence=0.805, correct=True)])).threshold == 0.8


def test_a_target_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="target_error_rate"):
        audit_threshold_suggest(AUDITS, target_error_rate=1.5)


@pytest.mark.parametrize(
    ("target", "needed"), [(0.02, 150), (0.05, 60), (0.03, 100), (0.5, 6), (0.0, None)]
)
def test_audits_needed_follow_the_rule_of_three(target, needed):
    assert audits_needed(target) == needed


def test_the_figure_draws_error_rate_audits_and_the_target():
    curve = threshold_curve(AUDITS)
    figure = audit_error_figure(curve, target_error_rate=0.02, current=0.8, suggested=0.87)
    assert json.loads(json.dumps(figure)) == figure
    rate, audits = figure["data"]
    assert rate["y"][-1] is None  # nothing audited at 1.0: a gap
    assert audits["y"][0] == 8 and audits["yaxis"] == "y2"
    labels = [shape["label"]["text"] for shape in figure["layout"]["shapes"]]
    assert labels == ["target", "current", "suggested"]
    go = pytest.importorskip("plotly.graph_objects")
    assert len(go.Figure(figure).data) == 2


# --- The page ---------------------------------------------------------------------------------


def audited(step, outcomes):
    """Decided blind audits of `step` with these confidences and verdicts."""
    from pipelines.signals import Sampled
    from review.services import tasks_open_for_audit

    for outcome in outcomes:
        item = ItemFactory(
            pipeline=step.pipeline,
            status="accepted",
            outputs={step.slug: {"output": {"label": "bug"}, "confidence": outcome.confidence}},
        )
        tasks_open_for_audit(sampled=[Sampled(item, step, {"label": "bug"})])
    for task, outcome in zip(
        ReviewTask.objects.filter(step=step, kind="audit", status="open", opinion=1).order_by("id"),
        outcomes,
        strict=True,
    ):
        ReviewTask.objects.filter(pk=task.pk).update(
            status="decided",
            decision="approve" if outcome.correct else "edit",
            agreed=outcome.correct,
            decided_at=timezone.now(),
        )


def url(step):
    return reverse("review-audit-threshold", args=[step.pk])


def test_operators_see_the_suggestion_with_a_warning_when_audits_are_few(operator, acme_step):
    audited(acme_step, AUDITS)
    response = login(operator).get(url(acme_step), {"target": "20"})
    assert response.status_code == 200
    assert response.context["suggestion"].threshold == 0.82
    html = response.content.decode()
    assert 'data-testid="audit-count">8<' in html
    assert "Threshold <strong>0.82</strong>: 7 audits at or above it" in html
    # 3 / 20% = 15 audits are needed; 7 are not enough.
    assert "at least 15 are needed" in html
    assert 'name="threshold" value="0.82"' in html
    assert f'action="{reverse("step-threshold", args=[acme_step.pk])}"' in html
    assert [round(row["point"].threshold, 2) for row in response.context["rows"]] == [
        0.81,
        0.85,
        0.9,
        0.95,
        0.99,
    ]
    assert [row["errors"] for row in response.context["rows"]] == [2, 1, 0, 0, 0]


def test_enough_clean_audits_give_a_suggestion_without_warning(operator, acme_step):
    audited(acme_step, [Outcome(confidence=0.9, correct=True)] * 60)
    response = login(operator).get(url(acme_step), {"target": "5"})
    assert response.context["enough"] is True
    html = response.content.decode()
    assert "Threshold <strong>0.90</strong>: 60 audits" in html
    assert 'data-testid="audit-warning"' not in html


def test_the_default_target_is_two_percent_and_says_when_nothing_meets_it(operator, acme_step):
    audited(acme_step, AUDITS)
    response = login(operator).get(url(acme_step))
    assert response.context["target_percent"] == 2.0
    # Above 0.86 every audit was right: 0.87 is within any target, however few the audits.
    assert response.context["suggestion"].threshold == 0.87
    audited(acme_step, [Outcome(confidence=0.99, correct=False)])
    response = login(operator).get(url(acme_step))
    assert response.context["suggestion"] is None
    assert "No threshold the audits reach keeps" in response.content.decode()


def test_a_step_without_audits_explains_how_to_get_them(operator, acme_step):
    html = login(operator).get(url(acme_step)).content.decode()
    assert "No blind audit of this step has been decided yet" in html
    assert "data-plotly" not in html


def test_undecided_audits_and_held_items_do_not_count(operator, acme_step):
    from pipelines.signals import Sampled
    from review.services import tasks_open_for_audit
    from tests.reviewing import hold

    item = ItemFactory(
        pipeline=acme_step.pipeline,
        status="accepted",
        outputs={acme_step.slug: {"output": {"label": "bug"}, "confidence": 0.9}},
    )
    tasks_open_for_audit(sampled=[Sampled(item, acme_step, {"label": "bug"})])
    hold(ItemFactory(pipeline=acme_step.pipeline), acme_step)
    assert login(operator).get(url(acme_step)).context["audits"] == 0


@pytest.mark.parametrize("persona", ["reviewer", "client_a", "client_b", "no_role"])
def test_only_operators_may_use_it(world, persona):
    response = login(world[persona]).get(url(world["acme_step"]))
    assert response.status_code == 403


def test_an_unknown_step_is_not_found(operator, db):
    assert login(operator).get(reverse("review-audit-threshold", args=[999999])).status_code == 404


def test_the_threshold_tool_loads_the_audit_section(operator, acme_step):
    html = login(operator).get(reverse("step-threshold", args=[acme_step.pk])).content.decode()
    assert f'hx-get="{url(acme_step)}"' in html and 'hx-trigger="load"' in html
    # Without JavaScript the section is a link.
    assert f'href="{url(acme_step)}"' in html


def test_htmx_gets_only_the_section_and_the_form_stays_in_it(operator, acme_step):
    audited(acme_step, AUDITS)
    response = login(operator).get(url(acme_step), {"target": "20"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert "<html" not in html and 'data-testid="audit-threshold"' in html
    assert 'hx-target="#audit-threshold"' in html
    assert 'id="audit-threshold-figure"' in html
