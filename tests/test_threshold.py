from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from pipelines.threshold import (
    CurvePoint,
    Outcome,
    threshold_curve,
    threshold_figure,
    threshold_suggest,
)

# Hand-checked: 3 of 5 correct overall; the wrong ones sit at 0.2 and 0.7.
FIVE = [
    Outcome(confidence=0.2, correct=False),
    Outcome(confidence=0.5, correct=True),
    Outcome(confidence=0.7, correct=False),
    Outcome(confidence=0.8, correct=True),
    Outcome(confidence=0.95, correct=True),
]


def point_at(curve: list[CurvePoint], threshold: float) -> CurvePoint:
    (point,) = [p for p in curve if math.isclose(p.threshold, threshold, abs_tol=1e-12)]
    return point


def random_outcomes(rng: random.Random, count: int) -> list[Outcome]:
    # Half the confidences sit on the 0.01 grid so boundary equality is exercised constantly.
    outcomes = []
    for _ in range(count):
        confidence = rng.random()
        if rng.random() < 0.5:
            confidence = round(confidence, 2)
        outcomes.append(Outcome(confidence=confidence, correct=rng.random() < confidence))
    return outcomes


def test_the_curve_has_one_point_per_hundredth_from_zero_to_one():
    curve = threshold_curve(FIVE)
    assert len(curve) == 101
    assert curve[0].threshold == 0.0
    assert curve[-1].threshold == 1.0
    assert [p.threshold for p in curve] == [i / 100 for i in range(101)]


def test_every_item_is_accepted_at_threshold_zero():
    point = threshold_curve(FIVE)[0]
    assert point == CurvePoint(
        threshold=0.0, accepted=5, accepted_share=1.0, accuracy=0.6, error_rate=0.4
    )


@pytest.mark.parametrize(
    ("threshold", "accepted", "share", "accuracy"),
    [
        (0.2, 5, 1.0, 3 / 5),
        (0.21, 4, 0.8, 3 / 4),
        (0.5, 4, 0.8, 3 / 4),
        (0.51, 3, 0.6, 2 / 3),
        (0.7, 3, 0.6, 2 / 3),
        (0.71, 2, 0.4, 1.0),
        (0.95, 1, 0.2, 1.0),
    ],
)
def test_hand_computed_points_match_including_confidence_equal_to_threshold(
    threshold, accepted, share, accuracy
):
    point = point_at(threshold_curve(FIVE), threshold)
    assert point.accepted == accepted
    assert point.accepted_share == pytest.approx(share)
    assert point.accuracy == pytest.approx(accuracy)
    assert point.error_rate == pytest.approx(1 - accuracy)


def test_thresholds_above_every_confidence_accept_nothing_and_have_no_accuracy():
    curve = threshold_curve(FIVE)
    for threshold in (0.96, 1.0):
        point = point_at(curve, threshold)
        assert point.accepted == 0
        assert point.accepted_share == 0.0
        assert point.accuracy is None
        assert point.error_rate is None


def test_a_confidence_of_exactly_one_is_accepted_at_threshold_one():
    curve = threshold_curve([Outcome(confidence=1.0, correct=True), Outcome(0.99, False)])
    assert curve[-1].threshold == 1.0
    assert curve[-1].accepted == 1
    assert curve[-1].accuracy == 1.0


@pytest.mark.parametrize("confidence", [0.57, 0.7, 0.35, 0.83])
def test_grid_thresholds_do_not_drift_past_a_confidence_written_the_same_way(confidence):
    # i * 0.01 lands just above these values, which would wrongly reject the item.
    point = point_at(threshold_curve([Outcome(confidence=confidence, correct=True)]), confidence)
    assert point.threshold == confidence
    assert point.accepted == 1


def test_no_outcomes_give_a_full_curve_that_accepts_nothing():
    curve = threshold_curve([])
    assert len(curve) == 101
    assert all(p.accepted == 0 and p.accepted_share == 0.0 for p in curve)
    assert all(p.accuracy is None and p.error_rate is None for p in curve)


