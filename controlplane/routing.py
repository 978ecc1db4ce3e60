"""Websocket routes of every app, gathered in one list for the ASGI router."""

from __future__ import annotations

from django.urls import path

from controlplane.monitoring.consumers import DashboardConsumer
from controlplane.rollouts_live import RolloutConsumer
from review.consumers import ReviewQueueConsumer

websocket_urlpatterns: list = [
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
    path("ws/review/", ReviewQueueConsumer.as_asgi()),
    path("ws/rollouts/<int:pk>/", RolloutConsumer.as_asgi()),
]
