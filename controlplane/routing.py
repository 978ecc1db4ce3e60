"""Websocket routes of every app, gathered in one list for the ASGI router."""

from __future__ import annotations

websocket_urlpatterns: list = []
