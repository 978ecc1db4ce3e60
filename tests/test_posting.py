"""Posting many webhooks at once, against real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.posting import Post, post_all


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        with server.lock:
            server.bodies.append(body)
            server.connections.add(self.client_address)
        status = int(self.path.rsplit("/", 1)[-1]) if self.path[-3:].isdigit() else 204
        payload = b"x" * server.reply_bytes
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        if server.close_after_each:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        return None


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.lock = threading.Lock()
    httpd.bodies, httpd.connections = [], set()
    httpd.reply_bytes, httpd.close_after_each = 0, False
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_every_post_arrives_once_in_order_of_answers(server):
    posts = [Post(f"{server.url}/hook", f"{n}".encode(), {"X-N": str(n)}) for n in range(200)]
    answers = post_all(posts, timeout=5, concurrency=8)
    assert [a.status for a in answers] == [204] * 200
    assert all(a.error == "" for a in answers)
    assert sorted(server.bodies, key=int) == [f"{n}".encode() for n in range(200)]
    # Kept alive: far fewer connections than requests.
    assert len(server.connections) <= 8


def test_a_non_2xx_answer_is_an_error_with_its_status(server):
    answers = post_all([Post(f"{server.url}/hook/503", b"{}", {})], timeout=5, concurrency=2)
    assert answers[0].status == 503
    assert answers[0].error == "the endpoint answered 503"


def test_a_closed_connection_or_a_long_reply_is_not_reused_wrongly(server):
    server.close_after_each, server.reply_bytes = True, 100_000
    posts = [Post(f"{server.url}/hook", b"{}", {}) for _ in range(20)]
    answers = post_all(posts, timeout=5, concurrency=2)
    assert [a.status for a in answers] == [204] * 20
    assert len(server.bodies) == 20


def test_a_refused_connection_is_reported_not_raised():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    answers = post_all([Post(f"http://127.0.0.1:{port}/x", b"{}", {})], timeout=2, concurrency=1)
    assert answers[0].status is None
    assert "Connection refused" in answers[0].error


def test_an_origin_that_times_out_is_not_waited_on_for_each_post(server):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    accepted: list[socket.socket] = []

    def hold() -> None:  # accepts connections and never answers
        while True:
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                return

    threading.Thread(target=hold, daemon=True).start()
    try:
        slow_url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        posts = [Post(slow_url, b"{}", {}) for _ in range(10)]
        posts.append(Post(f"{server.url}/hook", b"{}", {}))
        answers = post_all(posts, timeout=0.5, concurrency=1)
    finally:
        silent.close()
        for connection in accepted:
            connection.close()
    assert all("timed out" in a.error for a in answers[:10])
    assert answers[10].status == 204
    # One connection waited out, not ten: the other nine were held without trying.
    assert len(accepted) == 1
