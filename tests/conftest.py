"""Personas shared by every test: an operator, a reviewer of client A, a user of client A, a user
of client B, and a user with no role; client A and B each have a pipeline with items."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as HttpClient

from controlplane.roles import Role
from tests.factories import ClientFactory, ItemFactory, PipelineFactory, make_user


@pytest.fixture
def acme(db):
    return ClientFactory(slug="acme", name="Acme Corp")


@pytest.fixture
def globex(db):
    return ClientFactory(slug="globex", name="Globex")


@pytest.fixture
def acme_pipeline(acme):
    return PipelineFactory(client=acme, slug="triage", name="Ticket triage")


@pytest.fixture
def globex_pipeline(globex):
    return PipelineFactory(client=globex, slug="contracts", name="Contract review")


@pytest.fixture
def acme_item(acme_pipeline):
    return ItemFactory(pipeline=acme_pipeline, external_id="acme-1")


@pytest.fixture
def globex_item(globex_pipeline):
    return ItemFactory(pipeline=globex_pipeline, external_id="globex-1")


@pytest.fixture
def operator(db):
    return make_user("olivia", role=Role.OPERATOR)


@pytest.fixture
def reviewer(acme):
    return make_user("rita", role=Role.REVIEWER, clients=[acme])


@pytest.fixture
def client_a(acme):
    return make_user("alice", role=Role.CLIENT, clients=[acme])


@pytest.fixture
def client_b(globex):
    return make_user("bob", role=Role.CLIENT, clients=[globex])


@pytest.fixture
def no_role(db):
    return get_user_model().objects.create_user("nora", password="x-unused-password-1")


@pytest.fixture
def provider(db):
    from pipelines.services.configuration import aimodel_create, provider_create

    provider = provider_create(name="Local", kind="local", actor=None)
    aimodel_create(provider=provider, name="tfidf-logreg", actor=None)
    return provider


@pytest.fixture
def acme_step(acme_pipeline, operator):
    from pipelines.services.configuration import step_create

    return step_create(
        pipeline=acme_pipeline,
        name="Topic",
        slug="topic",
        kind="classify",
        labels=["billing", "bug", "account"],
        template="Classify this ticket: {{ text }}",
        actor=operator,
    )


@pytest.fixture
def example_import(acme_step, operator):
    from pipelines.models import ExampleImport

    return ExampleImport.objects.create(
        step=acme_step, filename="tickets.csv", content=b"", size=0, created_by=operator
    )


@pytest.fixture
def item_upload(acme_pipeline, operator):
    from pipelines.models import ItemUpload

    return ItemUpload.objects.create(
        pipeline=acme_pipeline, filename="items.csv", content=b"", size=0, created_by=operator
    )


@pytest.fixture
def world(
    acme_item,
    globex_item,
    operator,
    reviewer,
    client_a,
    client_b,
    no_role,
    acme_step,
    provider,
    example_import,
    item_upload,
):
    """Everything at once, keyed by persona name."""
    return {
        "example_import": example_import,
        "item_upload": item_upload,
        "acme_step": acme_step,
        "provider": provider,
        "operator": operator,
        "reviewer": reviewer,
        "client_a": client_a,
        "client_b": client_b,
        "no_role": no_role,
        "acme_item": acme_item,
        "globex_item": globex_item,
    }


def login(user) -> HttpClient:
    http = HttpClient()
    http.force_login(user)
    return http


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The production hasher is slow on purpose; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _forget_cached_state(settings):
    """Start each test with no login-throttle counts. The database cache is rolled back with the
    test; Redis is shared, so drop Sluice's own keys there (not the broker's or the channels')."""
    if settings.REDIS_URL:
        from django.core.cache import cache

        redis_client = cache._cache.get_client(None, write=True)
        keys = list(redis_client.scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:*"))
        if keys:
            redis_client.delete(*keys)
    yield
