"""The review queue page's live region (counts per queue and the waiting tasks), rendered for
the page and pushed to its websocket viewers by one ticker per web process.

Viewers are grouped by user: each tick reads `queue_counts_list` once per connected user
(however many tabs they have open) and, only when that user's counts changed since the last
tick, renders the region once and sends the same text to each of their sockets. Idle viewers
cost one aggregate query per user and tick; a reviewer only ever receives their own queues.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.template.loader import render_to_string

from controlplane.roles import Role, role_of
from controlplane.ticking import TickLoop, Viewer
from review.selectors import queue_assignee_lists, queue_counts_list, task_open_list_for_user

logger = logging.getLogger(__name__)

TICK_SECONDS = 2.0
LIVE_TEMPLATE = "review/queue.html#queue-live"


def _counts_payload(counts) -> list[dict[str, Any]]:
    return [
        {
            "queue": c.queue.pk,
            "name": c.queue.name,
            "open": c.open,
            "claimed": c.claimed,
            "overdue": c.overdue,
        }
        for c in counts
    ]


def queue_page_context(*, user, counts=None) -> dict[str, Any]:
    """What the live region of the queue page shows to `user`."""
    role = role_of(user)
    counts = queue_counts_list(user=user) if counts is None else counts
    tasks = list(task_open_list_for_user(user=user))
    operator = role == Role.OPERATOR
    assignees = queue_assignee_lists(queue_ids=[c.queue.pk for c in counts]) if operator else {}
    for task in tasks:
        task.assignee_choices = assignees.get(task.queue_id, [])
    return {
        "user": user,
        "user_role": role.value if role else "",
        "counts": counts,
        "tasks": tasks,
        "waiting": sum(c.open for c in counts),
    }


@dataclass
class _Watch:
    user: Any
    viewers: set
    signature: tuple | None = None


def _signature(counts) -> tuple:
    return tuple((c.queue.pk, c.open, c.claimed, c.overdue, c.fingerprint) for c in counts)


class QueueTicker(TickLoop):
    """One per web process: the queue page's viewers, grouped by user (see above)."""

    label = "review queue"

    def __init__(self, *, interval: float = TICK_SECONDS) -> None:
        self.interval = interval
        self.watches: dict[int, _Watch] = {}
        self.task: asyncio.Task | None = None

    async def subscribe(self, viewer: Viewer, user) -> None:
        """Send the viewer the region as it is now, then whenever it changes."""
        self.unsubscribe(viewer)
        text, signature = await database_sync_to_async(self.render)(user)
        await viewer.send(text_data=text)
        # A user's other tabs keep the signature of what they were last sent.
        watch = self.watches.setdefault(
            user.pk, _Watch(user=user, viewers=set(), signature=signature)
        )
        watch.viewers.add(viewer)
        self.ensure_running()

    def unsubscribe(self, viewer: Viewer) -> None:
        for user_id, watch in list(self.watches.items()):
            watch.viewers.discard(viewer)
            if not watch.viewers:
                del self.watches[user_id]

    def watched(self) -> bool:
        return bool(self.watches)

    async def tick(self) -> None:
        watches = list(self.watches.values())
        if not watches:
            return
        texts = await database_sync_to_async(self.read)(watches)
        await self.send_all(
            (viewer, text)
            for watch, text in zip(watches, texts, strict=True)
            if text is not None
            for viewer in list(watch.viewers)
        )

    # --- reading (in a database thread) -----------------------------------------------------

    def render(self, user, counts=None) -> tuple[str, tuple]:
        counts = queue_counts_list(user=user) if counts is None else counts
        context = queue_page_context(user=user, counts=counts)
        message = {
            "type": "queue",
            "counts": _counts_payload(counts),
            "html": render_to_string(LIVE_TEMPLATE, context),
        }
        return json.dumps(message), _signature(counts)

    def read(self, watches: list[_Watch]) -> list[str | None]:
        """Per user: their counts, and the region rendered again only when they changed."""
        texts: list[str | None] = []
        for watch in watches:
            counts = queue_counts_list(user=watch.user)
            signature = _signature(counts)
            if signature == watch.signature:
                texts.append(None)
                continue
            text, watch.signature = self.render(watch.user, counts)
            texts.append(text)
        return texts


# The process's one ticker: every review queue websocket of this process subscribes here.
ticker = QueueTicker()
