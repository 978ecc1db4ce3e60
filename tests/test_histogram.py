"""Percentiles from histogram buckets against exact percentiles, and the latencies the engine
counts into the rollups."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from django.db.models import Sum

from pipelines.histogram import BOUNDS, bucket_counts, bucket_of, percentile
from pipelines.models import LatencyRollup
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch
from tests.test_engine import simulated_route, submit


def test_values_fall_in_the_bucket_whose_upper_bound_holds_them():
    assert bucket_of(0) == 0
    assert bucket_of(-3) == 0  # clock skew
    assert bucket_of(0.01) == 0
    assert bucket_of(0.011) == 1
    assert bucket_of(1) == BOUNDS.index(1)
    assert bucket_of(10**9) == len(BOUNDS) - 1


@pytest.mark.parametrize("q", [50, 90, 95, 99])
def test_percentiles_from_buckets_stay_within_one_bucket_of_the_exact_value(q):
    rng = random.Random(q)
    # Latencies are right-skewed: a lognormal with a median of 0.8 s.
    sample = [rng.lognormvariate(math.log(0.8), 0.9) for _ in range(20_000)]
    exact = statistics.quantiles(sample, n=100, method="inclusive")[q - 1]
    estimate = percentile(bucket_counts(sample), q)
    index = bucket_of(exact)
    lower = BOUNDS[index - 1] if index else 0.0
    assert lower <= estimate <= BOUNDS[index]
    # The buckets are at most 2.5 times wide; interpolation does better on smooth data.
    assert abs(estimate - exact) / exact < 0.25


def test_an_empty_histogram_has_no_percentile_and_the_open_bucket_answers_its_floor():
    assert percentile({}, 50) is None
    assert percentile({len(BOUNDS) - 1: 3}, 99) == BOUNDS[-2]


def test_the_engine_counts_queue_wait_processing_and_end_to_end(operator, acme_step):
    simulated_route(acme_step, operator, latency_ms={"p50": 30, "p95": 40})
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    submit(acme_step.pipeline, "a", "b", "c")
    engine_run_batch(worker="w")
    counts = dict(LatencyRollup.objects.values_list("measure").annotate(n=Sum("count")).order_by())
    assert counts == {"queue_wait": 3, "processing": 3, "end_to_end": 3}
    processing = dict(
        LatencyRollup.objects.filter(measure="processing").values_list("bucket", "count")
    )
    assert 0.025 <= percentile(processing, 50) <= 0.1
