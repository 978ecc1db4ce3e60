"""How the REST API knows who is calling: `Authorization: Bearer <key>` of one client."""

from __future__ import annotations

from ninja.security import HttpBearer

from controlplane.models import ApiKey
from controlplane.services import api_key_authenticate


class ApiKeyAuth(HttpBearer):
    """Bearer auth by client API key; `request.auth` becomes the ApiKey (with its client)."""

    def authenticate(self, request, token: str) -> ApiKey | None:
        return api_key_authenticate(key=token)
