from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from controlplane.models import Client
from pipelines.models import Item, Pipeline

PASSWORD = "correct horse battery staple"


class ClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Client
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Client {n}")
    slug = factory.Sequence(lambda n: f"client-{n}")


class PipelineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pipeline

    client = factory.SubFactory(ClientFactory)
    name = factory.Sequence(lambda n: f"Pipeline {n}")
    slug = factory.Sequence(lambda n: f"pipeline-{n}")
    status = Pipeline.Status.ACTIVE


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item

    pipeline = factory.SubFactory(PipelineFactory)
    data = factory.Sequence(lambda n: {"text": f"item text {n}"})


def make_user(username: str, *, role, clients=()):
    """A user through the same service operators use, so roles and memberships are real."""
    from controlplane.services import user_create

    user = user_create(username=username, password=PASSWORD, role=role, clients=clients)
    return get_user_model().objects.get(pk=user.pk)
