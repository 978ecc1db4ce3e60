"""The review queue page's websocket: authenticate from the session, allow operators and
reviewers, hand the socket to the process's queue ticker. Nothing here writes.

Protocol (JSON text frames, server to page only): ``{"type": "queue", "counts": [{"queue": id,
"name": …, "open": n, "claimed": n, "overdue": n}, …], "html": "<the page's live region>"}``,
once on connect and again whenever the user's counts change. Close codes: 4401 not signed in,
4403 a role that does not review.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from controlplane.roles import Role, role_of
from review.live import ticker

NOT_SIGNED_IN = 4401
FORBIDDEN = 4403
REVIEW_ROLES = (Role.OPERATOR, Role.REVIEWER)


class ReviewQueueConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_SIGNED_IN)
            return
        if await database_sync_to_async(role_of)(user) not in REVIEW_ROLES:
            await self.close(code=FORBIDDEN)
            return
        await self.accept()
        await ticker.subscribe(self, user)

    async def disconnect(self, code: int) -> None:
        ticker.unsubscribe(self)
