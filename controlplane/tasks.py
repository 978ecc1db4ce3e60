"""django-q2 entry points of the ground layer: thin, take ids, call one service."""

from __future__ import annotations

import os
import socket

from django.conf import settings

from controlplane.services import heartbeat_record


def heartbeat_task() -> str:
    heartbeat = heartbeat_record(
        host=socket.gethostname(), cluster=settings.Q_CLUSTER["name"], pid=os.getpid()
    )
    return f"{heartbeat.cluster}@{heartbeat.host}"
