"""Chaos: the PostgreSQL server restarts while items are submitted and processed.

    sudo .venv/bin/python -m bench.chaos.db_restart               # restart at 10 s of 30 s
    sudo .venv/bin/python -m bench.chaos.db_restart --terminate   # kill every connection instead

It never touches a shared database: it starts a throwaway PostgreSQL cluster of its own under
/tmp (initdb as the `postgres` user, on a free port, loopback only; hence root or `postgres`),
and a private Sluice on it: `manage.py serve` (daphne with the psycopg pool, and a qcluster
whose workers keep persistent connections, on the ORM broker in that same database) with a
webhook receiver. Requests of 10 items go to the REST API at --rate requests a second for
--duration seconds; at --restart-at seconds the server is restarted (`pg_ctl restart -m
fast`), or with --terminate every backend of the database is ended (pg_terminate_backend).
Verdict PASS when:

- the restart (or termination) happened while requests were being answered;
- ingest never answered a 500 or another 5xx: while the database was unreachable it answered
  503 with Retry-After (or accepted the items);
- the web process recovered: requests were accepted again after the restart;
- the workers recovered: every accepted item was delivered within --recover-timeout, none
  dead-lettered.

Prints the figures as JSON and the verdict; exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DATABASE = "sluice"


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if not on_path:
        raise SystemExit(f"{name} not found: install PostgreSQL")
    return on_path


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit())


class ThrowawayPostgres:
    """A PostgreSQL cluster in a temporary directory, on a free loopback port; removed on exit."""

    def __init__(self, port: int) -> None:
        self.port = port
        if os.geteuid() == 0:
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        elif pwd.getpwuid(os.geteuid()).pw_name == "postgres":
            self.as_postgres = []
        else:
            raise SystemExit("run as root or as postgres: initdb and pg_ctl run as postgres")
        self.root = tempfile.mkdtemp(prefix="sluice-dbrestart-")
        self.data = os.path.join(self.root, "pgdata")
        self.url = f"postgres://postgres@127.0.0.1:{port}/{DATABASE}"

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.as_postgres, *command], check=True, capture_output=True, text=True
        )

    def __enter__(self) -> ThrowawayPostgres:
        postgres = pwd.getpwnam("postgres")
        os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
        self._run(_pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", "-N")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = os.path.join(self.root, "postgres.log")
        self._run(_pg_bin("pg_ctl"), "-D", self.data, "-l", log, "-o", options, "-w", "start")
        self._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), DATABASE)
        return self

    def restart(self) -> None:
        # With its log file: a server writing to our pipe would keep this call waiting forever.
        log = os.path.join(self.root, "postgres.log")
        self._run(_pg_bin("pg_ctl"), "-D", self.data, "-l", log, "-m", "fast", "-w", "restart")

    def terminate_backends(self) -> int:
        done = self._run(
            _pg_bin("psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-d",
            "postgres",
            "-tAc",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = 'sluice' AND pid <> pg_backend_pid()",
        )
        return int(done.stdout.strip() or 0)

    def query(self, sql: str) -> list[str]:
        done = self._run(
            _pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-d", DATABASE, "-tAc", sql
        )
        return [line for line in done.stdout.splitlines() if line]

    def __exit__(self, *exc_info) -> None:
        subprocess.run(
            [*self.as_postgres, _pg_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


class Driver:
    """Sends requests of 10 items at a steady rate and records every answer."""

    def __init__(self, *, url: str, key: str, slug: str, rate: float) -> None:
        self.endpoint = f"{url}/api/v1/pipelines/{slug}/items"
        self.key, self.rate = key, rate
        self.answers: list[dict] = []
        self.accepted: set[int] = set()
        self.sent = 0

    def post(self, at: float) -> None:
        body = {
            "items": [
                {
                    "data": {"text": f"ticket {self.sent}-{n}: refund"},
                    "external_id": f"r{self.sent}-{n}",
                }
                for n in range(10)
            ]
        }
        self.sent += 1
        request = urllib.request.Request(  # noqa: S310 -- http on loopback, built here
            self.endpoint,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            method="POST",
        )
        answer: dict = {"at": round(at, 2)}
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                answer["status"] = response.status
                ids = [row["id"] for row in json.loads(response.read())["items"]]
                self.accepted.update(ids)
        except urllib.error.HTTPError as exc:
            answer["status"] = exc.code
            answer["retry_after"] = exc.headers.get("Retry-After")
            answer["json"] = exc.headers.get_content_type() == "application/json"
        except OSError as exc:
            answer["status"] = None
            answer["error"] = type(exc).__name__
        self.answers.append(answer)

    def run(self, duration: float, started_at: float) -> None:
        interval = 1 / self.rate
        next_at = started_at
        while time.monotonic() - started_at < duration:
            self.post(time.monotonic() - started_at)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def scenario(args: argparse.Namespace) -> dict:
    from bench.loadtest import private_env, private_sluice
    from bench.scenario import Receiver
    from tests.processes import free_port

    with (
        ThrowawayPostgres(free_port()) as pg,
        tempfile.TemporaryDirectory(prefix="sluice-dbrestart-data-") as data_dir,
        Receiver() as hook,
    ):
        env = {**private_env(data_dir, args.workers), "DATABASE_URL": pg.url}
        sluice_running = private_sluice(
            env, latency_ms=5, webhook_url=hook.url, ingest_limit=1_000_000
        )
        with sluice_running as sluice:
            time.sleep(1)  # the worker cluster's processes start
            driver = Driver(
                url=sluice["url"], key=sluice["key"], slug=sluice["slug"], rate=args.rate
            )
            restart: dict = {}

            def restart_later(started_at: float) -> None:
                time.sleep(args.restart_at)
                restart["began"] = round(time.monotonic() - started_at, 2)
                if args.terminate:
                    restart["terminated_backends"] = pg.terminate_backends()
                else:
                    pg.restart()
                restart["ended"] = round(time.monotonic() - started_at, 2)

            started_at = time.monotonic()
            thread = threading.Thread(target=restart_later, args=(started_at,), daemon=True)
            thread.start()
            driver.run(args.duration, started_at)
            thread.join(timeout=120)
            submitted_at = time.monotonic()
            by_status: dict[str, int] = {}
            while time.monotonic() - submitted_at < args.recover_timeout:
                rows = [row.split("|") for row in pg.query("SELECT id, status FROM pipelines_item")]
                status_of = {int(pk): status for pk, status in rows}
                by_status = {}
                for pk in driver.accepted:
                    status = status_of.get(pk, "missing")
                    by_status[status] = by_status.get(status, 0) + 1
                if by_status.get("delivered", 0) == len(driver.accepted):
                    break
                time.sleep(1)
            settle_seconds = time.monotonic() - submitted_at
            stored = int(pg.query("SELECT count(*) FROM pipelines_item")[0])
    answers = driver.answers
    codes: dict[str, int] = {}
    for answer in answers:
        codes[str(answer["status"])] = codes.get(str(answer["status"]), 0) + 1
    unavailable = [a for a in answers if a["status"] == 503]
    after_restart = [a for a in answers if restart.get("ended") and a["at"] >= restart["ended"]]
    checks = {
        "restarted_under_load": "ended" in restart
        and any(a["at"] < restart["began"] for a in answers)
        and bool(after_restart),
        # Every answer is 202 or a JSON 503 with Retry-After: no 500, no dropped connection.
        "no_500_only_503_with_retry_after": all(a["status"] in (202, 503) for a in answers)
        and all(a.get("retry_after") and a.get("json") for a in unavailable),
        "web_recovered": any(a["status"] == 202 for a in after_restart),
        "every_accepted_item_delivered": by_status == {"delivered": len(driver.accepted)},
    }
    return {
        "method": "pg_terminate_backend" if args.terminate else "pg_ctl restart -m fast",
        "requests": len(answers),
        "answers": codes,
        "restart": restart,
        "first_503_at": unavailable[0]["at"] if unavailable else None,
        "last_503_at": unavailable[-1]["at"] if unavailable else None,
        "items_accepted": len(driver.accepted),
        "items_stored": stored,
        "accepted_items_by_status": by_status,
        "seconds_from_last_request_to_all_delivered": round(settle_seconds, 1),
        "webhook_posts": hook.received,
        "checks": checks,
        "verdict": "PASS" if all(checks.values()) else "FAIL",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=10.0, help="requests of 10 items a second")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--restart-at", type=float, default=10.0)
    parser.add_argument("--recover-timeout", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--terminate", action="store_true", help="end every backend instead")
    args = parser.parse_args()
    if not 0 < args.rate <= 100 or not 0 < args.restart_at < args.duration <= 600:
        raise SystemExit("--rate must be 0 to 100 and --restart-at below --duration (<= 600)")
    result = scenario(args)
    print(json.dumps(result, indent=2))
    print(f"verdict: {result['verdict']}")
    if result["verdict"] != "PASS":
        raise SystemExit(1)


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    sys.path.insert(0, str(ROOT))
    main()
