"""The local provider: a real scikit-learn classifier trained on generated support tickets."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sklearn

from pipelines.providers import (
    CallRequest,
    ConfigurationError,
    InputError,
    ProviderSettings,
    provider_for,
)
from pipelines.providers.local import (
    LocalProvider,
    local_cross_validated,
    local_load,
    local_train,
)


def run[T](coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own: the browser tests' Playwright keeps an event loop
    running in the main thread for the whole session, and asyncio.run will not nest in it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


TOPICS = {
    "billing": ["invoice", "refund", "payment", "credit card", "subscription fee", "receipt"],
    "shipping": ["parcel", "delivery", "tracking number", "courier", "shipment", "package"],
    "account": ["password", "login", "username", "two-factor code", "email address", "profile"],
}
TRAINING_TEMPLATES = [
    "I have a question about my {}.",
    "Problem with the {} again",
    "Can you help with my {} please?",
    "Why is my {} wrong?",
    "The {} is not working for me",
    "Something is off with the {}",
]
# Sentences the model never saw, around the topic words it did.
HELD_OUT_TEMPLATES = ["Urgent: {} issue, reply soon", "hello, about the {} from yesterday"]


def dataset(*, per_topic: int = 20, seed: int = 7) -> tuple[list[str], list[str]]:
    # Every topic word appears in training (cycling through them); the sentence around it is
    # drawn at random.
    rng = random.Random(seed)
    texts, labels = [], []
    for label, words in TOPICS.items():
        for i in range(per_topic):
            texts.append(rng.choice(TRAINING_TEMPLATES).format(words[i % len(words)]))
            labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    texts, labels = dataset()
    return local_train(texts=texts, labels=labels)


def classify(provider: LocalProvider, text: str, labels: tuple[str, ...] | None = None):
    request = CallRequest(
        prompt="Classify this ticket.",
        model="tfidf-logreg",
        labels=tuple(TOPICS) if labels is None else labels,
        input_text=text,
    )
    return run(provider.call(request))


def local_provider(model_bytes: bytes) -> LocalProvider:
    provider = provider_for(
        kind="local", settings=ProviderSettings(kind="local"), local_model_bytes=model_bytes
    )
    assert isinstance(provider, LocalProvider)
    return provider


@pytest.mark.parametrize("template", HELD_OUT_TEMPLATES)
@pytest.mark.parametrize("label", TOPICS)
def test_it_labels_unseen_sentences_of_each_topic_right_and_confidently(
    model_bytes, label, template
):
    model = local_load(model_bytes)
    for word in TOPICS[label]:
        probabilities = model.probabilities(template.format(word))
        best = max(probabilities, key=probabilities.__getitem__)
        assert best == label, (word, probabilities)
        assert probabilities[best] > 0.5, (word, probabilities)


def test_the_probabilities_of_the_trained_labels_sum_to_one(model_bytes):
    model = local_load(model_bytes)
    probabilities = model.probabilities("my refund never arrived")
    assert set(probabilities) == set(TOPICS)
    assert math.isclose(sum(probabilities.values()), 1.0)
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())


def test_a_model_round_trips_through_bytes_with_the_same_answers(model_bytes):
    first, second = local_load(model_bytes), local_load(bytes(model_bytes))
    for text in ["where is my parcel", "reset my password", "double charged on the invoice"]:
        assert first.probabilities(text) == second.probabilities(text)
    assert first.labels == ("account", "billing", "shipping")
    assert first.examples == 60


def test_twenty_examples_a_label_are_enough_for_calibrated_probabilities(model_bytes):
    assert local_load(model_bytes).calibrated


def test_a_few_examples_a_label_use_the_plain_regression_probabilities():
    texts, labels = dataset(per_topic=6)
    model = local_load(local_train(texts=texts, labels=labels))
    assert not model.calibrated
    probabilities = model.probabilities("the courier lost the parcel")
    assert max(probabilities, key=probabilities.__getitem__) == "shipping"


def test_the_provider_answers_with_the_label_and_its_probability(model_bytes):
    provider = local_provider(model_bytes)
    text = "Urgent: tracking number issue, reply soon"
    result = classify(provider, text)
    probabilities = local_load(model_bytes).probabilities(text)
    assert result.output == {"label": "shipping"}
    assert result.confidence == pytest.approx(probabilities["shipping"])
    assert (result.input_tokens, result.output_tokens) == (len(text.split()), 1)
    assert result.latency_ms >= 0
    assert not result.simulated
    assert json.loads(result.raw)["probabilities"]["shipping"] == pytest.approx(result.confidence)


def test_calls_made_together_are_predicted_in_one_batch_with_the_same_answers(
    model_bytes, monkeypatch
):
    provider = local_provider(model_bytes)
    batches: list[int] = []
    predict = provider.model.probabilities_many

    def counted(texts):
        batches.append(len(texts))
        return predict(texts)

    monkeypatch.setattr(type(provider.model), "probabilities_many", lambda self, t: counted(t))
    texts = [f"{word} question number {n}" for n in range(40) for word in ("refund", "parcel")]

    async def all_at_once():
        return await asyncio.gather(
            *(
                provider.call(CallRequest(prompt="", model="m", labels=(), input_text=t))
                for t in texts
            )
        )

    results = run(all_at_once())
    assert batches == [80]
    single = local_load(model_bytes)
    for text, result in zip(texts, results, strict=True):
        assert result.confidence == pytest.approx(max(single.probabilities(text).values()))


def test_the_provider_only_answers_labels_the_step_still_has(model_bytes):
    provider = local_provider(model_bytes)
    text = "Urgent: tracking number issue, reply soon"
    result = classify(provider, text, labels=("billing", "account"))
    probabilities = local_load(model_bytes).probabilities(text)
    assert result.output["label"] in ("billing", "account")
    # The retired label's probability mass is not handed to the others.
    assert result.confidence == pytest.approx(probabilities[result.output["label"]])
    assert result.confidence < 0.5


def test_a_step_whose_labels_the_model_never_learned_must_retrain(model_bytes):
    with pytest.raises(ConfigurationError, match="retrain"):
        classify(local_provider(model_bytes), "where is my parcel", labels=("spam", "ham"))


def test_an_empty_text_is_an_input_error(model_bytes):
    with pytest.raises(InputError, match="empty"):
        classify(local_provider(model_bytes), "   ")


def test_a_generate_step_cannot_run_on_the_local_model(model_bytes):
    request = CallRequest(prompt="Summarise", model="tfidf-logreg", input_text="a parcel")
    with pytest.raises(ConfigurationError, match="only classifies"):
        run(local_provider(model_bytes).call(request))


def test_a_step_with_no_trained_model_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="no trained local model"):
        provider_for(kind="local", settings=ProviderSettings(kind="local"))


def test_cross_validation_predicts_every_example_out_of_fold():
    texts, labels = dataset()
    outcomes = local_cross_validated(texts=texts, labels=labels)
    assert len(outcomes) == len(texts)
    assert [truth for truth, _, _ in outcomes] == labels
    assert {predicted for _, predicted, _ in outcomes} <= set(TOPICS)
    assert all(0.0 <= confidence <= 1.0 for _, _, confidence in outcomes)
    correct = sum(truth == predicted for truth, predicted, _ in outcomes)
    assert correct / len(outcomes) > 0.8


def test_cross_validation_copes_with_a_label_seen_only_once():
    texts, labels = dataset(per_topic=6)
    texts.append("my cat walked across the keyboard")
    labels.append("other")
    outcomes = local_cross_validated(texts=texts, labels=labels, folds=5)
    assert len(outcomes) == len(texts)
    # No training fold saw "other", so its one example cannot be predicted right.
    truth, predicted, _ = outcomes[-1]
    assert (truth, predicted != "other") == ("other", True)


def test_training_on_one_label_is_an_input_error():
    with pytest.raises(InputError, match=r'at least 2 labels.*"billing"'):
        local_train(texts=["refund please", "invoice wrong"], labels=["billing", "billing"])


def test_training_on_one_example_is_an_input_error():
    with pytest.raises(InputError, match="at least 2 labeled examples; there is 1"):
        local_train(texts=["refund please"], labels=["billing"])


def test_texts_and_labels_that_do_not_pair_up_are_an_input_error():
    with pytest.raises(InputError, match="3 texts but 2 labels"):
        local_train(texts=["a b", "c d", "e f"], labels=["x", "y"])


def test_bytes_sluice_did_not_write_are_refused():
    with pytest.raises(ConfigurationError, match="not one Sluice trained"):
        local_load(b"\x80\x04 anything at all")


def test_a_model_from_another_scikit_learn_release_must_be_retrained(model_bytes):
    magic, header, payload = model_bytes.split(b"\n", 2)
    stale = json.loads(header) | {"sklearn": "0.24.2"}
    data = b"\n".join([magic, json.dumps(stale).encode(), payload])
    with pytest.raises(
        ConfigurationError, match=f"0.24.2 and this process runs {sklearn.__version__}"
    ):
        local_load(data)
