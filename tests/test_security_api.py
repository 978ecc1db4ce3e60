"""Who may call which API operation, generated from the URL configuration like
tests/test_permissions.py does for pages: every route of the API is tried with no key, an
unknown key, a revoked key, a signed-in operator's session without a key, another client's key
and the owner's key. Plus: the admin's pages as each role, CSRF on every POST-only page, the
content security policy on every page and the API's docs, and the production deploy checks in
the scale-out mode."""

from __future__ import annotations

import json
import re
import secrets

import pytest
from django.test import Client as HttpClient
from django.urls import NoReverseMatch, get_resolver, reverse

from controlplane.models import ApiKey
from controlplane.services import api_key_create, api_key_revoke
from pipelines.models import Item
from tests.conftest import login
from tests.processes import embedded_env, manage
from tests.test_permissions import MATRIX, PERSONAS

KEY_PERSONAS = ("no_key", "unknown_key", "revoked_key", "session_only", "other_client", "owner")
DENIED = {"no_key": 401, "unknown_key": 401, "revoked_key": 401, "session_only": 401}
PUBLIC = dict.fromkeys(KEY_PERSONAS, 200)


def scoped(status: int, other: int) -> dict[str, int]:
    """The owner gets `status`; another client's key gets `other`; no valid key is 401."""
    return {**DENIED, "other_client": other, "owner": status}


# url name in the `api` namespace -> (method, path from the world, JSON body, {persona: status})
API_MATRIX = {
    "pipeline_list": ("get", lambda w: "/api/v1/pipelines", None, scoped(200, 200)),
    "items_create": (
        "post",
        lambda w: "/api/v1/pipelines/triage/items",
        {"items": [{"data": {"text": "new"}}]},
        scoped(202, 404),
    ),
    "item_get": ("get", lambda w: f"/api/v1/items/{w['acme_item'].pk}", None, scoped(200, 404)),
    "item_list": ("get", lambda w: "/api/v1/items", None, scoped(200, 200)),
    "item_ledger": (
        "get",
        lambda w: f"/api/v1/items/{w['acme_item'].pk}/ledger",
        None,
        scoped(200, 404),
    ),
    "dead_letter_list": ("get", lambda w: "/api/v1/dead-letters", None, scoped(200, 200)),
    # Another client's ids are skipped as not_found, exactly like ids that do not exist.
    "dead_letter_redrive": (
        "post",
        lambda w: "/api/v1/dead-letters/redrive",
        lambda w: {"ids": [w["acme_item"].pk], "dry_run": False},
        scoped(202, 202),
    ),
    # The document and the docs are public: they describe the API, not anyone's data.
    "openapi-json": ("get", lambda w: "/api/openapi.json", None, PUBLIC),
    "openapi-view": ("get", lambda w: "/api/docs", None, PUBLIC),
    # Ninja's root of the API namespace: nothing is served there.
    "api-root": ("get", lambda w: "/api/", None, dict.fromkeys(KEY_PERSONAS, 404)),
}


@pytest.fixture
def keys(world, acme, globex):
    owner = api_key_create(client=acme, name="owner", actor=None)[1]
    other = api_key_create(client=globex, name="other", actor=None)[1]
    revoked = api_key_create(client=acme, name="old", actor=None)[1]
    api_key_revoke(api_key=ApiKey.objects.get(name="old"), actor=None)
    return {"owner": owner, "other_client": other, "revoked_key": revoked}


def http_for(persona: str, keys: dict[str, str], world) -> HttpClient:
    if persona == "session_only":
        return login(world["operator"])
    key = {**keys, "unknown_key": "sk_sluice_" + secrets.token_urlsafe(32)}.get(persona)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return HttpClient(headers=headers)


API_CASES = [(name, persona) for name in API_MATRIX for persona in KEY_PERSONAS]


@pytest.mark.parametrize(("url_name", "persona"), API_CASES, ids=[f"{n}-{p}" for n, p in API_CASES])
def test_each_key_gets_the_right_answer_on_each_api_operation(world, keys, url_name, persona):
    method, build, body, expected = API_MATRIX[url_name]
    body = body(world) if callable(body) else body
    http = http_for(persona, keys, world)
    url = build(world)
    before = Item.objects.count()
    if method == "get":
        response = http.get(url)
    else:
        response = http.post(url, data=json.dumps(body), content_type="application/json")
    assert response.status_code == expected[persona], (url, persona, response.content[:300])
    if response.status_code == 401:
        assert response.json()["code"] == "unauthorized"
        assert response["WWW-Authenticate"] == "Bearer"
    if persona != "owner":
        # Nothing of acme's leaks to anyone but acme's key, and nothing is written for them.
        assert b"acme-1" not in response.content
        assert Item.objects.count() == before
        world["acme_item"].refresh_from_db()
        assert world["acme_item"].status == Item.Status.QUEUED


def test_the_api_matrix_names_every_route_of_the_api():
    _, api_patterns = get_resolver().namespace_dict["api"]
    names = {key for key in api_patterns.reverse_dict if isinstance(key, str)}
    assert names == set(API_MATRIX), f"API routes without a row: {sorted(names - set(API_MATRIX))}"


