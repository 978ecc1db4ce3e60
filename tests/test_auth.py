from __future__ import annotations

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from tests.conftest import login
from tests.factories import PASSWORD


def _nav(response) -> str:
    html = response.content.decode()
    start = html.index('data-testid="nav"')
    return html[start : html.index("</ul>", start)]


def test_a_user_signs_in_and_lands_on_their_role_page(client_a):
    http = HttpClient()
    response = http.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert http.get(reverse("home"))["Location"] == reverse("report-index")


def test_a_reviewer_lands_on_the_review_queue(reviewer):
    assert login(reviewer).get(reverse("home"))["Location"] == reverse("review-queue")


def test_a_wrong_password_is_refused_with_the_form_again(client_a):
    response = HttpClient().post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content


def test_login_is_throttled_after_repeated_failures(client_a, settings):
    settings.LOGIN_THROTTLE_ATTEMPTS = 3
    http = HttpClient()
    for _ in range(3):
        http.post(reverse("login"), {"username": "alice", "password": "wrong"})
    # Even the right password is refused while throttled.
    response = http.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed attempts" in response.content
    assert "_auth_user_id" not in http.session


def test_throttling_counts_per_username_not_only_per_address(client_a, settings):
    settings.LOGIN_THROTTLE_ATTEMPTS = 2
    for n in range(2):
        HttpClient(REMOTE_ADDR=f"10.0.0.{n}").post(
            reverse("login"), {"username": "ALICE", "password": "wrong"}
        )
    response = HttpClient(REMOTE_ADDR="10.0.0.9").post(
        reverse("login"), {"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 429


def test_logout_takes_a_post_and_ends_the_session(client_a):
    http = login(client_a)
    assert http.post(reverse("logout")).status_code == 302
    assert http.get(reverse("pipeline-list")).status_code == 302


def test_a_user_changes_their_password(client_a):
    http = login(client_a)
    response = http.post(
        reverse("password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a much better passphrase 42",
            "new_password2": "a much better passphrase 42",
        },
    )
    assert response.status_code == 302
    client_a.refresh_from_db()
    assert client_a.check_password("a much better passphrase 42")


def test_a_weak_new_password_is_refused_with_the_reason(client_a):
    response = login(client_a).post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": "123", "new_password2": "123"},
    )
    assert response.status_code == 200
    assert b"too short" in response.content


@pytest.mark.parametrize(
    ("persona", "shown", "hidden"),
    [
        (
            "operator",
            [
                "Pipelines",
                "Review",
                "Dead letters",
                "Providers",
                "Clients",
                "People",
                "Audit",
                "System",
            ],
            [],
        ),
        (
            "reviewer",
            ["Review"],
            ["Pipelines", "Providers", "Clients", "People", "Audit", "System"],
        ),
        (
            "client_a",
            ["Pipelines"],
            ["Review", "Providers", "Clients", "People", "Audit", "System"],
        ),
    ],
)
def test_the_navigation_shows_each_role_only_what_it_may_use(world, persona, shown, hidden):
    response = login(world[persona]).get(reverse("password_change"))
    nav = _nav(response)
    for label in shown:
        assert f">{label}</a>" in nav
    for label in hidden:
        assert f">{label}</a>" not in nav
