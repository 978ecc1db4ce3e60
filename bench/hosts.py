"""Sluice over several hosts on one machine: PostgreSQL and Redis on a database host, the web
server on a web host and a worker cluster on each of two worker hosts, every host a network
namespace of its own joined by a bridge, as separate machines on one network would be. Items are
submitted through the public API; the run checks that the work spreads over both worker hosts,
then takes one worker host away at once (its network cut, then every process on it killed, as a
power loss would) and checks that every accepted item is still delivered, once.

    sudo .venv/bin/python -m bench.hosts              # 2,000 items, writes docs/resilience.md
    sudo .venv/bin/python -m bench.hosts --items 1200 --no-write

Needs root (namespaces, a bridge), iproute2, and PostgreSQL and Redis installed (`make services`
installs them); it starts its own servers inside the database host and removes every namespace,
link and process it made when it ends. Prints one JSON document; exits 1 when an item was lost.

PostgreSQL settings that matter here: a host that vanishes never closes its connections, so
without TCP keepalives and `idle_in_transaction_session_timeout` a transaction it had open keeps
its row locks for hours. The database host runs with both, as docs/deploy.md advises.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.report import ROOT, section_write

RESILIENCE = ROOT / "docs" / "resilience.md"

PREFIX = "slh"
BRIDGE = f"{PREFIX}-br0"
SUBNET = "10.231.7"
# The driver (this process, outside every namespace) is .1 on the bridge.
HOSTS = {"db": 2, "web": 3, "w1": 4, "w2": 5}
WEB_PORT = 8000
PG_PORT = 5432
REDIS_PORT = 6379
# Redis refuses other hosts without a password (protected mode), as it should.
REDIS_PASSWORD = "sluice-hosts"


def address(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


def namespace(host: str) -> str:
    return f"{PREFIX}-{host}"


def _run(*cmd: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kwargs)


def on_host(host: str, *cmd: str) -> list[str]:
    """`cmd` run on `host`: in its network namespace, with the host's name as its hostname
    (so a worker names itself `worker:slh-w1:<pid>` in leases and the ledger)."""
    name = namespace(host)
    return [
        "ip",
        "netns",
        "exec",
        name,
        "unshare",
        "--uts",
        "sh",
        "-c",
        f'hostname {name} && exec "$@"',
        "sh",
        *cmd,
    ]


# --- The network ------------------------------------------------------------------------------


def topology_down() -> None:
    """Kill whatever runs on the hosts and remove the namespaces and the bridge (idempotent)."""
    for host in HOSTS:
        name = namespace(host)
        pids = _run("ip", "netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _run("ip", "netns", "del", name, check=False)
        # A namespace lingers while a process in it is still dying: remove its link directly.
        _run("ip", "link", "del", f"{PREFIX}-{host}0", check=False)
    _run("ip", "link", "del", BRIDGE, check=False)


def topology_up() -> None:
    """A bridge with the driver on it, and one namespace per host with a veth to the bridge."""
    topology_down()
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    for host in HOSTS:
        name, outside = namespace(host), f"{PREFIX}-{host}0"
        _run("ip", "netns", "add", name)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", name)
        _run("ip", "link", "set", outside, "master", BRIDGE, "up")
        _run("ip", "-n", name, "addr", "add", f"{address(host)}/24", "dev", "eth0")
        _run("ip", "-n", name, "link", "set", "eth0", "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")


def host_cut(host: str) -> None:
    """Take a host off the network: nothing it sends arrives any more."""
    _run("ip", "-n", namespace(host), "link", "set", "eth0", "down")


def host_kill(host: str) -> int:
    """Kill every process on a host at once; returns how many there were."""
    pids = [int(p) for p in _run("ip", "netns", "pids", namespace(host)).stdout.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


# --- The database host ------------------------------------------------------------------------


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    if not found:
        raise SystemExit("bench.hosts needs PostgreSQL installed (make services)")
    return found[-1].parent


def database_host_start(workdir: Path) -> str:
    """PostgreSQL and Redis on the database host; returns the DATABASE_URL."""
    pg_bin, data = _pg_bin(), workdir / "pgdata"
    data.mkdir()
    shutil.chown(workdir, "postgres")
    shutil.chown(data, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    _run(*as_postgres, str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {SUBNET}.0/24 trust\n")
    options = (
        f"-c listen_addresses={address('db')} -p {PG_PORT} -k {workdir} -c fsync=off "
        "-c max_connections=200 -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
        "-c tcp_keepalives_count=3 -c idle_in_transaction_session_timeout=15s"
    )
    pg_ctl = [str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(workdir / "pg.log"), "-w"]
    _run(*on_host("db", *as_postgres, *pg_ctl, "-o", options, "start"))
    psql = [str(pg_bin / "psql"), "-h", address("db"), "-p", str(PG_PORT), "-U", "postgres"]
    _run(*psql, "-qc", "CREATE ROLE sluice LOGIN PASSWORD 'sluice'")
    _run(*psql, "-qc", "CREATE DATABASE sluice OWNER sluice")
    _run(
        *on_host("db", "redis-server", "--bind", address("db"), "--port", str(REDIS_PORT)),
        "--requirepass",
        REDIS_PASSWORD,
        "--daemonize",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--logfile",
        str(workdir / "redis.log"),
    )
    return f"postgres://sluice:sluice@{address('db')}:{PG_PORT}/sluice"


# --- The webhook receiver (on the driver) -----------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.received[body["id"]] += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        return None


def receiver_start() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((f"{SUBNET}.1", 0), _Hook)
    server.daemon_threads = True
    server.lock, server.received = threading.Lock(), Counter()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- The run ----------------------------------------------------------------------------------


@dataclass
class Run:
    items: int
    latency_ms: float
    lease_seconds: int
    workers: int
    timeline: list[str] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.began:6.1f} s  {text}"
        self.timeline.append(line)
        print(f"bench.hosts: {line}", flush=True)


def _fixture(webhook_url: str, latency_ms: float):
    """One client with a webhook and an API key, and a one-step pipeline on the simulated
    provider that accepts every answer."""
    from bench.scenario import _pipeline
    from controlplane.services import api_key_create
    from pipelines.services.configuration import step_update

    pipeline = _pipeline(name="hosts", latency_ms=latency_ms, webhook_url=webhook_url)
    step_update(step=pipeline.steps.get(), actor=None, actor_label="bench", confidence_threshold=0)
    _, key = api_key_create(client=pipeline.client, name="bench hosts", actor=None)
    return pipeline, key


def _submit(pipeline, key: str, count: int, *, batch: int = 100) -> int:
    """Submit `count` items through the web host's API; returns how many were accepted."""
    url = f"http://{address('web')}:{WEB_PORT}/api/v1/pipelines/{pipeline.slug}/items"
    accepted = 0
    for first in range(0, count, batch):
        body = json.dumps(
            {
                "items": [
                    {"data": {"text": f"ticket {n}: my invoice is wrong"}, "external_id": f"h{n}"}
                    for n in range(first, min(count, first + batch))
                ]
            }
        ).encode()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            answers = json.loads(response.read())["items"]
        accepted += sum(1 for a in answers if a["status"] == "queued")
    return accepted


