"""The rollout page's live region (status, guard table, sample and chart figures), pushed to
its websocket viewers by one ticker per web process.

Every tick (2 s) the ticker reads each watched rollout's comparison once, from the step rollups
(`rollout_page_context`: six queries a rollout and one for them all, however many people watch),
renders the page's live region once and, only when it changed since the last tick, sends that
same text to every viewer of the rollout. The page replaces its region with it and redraws the
charts in place (static/js/rollout.js).

Protocol (`/ws/rollouts/<id>/`, JSON text frames, server to page only): ``{"type": "rollout",
"status": "running" | "paused" | "promoted" | "rolled_back", "html": "<the live region>"}``,
once on connect and again whenever the region changes. Close codes: 4401 not signed in, 4403 not
an operator (the page is operators' only), 4404 a rollout that does not exist or that the user
may not see. Nothing here writes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import Http404
from django.template.loader import render_to_string

from controlplane.roles import Role, role_of
from controlplane.ticking import TickLoop, Viewer
from pipelines.models import Rollout
from pipelines.selectors import rollout_get_for_user
from pipelines.views.rollouts import LIVE_TEMPLATE, rollout_page_context

TICK_SECONDS = 2.0
NOT_SIGNED_IN = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404


def rollout_live_text(rollout: Rollout) -> str:
    """The message every viewer of `rollout` is sent: its live region, rendered once."""
    html = render_to_string(LIVE_TEMPLATE, rollout_page_context(rollout=rollout, websocket=True))
    return json.dumps({"type": "rollout", "status": rollout.status, "html": html})


def _rollouts(ids: Iterable[int]) -> list[Rollout]:
    return list(
        Rollout.objects.filter(pk__in=list(ids)).select_related(
            "step__pipeline__client", "candidate", "baseline"
        )
    )


class RolloutTicker(TickLoop):
    """One per web process: the viewers of each rollout, sent one shared text per change."""

    label = "rollout"

    def __init__(self, *, interval: float = TICK_SECONDS) -> None:
        self.interval = interval
        self.viewers: dict[int, set[Viewer]] = {}
        # Per rollout, the text its viewers were last sent.
        self.sent: dict[int, str] = {}
        self.task: asyncio.Task | None = None

    async def subscribe(self, viewer: Viewer, rollout_id: int) -> None:
        """Send the viewer the region as it is now, then whenever it changes."""
        self.unsubscribe(viewer)
        texts = await database_sync_to_async(self.read)([rollout_id])
        if rollout_id not in texts:
            return  # deleted meanwhile: nothing to watch
        await viewer.send(text_data=texts[rollout_id])
        # Viewers already there keep the text they were sent: the next tick brings them up to
        # date (and sends this one the same region once more, which changes nothing).
        self.sent.setdefault(rollout_id, texts[rollout_id])
        self.viewers.setdefault(rollout_id, set()).add(viewer)
        self.ensure_running()

    def unsubscribe(self, viewer: Viewer) -> None:
        """Stop sending to the viewer; the ticker stops by itself once nobody watches."""
        for rollout_id, viewers in list(self.viewers.items()):
            viewers.discard(viewer)
            if not viewers:
                del self.viewers[rollout_id]
                self.sent.pop(rollout_id, None)

    def watched(self) -> bool:
        return bool(self.viewers)

    def idle(self) -> None:
        self.sent.clear()

    async def tick(self) -> None:
        """One read per watched rollout; the same text to each of its viewers when it changed."""
        ids = list(self.viewers)
        if not ids:
            return
        texts = await database_sync_to_async(self.read)(ids)
        changed = {pk: text for pk, text in texts.items() if self.sent.get(pk) != text}
        for pk, text in changed.items():
            if pk in self.viewers:
                self.sent[pk] = text
        await self.send_all(
            (viewer, text)
            for pk, text in changed.items()
            for viewer in list(self.viewers.get(pk, ()))
        )

    def read(self, ids: Iterable[int]) -> dict[int, str]:
        """In a database thread: each rollout's message, by id (a deleted one is left out)."""
        return {rollout.pk: rollout_live_text(rollout) for rollout in _rollouts(ids)}


# The process's one ticker: every rollout websocket of this process subscribes here.
ticker = RolloutTicker()


def _rollout_visible(user, pk: int) -> bool:
    try:
        rollout_get_for_user(user=user, pk=pk)
    except Http404:
        return False
    return True


class RolloutConsumer(AsyncWebsocketConsumer):
    """Authenticate from the session, authorise through the rollout selector (operators only,
    like the page), hand the socket to the process's rollout ticker."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_SIGNED_IN)
            return
        if await database_sync_to_async(role_of)(user) != Role.OPERATOR:
            await self.close(code=FORBIDDEN)
            return
        pk = self.scope["url_route"]["kwargs"]["pk"]
        if not await database_sync_to_async(_rollout_visible)(user, pk):
            await self.close(code=NOT_FOUND)
            return
        await self.accept()
        await ticker.subscribe(self, pk)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page sends nothing; whatever arrives is dropped (it costs no read)."""

    async def disconnect(self, code: int) -> None:
        ticker.unsubscribe(self)
