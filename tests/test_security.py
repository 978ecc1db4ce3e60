from __future__ import annotations

import re

import pytest
from django.template.loader import render_to_string
from django.urls import reverse

from tests.conftest import login


def test_pages_carry_a_strict_content_security_policy(world):
    response = login(world["operator"]).get(reverse("pipeline-list"))
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    script_src = re.search(r"script-src ([^;]+)", csp).group(1)
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    assert "frame-ancestors 'none'" in csp


def test_pages_load_no_inline_script_and_nothing_from_another_host(world):
    for name in ("pipeline-list", "client-list", "person-list", "system-status", "review-queue"):
        html = login(world["operator"]).get(reverse(name)).content.decode()
        for tag in re.findall(r"<script[^>]*>", html):
            assert 'src="/static/' in tag, tag
        assert "http://" not in html.replace("http://127.0.0.1", "")
        assert "https://" not in html


def test_htmx_requests_carry_the_csrf_token(world):
    html = login(world["operator"]).get(reverse("client-list")).content.decode()
    assert re.search(r"hx-headers='\{\"X-CSRFToken\": \"[A-Za-z0-9]+\"\}'", html)


def test_forms_refuse_a_post_without_csrf_token(operator):
    from django.test import Client as HttpClient

    http = HttpClient(enforce_csrf_checks=True)
    http.force_login(operator)
    response = http.post(reverse("client-list"), {"name": "X", "slug": "x"})
    assert response.status_code == 403


def test_the_server_error_page_stands_alone_in_the_same_look():
    html = render_to_string("500.html")
    assert "Something went wrong" in html
    assert "/static/css/app.css" in html


def test_static_assets_are_vendored_and_served(client):
    for path in (
        "/static/vendor/htmx/htmx.min.js",
        "/static/vendor/plotly/plotly.min.js",
        "/static/vendor/pico/pico.min.css",
        "/static/css/app.css",
        "/static/img/favicon.svg",
    ):
        response = client.get(path)
        assert response.status_code == 200, path


def test_the_admin_lists_every_model_of_sluice(operator):
    from django.apps import apps
    from django.contrib import admin

    ours = [
        model
        for app in ("controlplane", "pipelines", "review")
        for model in apps.get_app_config(app).get_models()
    ]
    missing = [model.__name__ for model in ours if model not in admin.site._registry]
    assert not missing
    response = login(operator).get(reverse("admin:pipelines_promptversion_changelist"))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/pipelines/acme/triage/?before=%C2%B2",
        "/audit/?before=%C2%B2",
        "/pipelines/acme/triage/?before=99999999999999999999999",
    ],
)
def test_odd_ids_in_query_strings_are_ignored_not_500(world, url):
    assert login(world["operator"]).get(url).status_code == 200


def test_odd_ids_in_forms_are_refused_not_500(world):
    http = login(world["operator"])
    step = world["acme_step"].pk
    assert http.post(f"/steps/{step}/examples/delete/", {"ids": ["²", "9" * 25]}).status_code == 302
    assert http.post("/clients/acme/keys/", {"revoke": "²"}).status_code == 404
    assert http.get(f"/steps/{step}/threshold/", {"target": "nan"}).status_code == 200


def test_operators_read_the_admin_but_cannot_change_through_it(world):
    http = login(world["operator"])
    item = world["acme_item"]
    page = http.get(f"/admin/pipelines/item/{item.pk}/change/")
    assert page.status_code == 200
    response = http.post(f"/admin/pipelines/item/{item.pk}/change/", {"status": "accepted"})
    assert response.status_code == 403
    item.refresh_from_db()
    assert item.status == "queued"


def test_a_request_larger_than_the_upload_limit_is_refused_before_it_is_read(world, settings):
    settings.SLUICE_MAX_UPLOAD_BYTES = 2048
    from django.core.files.uploadedfile import SimpleUploadedFile

    http = login(world["operator"])
    response = http.post(
        f"/steps/{world['acme_step'].pk}/examples/",
        {"file": SimpleUploadedFile("big.csv", b"text,label\n" + b"x,bug\n" * 1000)},
    )
    assert response.status_code == 413
    assert b"too large" in response.content
    api = http.post(
        "/api/v1/pipelines/triage/items", data="x" * 5000, content_type="application/json"
    )
    assert api.status_code == 413 and api.json()["code"] == "too_large"
