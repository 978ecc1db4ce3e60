"""POST many requests at once over kept-alive connections: what webhook delivery needs.

The standard library's http.client in a few threads, each keeping one connection per origin:
on loopback it sends several thousand small POSTs a second where an asyncio pool spent most of
its time bookkeeping. No ORM here.
"""

from __future__ import annotations

import http.client
import queue
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

# A receiver's answer is only its status; its body is read (to keep the connection) up to this.
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Post:
    url: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Answer:
    """`error` is empty when the endpoint answered 2xx; `status` is None when it never answered."""

    error: str
    status: int | None = None


def post_all(posts: Sequence[Post], *, timeout: float, concurrency: int) -> list[Answer]:
    """Send every POST, at most `concurrency` at once; answers in the order of `posts`. An
    origin that timed out is not tried again in this call: its other posts get the same error
    instead of each waiting out the timeout."""
    answers: list[Answer | None] = [None] * len(posts)
    # Posts to one origin follow each other, so a thread reuses its connection.
    order = sorted(range(len(posts)), key=lambda i: _origin(posts[i].url))
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in order:
        todo.put(index)
    timed_out: dict[tuple[str, str], str] = {}

    def work() -> None:
        connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        try:
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                post = posts[index]
                origin = _origin(post.url)
                if origin in timed_out:
                    answers[index] = Answer(timed_out[origin])
                    continue
                answers[index] = _send(post, origin, connections, timeout, timed_out)
        finally:
            for connection in connections.values():
                connection.close()

    threads = [
        threading.Thread(target=work, name=f"post-{n}", daemon=True)
        for n in range(max(1, min(concurrency, len(posts))))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [answer or Answer("not sent") for answer in answers]


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _send(
    post: Post,
    origin: tuple[str, str],
    connections: dict[tuple[str, str], http.client.HTTPConnection],
    timeout: float,
    timed_out: dict[tuple[str, str], str],
) -> Answer:
    parts = urlsplit(post.url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    # A kept-alive connection the server has since closed fails on first use: one fresh try.
    for attempt in range(2):
        reused = origin in connections
        connection = connections.get(origin) or _connect(origin, timeout)
        connections[origin] = connection
        try:
            connection.request("POST", target, body=post.body, headers=dict(post.headers))
            response = connection.getresponse()
            response.read(MAX_RESPONSE_BYTES)
            if not response.isclosed():
                # A longer body than we read: this connection cannot carry the next request.
                connection.close()
                del connections[origin]
            if 200 <= response.status < 300:
                return Answer("", response.status)
            return Answer(f"the endpoint answered {response.status}", response.status)
        except TimeoutError as exc:
            connection.close()
            connections.pop(origin, None)
            timed_out[origin] = error = f"timed out after {timeout:g} s: {exc}"[:500]
            return Answer(error)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            connections.pop(origin, None)
            if (
                reused
                and attempt == 0
                and isinstance(
                    exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
                )
            ):
                continue
            return Answer(f"{type(exc).__name__}: {exc}"[:500])
    raise AssertionError("unreachable")


def _connect(origin: tuple[str, str], timeout: float) -> http.client.HTTPConnection:
    scheme, netloc = origin
    if scheme == "https":
        return http.client.HTTPSConnection(
            netloc, timeout=timeout, context=ssl.create_default_context()
        )
    return http.client.HTTPConnection(netloc, timeout=timeout)
