"""The dashboards' websocket: authenticate from the session, authorise the subscription through
the pipeline selectors, hand the socket to the process's ticker. Nothing here writes.

Protocol (JSON text frames):
- the page sends ``{"action": "subscribe", "pipeline": "<client>/<pipeline>" or "", "range":
  "15m" | "1h" | "24h" | "7d"}``; an empty pipeline means the overview. Subscribing again (after a
  reconnect, or to another range) replaces the subscription.
- the server answers with one ``{"type": "snapshot", ...}`` holding the whole current window (the
  same charts and tiles the page renders), then sends ``{"type": "update", ...}`` every tick.
- close codes: 4401 not signed in, 4403 a role without dashboards, 4404 a pipeline the user may
  not see (or that does not exist), 4429 too many messages; a malformed message gets
  ``{"type": "error"}``.
- every message a client sends costs a token of its connection's bucket (MESSAGE_BURST tokens,
  refilled at MESSAGE_RATE per second): a page sends one subscription per (re)connect or range
  change, so only a misbehaving client runs out, and its socket is closed with 4429 before it
  can make the server read a snapshot per message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import Http404

from controlplane.monitoring.live import Subscription, dashboard_scope, range_name_of, ticker
from controlplane.roles import Role, role_of

NOT_SIGNED_IN = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
TOO_MANY = 4429
MESSAGE_BURST = 5
MESSAGE_RATE = 0.5
DASHBOARD_ROLES = (Role.OPERATOR, Role.CLIENT)


@dataclass
class TokenBucket:
    """Up to `burst` actions at once, then `rate` per second."""

    burst: float
    rate: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.updated = self.clock()

    def take(self) -> bool:
        """Spend one token if there is one; False when the bucket is empty."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _subscription(user, *, pipeline: str, range_name: str, role: Role) -> Subscription:
    client_slug, _, slug = pipeline.partition("/")
    if pipeline and not (client_slug and slug):
        raise Http404("No such pipeline")
    pipelines = dashboard_scope(user=user, client_slug=client_slug, slug=slug)
    return Subscription(
        pipeline_ids=tuple(sorted(p.pk for p in pipelines)),
        range_name=range_name_of(range_name),
        single=bool(pipeline),
        operations=role == Role.OPERATOR,
    )


class DashboardConsumer(AsyncWebsocketConsumer):
    role: Role | None = None
    bucket: TokenBucket | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_SIGNED_IN)
            return
        self.role = await database_sync_to_async(role_of)(user)
        if self.role not in DASHBOARD_ROLES:
            await self.close(code=FORBIDDEN)
            return
        self.bucket = TokenBucket(burst=MESSAGE_BURST, rate=MESSAGE_RATE)
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.bucket is None:
            return  # refused or closed already: frames still in flight are dropped
        if not self.bucket.take():
            self.bucket = None
            ticker.unsubscribe(self)
            await self.close(code=TOO_MANY)
            return
        try:
            message = json.loads(text_data or "")
            if not isinstance(message, dict) or message.get("action") != "subscribe":
                raise ValueError("expected {'action': 'subscribe', ...}")
            pipeline = str(message.get("pipeline") or "")
            range_name = str(message.get("range") or "")
        except ValueError as exc:
            await self.send(text_data=json.dumps({"type": "error", "reason": str(exc)}))
            return
        try:
            subscription = await database_sync_to_async(_subscription)(
                self.scope["user"], pipeline=pipeline, range_name=range_name, role=self.role
            )
        except Http404:
            ticker.unsubscribe(self)
            await self.close(code=NOT_FOUND)
            return
        await ticker.subscribe(self, subscription)

    async def disconnect(self, code: int) -> None:
        ticker.unsubscribe(self)
