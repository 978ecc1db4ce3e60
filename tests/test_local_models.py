"""Trained local models: stored once and shared by every worker, trained again when the step's
examples change (at once by one worker, and on a schedule)."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from pipelines.models import Example, Item, Pipeline, TrainedModel
from pipelines.providers import ConfigurationError, ProviderLimitError
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch
from pipelines.services.local_model import (
    KEEP,
    local_model_bytes,
    local_model_current,
    local_models_refresh,
)
from tests.test_engine import submit
from tests.test_threshold_tool import add_examples


@pytest.fixture
def local_step(operator, acme_step, provider):
    config.route_set(step=acme_step, entries=[{"model": provider.models.get()}], actor=operator)
    return acme_step


def test_the_first_use_trains_and_stores_a_model_that_later_uses_share(local_step):
    add_examples(local_step)
    first = local_model_bytes(step=local_step)
    assert TrainedModel.objects.count() == 1
    assert local_model_bytes(step=local_step) == first
    assert TrainedModel.objects.count() == 1
    stored = TrainedModel.objects.get()
    assert stored.examples == 90 and sorted(stored.labels) == ["account", "billing", "bug"]


def test_new_examples_make_the_next_use_train_again(local_step):
    add_examples(local_step)
    local_model_bytes(step=local_step)
    add_examples(local_step, n_per_label=5, seed=8)
    assert not local_model_current(local_step)
    local_model_bytes(step=local_step)
    assert TrainedModel.objects.count() == 2
    assert TrainedModel.objects.first().examples == 105
    assert local_model_current(local_step)


def test_while_another_worker_trains_the_current_model_keeps_serving(local_step):
    add_examples(local_step)
    old = local_model_bytes(step=local_step)
    add_examples(local_step, n_per_label=5, seed=8)
    n, last = 105, local_step.examples.order_by("-id").values_list("id", flat=True).first()
    cache.add(f"local-train:{local_step.pk}:{n}:{last}", 1, timeout=60)  # someone else trains
    assert local_model_bytes(step=local_step) == old
    assert TrainedModel.objects.count() == 1


def test_with_no_model_yet_and_another_worker_training_the_items_wait(local_step):
    add_examples(local_step)
    n, last = 90, local_step.examples.order_by("-id").values_list("id", flat=True).first()
    cache.add(f"local-train:{local_step.pk}:{n}:{last}", 1, timeout=60)
    with pytest.raises(ProviderLimitError, match="being trained"):
        local_model_bytes(step=local_step)
    [item] = submit(local_step.pipeline, "refund my invoice")
    engine_run_batch(worker="w")
    item.refresh_from_db()
    assert item.status == Item.Status.WAITING_RETRY and item.error_class == "provider_limit"
    assert Pipeline.objects.get().status == Pipeline.Status.ACTIVE  # not paused: just waiting


def test_too_few_examples_is_a_configuration_error(local_step):
    Example.objects.create(step=local_step, data={"text": "x"}, expected={"label": "bug"})
    with pytest.raises(ConfigurationError, match="add at least 10"):
        local_model_bytes(step=local_step)


def test_the_schedule_trains_only_steps_whose_examples_changed_and_keeps_a_short_history(
    local_step,
):
    add_examples(local_step)
    assert local_models_refresh() == 1
    assert local_models_refresh() == 0
    for seed in range(KEEP + 1):
        add_examples(local_step, n_per_label=2, seed=100 + seed)
        assert local_models_refresh() == 1
    assert TrainedModel.objects.count() == KEEP
    assert local_model_current(local_step)