def test_a_coarser_step_gives_fewer_points_on_the_same_grid():
    curve = threshold_curve(FIVE, step=0.1)
    assert [p.threshold for p in curve] == [i / 10 for i in range(11)]
    assert point_at(curve, 0.7).accepted == 3
    assert point_at(curve, 0.8).accepted == 2


def test_input_order_does_not_matter():
    assert threshold_curve(FIVE) == threshold_curve(list(reversed(FIVE)))


def test_accepted_share_never_rises_as_the_threshold_rises():
    curve = threshold_curve(random_outcomes(random.Random(20240611), 300))
    shares = [p.accepted_share for p in curve]
    counts = [p.accepted for p in curve]
    assert all(a >= b for a, b in itertools.pairwise(shares))
    assert all(a >= b for a, b in itertools.pairwise(counts))
    assert shares[0] == 1.0


@pytest.mark.parametrize("step", [0.01, 0.05, 0.001])
def test_the_sweep_agrees_with_brute_force_on_random_outcomes(step):
    outcomes = random_outcomes(random.Random(7), 500)
    curve = threshold_curve(outcomes, step=step)
    assert len(curve) == round(1 / step) + 1
    for point in curve:
        kept = [o for o in outcomes if o.confidence >= point.threshold]
        right = sum(o.correct for o in kept)
        assert point.accepted == len(kept)
        assert point.accepted_share == len(kept) / len(outcomes)
        if kept:
            assert point.accuracy == pytest.approx(right / len(kept))
            assert point.error_rate == pytest.approx((len(kept) - right) / len(kept))
        else:
            assert point.accuracy is None
            assert point.error_rate is None


@pytest.mark.parametrize("confidence", [-0.01, 1.01, float("nan"), float("inf")])
def test_a_confidence_outside_zero_to_one_is_rejected_by_value(confidence):
    outcomes = [Outcome(0.5, True), Outcome(confidence=confidence, correct=True)]
    with pytest.raises(ValueError, match=rf"outcome 1 has confidence {confidence!r}"):
        threshold_curve(outcomes)


@pytest.mark.parametrize("step", [0.0, -0.1, 0.6, 1.0, float("nan"), 0.00001])
def test_a_step_outside_the_allowed_range_is_rejected(step):
    with pytest.raises(ValueError, match="step must be within"):
        threshold_curve(FIVE, step=step)


@pytest.mark.parametrize("step", [0.3, 0.15, 0.03])
def test_a_step_that_does_not_divide_one_is_rejected(step):
    with pytest.raises(ValueError, match="step must divide 1"):
        threshold_curve(FIVE, step=step)


def test_suggestion_is_the_lowest_threshold_with_no_errors_when_the_target_is_zero():
    point = threshold_suggest(FIVE, target_error_rate=0.0)
    assert point is not None
    assert point.threshold == 0.71
    assert point.accepted == 2
    assert point.error_rate == 0.0


def test_suggestion_accepts_an_error_rate_exactly_at_the_target():
    point = threshold_suggest(FIVE, target_error_rate=0.25)
    assert point is not None
    assert point.threshold == 0.21
    assert point.error_rate == 0.25


def test_suggestion_is_zero_when_everything_already_meets_the_target():
    point = threshold_suggest(FIVE, target_error_rate=0.4)
    assert point is not None
    assert point.threshold == 0.0


def test_suggestion_takes_the_lowest_qualifier_even_when_a_middle_threshold_fails():
    # Error rate: 0.2 at threshold 0, 0.5 from 0.11, 0 from 0.61 -- not monotone.
    outcomes = [Outcome(0.1, True)] * 3 + [Outcome(0.6, False), Outcome(0.9, True)]
    assert threshold_suggest(outcomes, target_error_rate=0.2).threshold == 0.0
    assert threshold_suggest(outcomes, target_error_rate=0.1).threshold == 0.61


def test_suggestion_respects_the_minimum_number_accepted():
    # The error-free thresholds accept at most 2 items; those within 25% accept at most 4.
    assert threshold_suggest(FIVE, target_error_rate=0.0, min_accepted=2).threshold == 0.71
    assert threshold_suggest(FIVE, target_error_rate=0.0, min_accepted=3) is None
    assert threshold_suggest(FIVE, target_error_rate=0.25, min_accepted=4).threshold == 0.21
    assert threshold_suggest(FIVE, target_error_rate=0.25, min_accepted=5) is None