def _host_of(actor: str) -> str:
    """`worker:slh-w1:1234` → `w1`."""
    parts = actor.split(":")
    return parts[1].removeprefix(f"{PREFIX}-") if len(parts) == 3 else ""


def run(run: Run, workdir: Path) -> dict:
    from bench.databases import django_setup
    from tests.processes import wait_for_http, wait_until

    topology_up()
    database_url = database_host_start(workdir)
    redis_url = f"redis://:{REDIS_PASSWORD}@{address('db')}:{REDIS_PORT}/0"
    run.note("hosts up: database, web, two worker hosts")
    django_setup(database_url, str(workdir / "driver"))
    receiver = receiver_start()
    pipeline, key = _fixture(f"http://{SUBNET}.1:{receiver.server_address[1]}/hook", run.latency_ms)

    from django.db.models import Count

    from pipelines.models import Delivery, Item, LedgerEvent

    env = {
        **{k: v for k, v in os.environ.items() if k not in ("SQLITE_PATH", "REDIS_URL")},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ALLOWED_HOSTS": address("web"),
        "SLUICE_LEASE_SECONDS": str(run.lease_seconds),
        # The receiver answers at once: a short delivery lease is safe here, and a lost host's
        # deliveries go out again within the run.
        "SLUICE_DELIVERY_LEASE_SECONDS": str(run.lease_seconds * 2),
        "SLUICE_Q_WORKERS": str(run.workers),
        # Every wake-up starts a drain for each worker process of both hosts.
        "SLUICE_ENGINE_DRAINS": str(2 * run.workers),
    }
    python = sys.executable
    logs = {}

    def start(host: str, *cmd: str) -> subprocess.Popen:
        logs[host] = (workdir / f"{host}.log").open("w")
        host_env = {**env, "SLUICE_DATA_DIR": str(workdir / host)}
        return subprocess.Popen(
            on_host(host, *cmd), cwd=ROOT, env=host_env, stdout=logs[host], stderr=logs[host]
        )

    web = start(
        "web",
        python,
        "-m",
        "daphne",
        "-b",
        address("web"),
        "-p",
        str(WEB_PORT),
        "controlplane.asgi:application",
    )
    workers = {host: start(host, python, "manage.py", "qcluster") for host in ("w1", "w2")}
    try:
        wait_for_http(f"http://{address('web')}:{WEB_PORT}/healthz", timeout=60)
        time.sleep(3)  # the clusters' processes start
        run.note("web and both worker clusters running")
        items = Item.objects.filter(pipeline=pipeline)
        accepted = _submit(pipeline, key, run.items)
        run.note(f"{accepted} items accepted through the API on the web host")

        def by_host() -> Counter:
            started = LedgerEvent.objects.filter(item__pipeline=pipeline, to_status="running")
            return Counter(_host_of(a) for a in started.values_list("actor", flat=True))

        def w1_holds_work() -> bool:
            # Both hosts at work and w1 holding leases. (Waiting for more done first can miss
            # the moment: with few items, w1's last batch may finish with everyone else's.)
            spread = by_host()
            return (
                spread["w1"] > 0
                and spread["w2"] > 0
                and items.filter(status="running", lease_owner__contains=namespace("w1")).exists()
            )

        if not wait_until(w1_holds_work, timeout=120, interval=0.05):
            raise RuntimeError(f"work did not reach both worker hosts: {dict(by_host())}")
        before = by_host()
        orphans = set(
            items.filter(status="running", lease_owner__contains=namespace("w1")).values_list(
                "id", flat=True
            )
        )
        delivered_before = items.filter(status="delivered").count()
        host_cut("w1")
        killed = host_kill("w1")
        run.note(
            f"worker host w1 cut off and its {killed} processes killed, holding "
            f"{len(orphans)} items under lease; {delivered_before} delivered so far"
        )
        workers["w1"].wait(timeout=30)

        def finished() -> bool:
            return items.exclude(status__in=("delivered",)).count() == 0

        ok = wait_until(finished, timeout=300, interval=0.5)
        run.note("every item delivered" if ok else "gave up waiting")
        time.sleep(1)  # the last webhook POSTs arrive
        statuses = dict(items.values_list("status").annotate(n=Count("id")))
        after = by_host()
        deliveries = Counter(
            Delivery.objects.filter(item__pipeline=pipeline).values_list("item_id", flat=True)
        )
        received = receiver.received
        outcome_events = Counter(
            LedgerEvent.objects.filter(item__pipeline=pipeline, to_status="accepted").values_list(
                "item_id", flat=True
            )
        )
        orphan_runs = {
            host: n for host, n in after.items() if host != "w1" and n > before.get(host, 0)
        }
        result = {
            "items": run.items,
            "accepted": accepted,
            "statuses": statuses,
            "delivered": statuses.get("delivered", 0),
            "lost": accepted - statuses.get("delivered", 0),
            "starts_by_host_before_loss": dict(before),
            "starts_by_host_at_end": dict(after),
            "orphans": len(orphans),
            "orphans_delivered": items.filter(pk__in=orphans, status="delivered").count(),
            "orphans_run_on": sorted(orphan_runs),
            "items_with_more_than_one_outcome": sum(1 for n in outcome_events.values() if n > 1),
            "delivery_rows_per_item_max": max(deliveries.values(), default=0),
            "webhook_posts": sum(received.values()),
            "webhook_items": len(received),
            "webhook_duplicates": sum(n - 1 for n in received.values() if n > 1),
            "seconds": round(time.monotonic() - run.began, 1),
            "timeline": run.timeline,
        }
    except BaseException:
        for host, log in logs.items():
            log.flush()
            tail = (workdir / f"{host}.log").read_text()[-3000:]
            print(f"--- {host} log (end) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        web.send_signal(signal.SIGTERM)
        for process in (web, *workers.values()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
        receiver.shutdown()
        from django.db import connections

        connections.close_all()
        for log in logs.values():
            log.close()
    return result


def verdict(result: dict) -> list[str]:
    """What went wrong, in words; empty when the run passed."""
    problems = []
    if result["lost"]:
        problems.append(f"{result['lost']} accepted items were not delivered")
    if result["accepted"] != result["items"]:
        problems.append(f"only {result['accepted']} of {result['items']} items were accepted")
    before = result["starts_by_host_before_loss"]
    if not (before.get("w1") and before.get("w2")):
        problems.append(f"the work did not spread over both worker hosts: {before}")
    if result["orphans_delivered"] != result["orphans"]:
        problems.append("items leased to the lost host were not all delivered")
    if result["items_with_more_than_one_outcome"]:
        problems.append(f"{result['items_with_more_than_one_outcome']} items had two outcomes")
    if result["delivery_rows_per_item_max"] > 1:
        problems.append("an item has more than one delivery")
    if result["webhook_items"] != result["delivered"]:
        problems.append(
            f"the webhook receiver heard of {result['webhook_items']} items, "
            f"{result['delivered']} were delivered"
        )
    return problems


def render(result: dict, problems: list[str], command: str) -> str:
    before, after = result["starts_by_host_before_loss"], result["starts_by_host_at_end"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "### Last result",
        "",
        f"Measured by `bench/hosts.py` in one run on {when}. Command: `{command}`.",
        "",
        f"- Topology: network namespaces on one 2-core machine joined by a bridge: a database "
        f"host (PostgreSQL and Redis), a web host (daphne), two worker hosts (`manage.py "
        f"qcluster`, {result.get('workers', 2)} processes each); items submitted through "
        "the REST API of the web host; webhooks to a receiver outside every host.",
        f"- {result['accepted']:,} of {result['items']:,} items accepted; "
        f"starts by worker host before the loss: w1 {before.get('w1', 0)}, "
        f"w2 {before.get('w2', 0)}.",
        f"- Worker host w1 cut off the network and every process on it killed while it held "
        f"{result['orphans']} items under lease; w2 ran them once their lease ran out "
        f"(starts at the end: w1 {after.get('w1', 0)}, w2 {after.get('w2', 0)}).",
        f"- Delivered: {result['delivered']:,}; **lost: {result['lost']}**; items with two "
        f"outcomes: {result['items_with_more_than_one_outcome']}; webhook POSTs "
        f"{result['webhook_posts']:,} for {result['webhook_items']:,} items "
        f"({result['webhook_duplicates']} repeated).",
        f"- Verdict: **{'passed' if not problems else 'FAILED: ' + '; '.join(problems)}** "
        f"in {result['seconds']} s.",
        "",
        "Timeline:",
        "",
        "```",
        *result["timeline"],
        "```",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Two rounds of a batch (up to 250 items) on each worker process of both hosts, so the
    # host is lost with work done and work in hand.
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=1000.0, help="simulated model call")
    parser.add_argument("--lease-seconds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per host")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.hosts needs root: it makes network namespaces and a bridge")
    if args.items < 1200 or args.items > 20_000:
        raise SystemExit("--items must be between 1,200 and 20,000 (batches for every process)")
    workdir = Path(tempfile.mkdtemp(prefix="sluice-hosts-"))
    try:
        result = run(
            Run(
                items=args.items,
                latency_ms=args.latency_ms,
                lease_seconds=args.lease_seconds,
                workers=args.workers,
            ),
            workdir,
        )
        result["workers"] = args.workers
    finally:
        topology_down()
        shutil.rmtree(workdir, ignore_errors=True)
    problems = verdict(result)
    result["verdict"] = problems or "passed"
    print(json.dumps(result, indent=2), flush=True)
    if not args.no_write:
        command = "python -m bench.hosts " + " ".join(sys.argv[1:])
        section_write("hosts", render(result, problems, command.strip()), doc=RESILIENCE)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