def test_every_namespace_of_the_url_configuration_has_its_own_permission_test():
    # Top-level names are in tests/test_permissions.py; `api` is above and `admin` below. A new
    # namespace must get a test of its own before it ships.
    assert set(get_resolver().namespace_dict) == {"api", "admin"}


def test_a_key_is_read_only_from_the_authorization_header(world, keys):
    owner = keys["owner"]
    assert HttpClient().get("/api/v1/pipelines", {"key": owner}).status_code == 401
    assert HttpClient().get("/api/v1/pipelines", {"api_key": owner}).status_code == 401
    cookie = HttpClient()
    cookie.cookies["Authorization"] = f"Bearer {owner}"
    assert cookie.get("/api/v1/pipelines").status_code == 401
    basic = HttpClient(headers={"Authorization": f"Basic {owner}"})
    assert basic.get("/api/v1/pipelines").status_code == 401


# --- The admin: generated from its URL configuration --------------------------------------------


def _admin_urls_without_arguments() -> list[str]:
    _, admin_patterns = get_resolver().namespace_dict["admin"]
    urls = []
    for name in sorted(key for key in admin_patterns.reverse_dict if isinstance(key, str)):
        try:
            urls.append(reverse(f"admin:{name}"))
        except NoReverseMatch:
            continue  # a page of one object: its model's list is tried instead
    return urls


ADMIN_URLS = _admin_urls_without_arguments()


def test_every_admin_page_sends_everyone_but_operators_to_the_admin_login(world):
    assert len(ADMIN_URLS) > 20
    others = [p for p in PERSONAS if p != "operator"]
    clients = {p: HttpClient() if p == "anonymous" else login(world[p]) for p in others}
    for url in ADMIN_URLS:
        if url.endswith("/logout/"):
            continue
        for persona, http in clients.items():
            response = http.get(url)
            if url.endswith("/login/"):
                assert response.status_code in (200, 302), (url, persona)
                continue
            assert response.status_code == 302, (url, persona, response.status_code)
            assert "/admin/login/" in response["Location"], (url, persona)


def test_operators_may_read_every_admin_list_but_add_none_of_sluices_rows(world):
    http = login(world["operator"])
    for url in ADMIN_URLS:
        if url.endswith(("/logout/", "/login/", "/autocomplete/")):
            continue
        response = http.get(url)
        ours = url.startswith(("/admin/controlplane/", "/admin/pipelines/", "/admin/review/"))
        if url.endswith("/add/"):
            assert response.status_code == 403 if ours else response.status_code in (200, 403), url
        else:
            assert response.status_code in (200, 302), (url, response.status_code)


# --- CSRF and CSP, on every page of the matrix ---------------------------------------------------

POST_ONLY = [name for name, (_, expected) in MATRIX.items() if set(expected.values()) == {405}]


@pytest.mark.parametrize("url_name", POST_ONLY)
def test_every_post_only_page_refuses_a_post_without_the_csrf_token(world, url_name):
    build, _ = MATRIX[url_name]
    url = build(world)
    http = HttpClient(enforce_csrf_checks=True)
    http.force_login(world["operator"])
    before = Item.objects.count()
    response = http.post(url, {})
    assert response.status_code == 403, (url, response.status_code)
    assert Item.objects.count() == before


def test_the_login_form_refuses_a_post_without_the_csrf_token(client_a):
    from tests.factories import PASSWORD

    http = HttpClient(enforce_csrf_checks=True)
    response = http.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403
    assert "_auth_user_id" not in http.session


OPERATOR_PAGES = [name for name, (_, expected) in MATRIX.items() if expected["operator"] == 200]


@pytest.mark.parametrize("url_name", OPERATOR_PAGES)
def test_every_page_an_operator_opens_carries_the_content_security_policy(world, url_name):
    build, _ = MATRIX[url_name]
    response = login(world["operator"]).get(build(world))
    assert response.status_code == 200
    if not response["Content-Type"].startswith("text/html"):
        return
    csp = response["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]+)", csp).group(1)
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    assert "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_the_api_docs_run_under_the_same_policy_with_no_inline_script(db):
    response = HttpClient().get("/api/docs")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    html = response.content.decode()
    for tag in re.findall(r"<script[^>]*>", html):
        # JSON in a script tag is data the page reads, not code the policy has to allow.
        assert "src=" in tag or 'type="application/json"' in tag, tag


# --- The production deploy checks in both modes --------------------------------------------------


def test_the_scale_out_production_settings_pass_the_deploy_checks(tmp_path):
    env = embedded_env(
        tmp_path,
        SLUICE_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="sluice.example.com",
        CSRF_TRUSTED_ORIGINS="https://sluice.example.com",
        DATABASE_URL="postgres://sluice:secret@db.example.com:5432/sluice",
        REDIS_URL="redis://redis.example.com:6379/0",
        SLUICE_METRICS_TOKEN=secrets.token_urlsafe(24),
    )
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