def test_suggestion_is_none_when_no_threshold_meets_the_target():
    all_wrong = [Outcome(0.9, False), Outcome(0.4, False)]
    assert threshold_suggest(all_wrong, target_error_rate=0.5) is None
    assert threshold_suggest([], target_error_rate=0.5) is None
    assert threshold_suggest(FIVE, target_error_rate=0.0, min_accepted=6) is None


def test_suggestion_uses_the_given_step():
    point = threshold_suggest(FIVE, target_error_rate=0.0, step=0.1)
    assert point is not None
    assert point.threshold == 0.8


@pytest.mark.parametrize("target", [-0.01, 1.0, 1.5, float("nan")])
def test_suggestion_rejects_a_target_outside_zero_to_one(target):
    with pytest.raises(ValueError, match="target_error_rate must be within"):
        threshold_suggest(FIVE, target_error_rate=target)


@pytest.mark.parametrize("min_accepted", [0, -1, 1.5, True])
def test_suggestion_rejects_a_minimum_that_is_not_a_positive_whole_number(min_accepted):
    with pytest.raises(ValueError, match="min_accepted must be"):
        threshold_suggest(FIVE, target_error_rate=0.1, min_accepted=min_accepted)


def test_suggestion_rejects_bad_confidences_too():
    with pytest.raises(ValueError, match="outcome 0 has confidence 2"):
        threshold_suggest([Outcome(2, True)], target_error_rate=0.1)


def test_the_figure_is_json_with_two_traces_over_the_thresholds():
    curve = threshold_curve(FIVE)
    figure = threshold_figure(curve)
    decoded = json.loads(json.dumps(figure, allow_nan=False))
    share, accuracy = decoded["data"]
    assert share["name"] == "Auto-accepted share"
    assert accuracy["name"] == "Accuracy of auto-accepted"
    assert share["x"] == accuracy["x"] == [p.threshold for p in curve]
    assert share["y"] == [p.accepted_share for p in curve]
    assert accuracy["y"][0] == pytest.approx(0.6)
    assert decoded["layout"]["shapes"] == []
    assert decoded["layout"]["hovermode"] == "x unified"
    assert decoded["layout"]["yaxis"]["tickformat"] == ".0%"
    assert decoded["layout"]["xaxis"]["title"]["text"]
    assert decoded["layout"]["yaxis"]["title"]["text"]


def test_the_figure_leaves_a_gap_where_nothing_is_accepted():
    figure = threshold_figure(threshold_curve(FIVE))
    accuracy = figure["data"][1]["y"]
    assert accuracy[96:] == [None] * 5
    assert "null" in json.dumps(accuracy)


def test_the_figure_marks_current_and_suggested_thresholds_with_dashed_lines():
    figure = threshold_figure(threshold_curve(FIVE), current=0.9, suggested=0.71)
    shapes = json.loads(json.dumps(figure))["layout"]["shapes"]
    assert [(s["label"]["text"], s["x0"], s["x1"]) for s in shapes] == [
        ("current", 0.9, 0.9),
        ("suggested", 0.71, 0.71),
    ]
    assert all(s["type"] == "line" and s["line"]["dash"] == "dash" for s in shapes)
    assert all(s["yref"] == "paper" and (s["y0"], s["y1"]) == (0, 1) for s in shapes)


def test_the_figure_draws_only_the_markers_it_is_given():
    figure = threshold_figure(threshold_curve(FIVE), suggested=0.5)
    assert [s["label"]["text"] for s in figure["layout"]["shapes"]] == ["suggested"]


def test_the_figure_rejects_a_marker_outside_zero_to_one():
    with pytest.raises(ValueError, match="current threshold must be within"):
        threshold_figure(threshold_curve(FIVE), current=1.5)


def test_plotly_accepts_every_property_the_figure_uses():
    go = pytest.importorskip("plotly.graph_objects")
    figure = threshold_figure(threshold_curve(FIVE), current=0.8, suggested=0.71)
    # plotly raises on any property name or value it does not know.
    assert len(go.Figure(figure).data) == 2
