"""The threshold tool: evidence from cross-validated local-model predictions on examples."""

from __future__ import annotations

import json
import random

from django.urls import reverse

from controlplane.models import AuditEntry
from pipelines.models import Example
from tests.conftest import login

WORDS = {
    "billing": ["invoice", "charged", "refund", "payment", "price"],
    "bug": ["crash", "error", "broken", "freezes", "button"],
    "account": ["password", "email", "login", "profile", "username"],
}


def add_examples(step, n_per_label: int = 30, seed: int = 7) -> None:
    rng = random.Random(seed)
    rows = []
    for label, words in WORDS.items():
        for _ in range(n_per_label):
            noise = rng.choice(["please help", "asap", "hello team", "thanks", ""])
            text = f"{rng.choice(words)} {rng.choice(words)} {noise}".strip()
            rows.append(Example(step=step, data={"text": text}, expected={"label": label}))
    Example.objects.bulk_create(rows)


def test_the_tool_asks_for_examples_first(operator, acme_step):
    html = login(operator).get(reverse("step-threshold", args=[acme_step.pk])).content.decode()
    assert "Upload at least 10 labeled examples (this step has 0)" in html
    assert "data-plotly" not in html


def test_the_tool_draws_the_curve_and_suggests_a_threshold(operator, acme_step):
    add_examples(acme_step)
    response = login(operator).get(reverse("step-threshold", args=[acme_step.pk]), {"target": "5"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Cross-validated predictions of the local model on 90 labeled examples" in html
    figure = json.loads(response.context["figure"] and json.dumps(response.context["figure"]))
    assert [trace["name"] for trace in figure["data"]] == [
        "Auto-accepted share",
        "Accuracy of auto-accepted",
    ]
    suggestion = response.context["suggestion"]
    assert suggestion is not None and suggestion.error_rate <= 0.05
    assert 'id="threshold-figure"' in html


def test_applying_the_suggestion_updates_the_step_and_is_audited(operator, acme_step):
    response = login(operator).post(
        reverse("step-threshold", args=[acme_step.pk]), {"threshold": "0.65"}
    )
    assert response.status_code == 302
    acme_step.refresh_from_db()
    assert str(acme_step.confidence_threshold) == "0.650"
    entry = AuditEntry.objects.get(action="step.update")
    assert entry.after == {"confidence_threshold": "0.650"}


def test_a_threshold_outside_zero_to_one_is_refused(operator, acme_step):
    http = login(operator)
    response = http.post(reverse("step-threshold", args=[acme_step.pk]), {"threshold": "7"})
    assert response.status_code == 302
    acme_step.refresh_from_db()
    assert str(acme_step.confidence_threshold) == "0.800"
    page = http.get(reverse("step-threshold", args=[acme_step.pk])).content.decode()
    assert "The threshold must be a number between 0 and 1." in page
