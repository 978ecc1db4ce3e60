from __future__ import annotations

from django.contrib.auth import get_user_model
from django.urls import reverse

from controlplane.models import AuditEntry, Client
from controlplane.roles import Role, role_of
from tests.conftest import login


def test_an_operator_creates_a_client_and_it_is_audited(operator):
    http = login(operator)
    response = http.post(reverse("client-list"), {"name": "Initech", "slug": "initech"})
    assert response.status_code == 302
    client = Client.objects.get(slug="initech")
    entry = AuditEntry.objects.get(action="client.create")
    assert entry.actor == operator
    assert entry.after["name"] == "Initech"
    assert entry.object_id == str(client.pk)
    assert b"Initech" in http.get(reverse("client-list")).content


def test_a_duplicate_client_is_refused_in_place_over_htmx(operator, acme):
    response = login(operator).post(
        reverse("client-list"),
        {"name": "ACME CORP", "slug": "acme"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 422
    html = response.content.decode()
    # Only the form partial comes back, with both field errors.
    assert html.lstrip().startswith('<article id="client-form">')
    assert "Client with this Slug already exists." in html
    assert Client.objects.filter(slug="acme").count() == 1
    assert not AuditEntry.objects.filter(action="client.create").exists()


def test_a_client_slug_must_be_a_slug(operator):
    response = login(operator).post(reverse("client-list"), {"name": "X", "slug": "no spaces!"})
    assert response.status_code == 422
    assert b"Enter a valid" in response.content


def test_an_operator_adds_a_reviewer_for_two_clients(operator, acme, globex):
    response = login(operator).post(
        reverse("person-list"),
        {
            "username": "rex",
            "password": "long enough passphrase 7",
            "role": "reviewer",
            "clients": [acme.pk, globex.pk],
        },
    )
    assert response.status_code == 302
    rex = get_user_model().objects.get(username="rex")
    assert role_of(rex) == Role.REVIEWER
    assert set(rex.memberships.values_list("client__slug", flat=True)) == {"acme", "globex"}
    assert not rex.is_staff


def test_a_client_user_needs_exactly_one_client(operator, acme, globex):
    response = login(operator).post(
        reverse("person-list"),
        {
            "username": "carl",
            "password": "long enough passphrase 7",
            "role": "client",
            "clients": [acme.pk, globex.pk],
        },
    )
    assert response.status_code == 422
    assert b"A client user belongs to exactly one client." in response.content
    assert not get_user_model().objects.filter(username="carl").exists()


def test_a_weak_password_and_a_taken_username_are_each_named(operator):
    response = login(operator).post(
        reverse("person-list"),
        {"username": "OLIVIA", "password": "123", "role": "operator"},
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "A user with this username already exists." in html
    assert "This password is too short." in html


def test_only_operators_can_create_clients_or_people(client_a, reviewer):
    for user in (client_a, reviewer):
        http = login(user)
        assert (
            http.post(reverse("client-list"), {"name": "Evil", "slug": "evil"}).status_code == 403
        )
        assert (
            http.post(
                reverse("person-list"),
                {"username": "evil", "password": "long enough passphrase 7", "role": "operator"},
            ).status_code
            == 403
        )
    assert not Client.objects.filter(slug="evil").exists()
    assert not get_user_model().objects.filter(username="evil").exists()


def test_a_successful_htmx_create_asks_the_browser_to_reload_the_page(operator):
    response = login(operator).post(
        reverse("client-list"), {"name": "Hooli", "slug": "hooli"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("client-list")
