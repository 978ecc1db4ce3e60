from __future__ import annotations

from django.test import Client as HttpClient
from django.urls import reverse


def test_healthz_answers_without_touching_anything(db):
    response = HttpClient().get(reverse("healthz"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_checks_database_migrations_and_broker(db, settings):
    response = HttpClient().get(reverse("readyz"))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["migrations"] == {"status": "ok"}
    assert body["checks"]["broker"]["kind"] == ("redis" if settings.REDIS_URL else "orm")


def test_readyz_is_503_with_the_reason_when_redis_is_unreachable(db, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = HttpClient().get(reverse("readyz"))
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker["status"] == "error"
    assert "ConnectionError" in broker["error"]
