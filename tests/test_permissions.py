"""Who may open which page: every role against every page, allowed and forbidden.

The matrix must name every URL of the project (see the last test), so a new page cannot ship
without deciding who may use it. Namespaced URLs (the API's routes as each kind of key, the
admin's pages) are generated and checked the same way in tests/test_security_api.py.
"""

from __future__ import annotations

import pytest
from django.test import Client as HttpClient
from django.urls import get_resolver, reverse

from tests.conftest import login

PERSONAS = ("anonymous", "operator", "reviewer", "client_a", "client_b", "no_role")

OPERATOR_ONLY = {
    "anonymous": 302,
    "operator": 200,
    "reviewer": 403,
    "client_a": 403,
    "client_b": 403,
    "no_role": 403,
}

REVIEWING = {
    "anonymous": 302,
    "operator": 200,
    "reviewer": 200,
    "client_a": 403,
    "client_b": 403,
    "no_role": 403,
}


def _acme_review_task(w):
    """A held acme item's review task, in a queue the reviewer works."""
    from tests.factories import ItemFactory
    from tests.reviewing import hold, join

    join(w["acme_step"], w["reviewer"])
    return hold(ItemFactory(pipeline=w["acme_step"].pipeline), w["acme_step"])


def _acme_rollout(w):
    """A running rollout of a second prompt version of the acme step."""
    from pipelines.services.configuration import prompt_version_create
    from pipelines.services.rollouts import rollout_start

    step = w["acme_step"]
    version = prompt_version_create(step=step, template="v2 {{ text }}", actor=None)
    return rollout_start(step=step, candidate=version, actor=None)


def _acme_evaluation(w):
    from pipelines.models import Evaluation

    step = w["acme_step"]
    return Evaluation.objects.create(step=step, version=step.prompt_versions.get(), total=0)


# url name -> (how to build the URL from the world, {persona: expected status})
# 302 for anonymous means "sent to the login page".
MATRIX = {
    "home": (
        lambda w: reverse("home"),
        {
            "anonymous": 302,
            "operator": 302,
            "reviewer": 302,
            "client_a": 302,
            "client_b": 302,
            "no_role": 403,
        },
    ),
    "pipeline-list": (
        lambda w: reverse("pipeline-list"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 200,
            "client_b": 200,
            "no_role": 403,
        },
    ),
    "pipeline-detail": (
        lambda w: reverse("pipeline-detail", args=["acme", "triage"]),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 200,
            "client_b": 404,
            "no_role": 403,
        },
    ),
    "item-detail": (
        lambda w: reverse("item-detail", args=[w["acme_item"].pk]),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 200,
            "client_b": 404,
            "no_role": 403,
        },
    ),
    "pipeline-upload": (
        lambda w: reverse("pipeline-upload", args=["acme", "triage"]),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 200,
            "client_b": 404,
            "no_role": 403,
        },
    ),
    "pipeline-upload-status": (
        lambda w: reverse("pipeline-upload-status", args=["acme", "triage", w["item_upload"].pk]),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 200,
            "client_b": 404,
            "no_role": 403,
        },
    ),
    "pipeline-create": (lambda w: reverse("pipeline-create"), OPERATOR_ONLY),
    "pipeline-import": (lambda w: reverse("pipeline-import"), OPERATOR_ONLY),
    "pipeline-export": (
        lambda w: reverse("pipeline-export", args=["acme", "triage"]),
        OPERATOR_ONLY,
    ),
    "pipeline-settings": (
        lambda w: reverse("pipeline-settings", args=["acme", "triage"]),
        OPERATOR_ONLY,
    ),
    "step-create": (lambda w: reverse("step-create", args=["acme", "triage"]), OPERATOR_ONLY),
    "step-detail": (lambda w: reverse("step-detail", args=[w["acme_step"].pk]), OPERATOR_ONLY),
    "prompt-editor": (
        lambda w: reverse("prompt-editor", args=[w["acme_step"].pk]),
        OPERATOR_ONLY,
    ),
    "prompt-diff": (lambda w: reverse("prompt-diff", args=[w["acme_step"].pk]), OPERATOR_ONLY),
    # POST only: a GET is refused before anyone's role is looked at.
    "prompt-label": (
        lambda w: reverse("prompt-label", args=[w["acme_step"].pk, 1]),
        dict.fromkeys(PERSONAS, 405),
    ),
    "step-threshold": (
        lambda w: reverse("step-threshold", args=[w["acme_step"].pk]),
        OPERATOR_ONLY,
    ),
    "example-list": (lambda w: reverse("example-list", args=[w["acme_step"].pk]), OPERATOR_ONLY),
    # Rollouts and offline evaluations (see tests/test_rollouts_pages.py for other clients).
    "step-rollouts": (lambda w: reverse("step-rollouts", args=[w["acme_step"].pk]), OPERATOR_ONLY),
    "rollout-detail": (
        lambda w: reverse("rollout-detail", args=[_acme_rollout(w).pk]),
        OPERATOR_ONLY,
    ),
    # POST only (pause, resume, promote, roll back).
    "rollout-action": (
        lambda w: reverse("rollout-action", args=[1, "pause"]),
        dict.fromkeys(PERSONAS, 405),
    ),
    "step-evaluations": (
        lambda w: reverse("step-evaluations", args=[w["acme_step"].pk]),
        OPERATOR_ONLY,
    ),
    "evaluation-detail": (
        lambda w: reverse("evaluation-detail", args=[_acme_evaluation(w).pk]),
        OPERATOR_ONLY,
    ),
    "example-import": (
        lambda w: reverse("example-import", args=[w["acme_step"].pk, w["example_import"].pk]),
        OPERATOR_ONLY,
    ),
    "example-delete": (
        lambda w: reverse("example-delete", args=[w["acme_step"].pk]),
        dict.fromkeys(PERSONAS, 405),
    ),
    "prompt-try": (
        lambda w: reverse("prompt-try", args=[w["acme_step"].pk]),
        dict.fromkeys(PERSONAS, 405),
    ),
    "provider-list": (lambda w: reverse("provider-list"), OPERATOR_ONLY),
    "provider-detail": (
        lambda w: reverse("provider-detail", args=[w["provider"].pk]),
        OPERATOR_ONLY,
    ),
    # POST only (closing a breaker); see tests/test_breaker.py for who may.
    "provider-breaker-reset": (
        lambda w: reverse("provider-breaker-reset", args=[w["provider"].pk]),
        dict.fromkeys(PERSONAS, 405),
    ),
    "audit-list": (lambda w: reverse("audit-list"), OPERATOR_ONLY),
    "dashboard-overview": (
        lambda w: reverse("dashboard-overview"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 200,
            "client_b": 200,
            "no_role": 403,
        },
    ),
    "dashboard-pipeline": (
        lambda w: reverse("dashboard-pipeline", args=["acme", "triage"]),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 200,
            "client_b": 404,
            "no_role": 403,
        },
    ),
    # A client goes to its own report; operators get the list of clients.
    "report-index": (
        lambda w: reverse("report-index"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 302,
            "client_b": 302,
            "no_role": 403,
        },
    ),
    # Every report page and export of acme: another client's is a 404 (tests/test_reports.py).
    **{
        name: (
            build,
            {
                "anonymous": 302,
                "operator": 200,
                "reviewer": 403,
                "client_a": 200,
                "client_b": 404,
                "no_role": 403,
            },
        )
        for name, build in (
            ("report-client", lambda w: reverse("report-client", args=["acme"])),
            ("report-print", lambda w: reverse("report-print", args=["acme"])),
            ("report-pdf", lambda w: reverse("report-pdf", args=["acme"])),
            ("report-csv", lambda w: reverse("report-csv", args=["acme", "cost_model"])),
        )
    },
    "report-settings": (lambda w: reverse("report-settings", args=["acme"]), OPERATOR_ONLY),
    # POST only (see tests/test_reports.py for who may).
    "report-schedule-delete": (
        lambda w: reverse("report-schedule-delete", args=["acme", 1]),
        dict.fromkeys(PERSONAS, 405),
    ),
    "alert-list": (lambda w: reverse("alert-list"), OPERATOR_ONLY),
    "alert-banner": (lambda w: reverse("alert-banner"), OPERATOR_ONLY),
    # POST only (see tests/test_alerts_pages.py for who may).
    "alert-acknowledge": (
        lambda w: reverse("alert-acknowledge", args=[1]),
        dict.fromkeys(PERSONAS, 405),
    ),
    "alert-resolve": (
        lambda w: reverse("alert-resolve", args=[1]),
        dict.fromkeys(PERSONAS, 405),
    ),
    "alert-rule-list": (lambda w: reverse("alert-rule-list"), OPERATOR_ONLY),
    "alert-rule-pipeline": (
        lambda w: reverse("alert-rule-pipeline", args=["acme", "triage"]),
        OPERATOR_ONLY,
    ),
    "alert-rule-edit": (
        lambda w: reverse("alert-rule-edit", args=[w["acme_item"].pipeline.alert_rules.first().pk]),
        OPERATOR_ONLY,
    ),
    "alert-rule-create": (lambda w: reverse("alert-rule-create"), OPERATOR_ONLY),
    # GET asks for confirmation; the POST that deletes is in tests/test_alerts_pages.py.
    "alert-rule-delete": (
        lambda w: reverse(
            "alert-rule-delete", args=[w["acme_item"].pipeline.alert_rules.first().pk]
        ),
        OPERATOR_ONLY,
    ),
    # Scrapes authenticate with the metrics token, not a session; without a token configured
    # (as here) the endpoint does not exist. See tests/test_prometheus.py.
    "metrics": (lambda w: reverse("metrics"), dict.fromkeys(PERSONAS, 404)),
    "dead-letter-list": (lambda w: reverse("dead-letter-list"), OPERATOR_ONLY),
    "review-queue": (
        lambda w: reverse("review-queue"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 200,
            "client_a": 403,
            "client_b": 403,
            "no_role": 403,
        },
    ),
    # The review screen; see tests/test_review_pages.py for tasks of other clients (404).
    "review-start": (lambda w: reverse("review-start"), REVIEWING),
    "review-task": (lambda w: reverse("review-task", args=[_acme_review_task(w).pk]), REVIEWING),
    "review-queue-members": (
        lambda w: reverse("review-queue-members", args=[_acme_review_task(w).queue_id]),
        OPERATOR_ONLY,
    ),
    # POST only (see tests/test_review_pages.py for who may).
    **{
        name: (lambda w, name=name: reverse(name, args=[1]), dict.fromkeys(PERSONAS, 405))
        for name in (
            "review-task-claim",
            "review-task-decide",
            "review-task-release",
            "review-task-skip",
            "review-task-renew",
            "review-task-assign",
        )
    },
    "review-queue-member-remove": (
        lambda w: reverse("review-queue-member-remove", args=[1, 1]),
        dict.fromkeys(PERSONAS, 405),
    ),
    # Reviewers see the backlog of their own queues and their own statistics.
    "review-backlog": (
        lambda w: reverse("review-backlog"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 200,
            "client_a": 403,
            "client_b": 403,
            "no_role": 403,
        },
    ),
    "review-stats": (
        lambda w: reverse("review-stats"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 200,
            "client_a": 403,
            "client_b": 403,
            "no_role": 403,
        },
    ),
    "review-audit-threshold": (
        lambda w: reverse("review-audit-threshold", args=[w["acme_step"].pk]),
        OPERATOR_ONLY,
    ),
    "client-list": (
        lambda w: reverse("client-list"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 403,
            "client_b": 403,
            "no_role": 403,
        },
    ),
    "client-keys": (lambda w: reverse("client-keys", args=["acme"]), OPERATOR_ONLY),
    "person-list": (
        lambda w: reverse("person-list"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 403,
            "client_b": 403,
            "no_role": 403,
        },
    ),
    "system-status": (
        lambda w: reverse("system-status"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 403,
            "client_a": 403,
            "client_b": 403,
            "no_role": 403,
        },
    ),
    "password_change": (
        lambda w: reverse("password_change"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 200,
            "client_a": 200,
            "client_b": 200,
            "no_role": 200,
        },
    ),
    "password_change_done": (
        lambda w: reverse("password_change_done"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 200,
            "client_a": 200,
            "client_b": 200,
            "no_role": 200,
        },
    ),
    "login": (
        lambda w: reverse("login"),
        {
            "anonymous": 200,
            "operator": 302,
            "reviewer": 302,
            "client_a": 302,
            "client_b": 302,
            "no_role": 302,
        },
    ),
    # Logout only answers POST; GET is refused for everyone.
    "logout": (
        lambda w: reverse("logout"),
        dict.fromkeys(PERSONAS, 405),
    ),
    "healthz": (lambda w: reverse("healthz"), dict.fromkeys(PERSONAS, 200)),
    "readyz": (lambda w: reverse("readyz"), dict.fromkeys(PERSONAS, 200)),
    # The Django admin is for operators only (staff); everyone else is sent to its login.
    "admin:index": (
        lambda w: reverse("admin:index"),
        {
            "anonymous": 302,
            "operator": 200,
            "reviewer": 302,
            "client_a": 302,
            "client_b": 302,
            "no_role": 302,
        },
    ),
}

CASES = [(name, persona) for name in MATRIX for persona in PERSONAS]


@pytest.mark.parametrize(("url_name", "persona"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_each_role_gets_the_right_answer_on_each_page(world, url_name, persona):
    build, expected = MATRIX[url_name]
    http = HttpClient() if persona == "anonymous" else login(world[persona])
    url = build(world)
    response = http.get(url)
    assert response.status_code == expected[persona], (url, persona)
    if persona == "anonymous" and expected[persona] == 302 and url_name != "home":
        assert "login" in response["Location"]


def test_the_matrix_names_every_page_of_the_project():
    resolver = get_resolver()
    names = {key for key in resolver.reverse_dict if isinstance(key, str)}
    missing = names - set(MATRIX)
    assert not missing, f"pages without a permission row: {sorted(missing)}"


def test_forbidden_pages_use_the_sluice_error_page(world):
    response = login(world["client_a"]).get(reverse("client-list"))
    assert response.status_code == 403
    assert b"open this page" in response.content
    response = login(world["client_b"]).get(reverse("pipeline-detail", args=["acme", "triage"]))
    assert response.status_code == 404
    assert b"Nothing here" in response.content
