"""Throughput of Sluice end to end beside a bare django-q2 no-op task, on PostgreSQL + Redis and
on embedded SQLite, measured in one run; prints the figures and writes docs/benchmarks.md.

    make bench                       # both modes when DATABASE_URL and REDIS_URL are set
    python -m bench.throughput --modes sqlite --items 5000

PostgreSQL mode uses a database of its own (`<name>_bench`, dropped and created again) and Redis
database 15 (flushed), so it never touches the data of a running Sluice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.databases import database_create
from bench.report import DOC, ROOT, raw_figures, section_write


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, check=True)


def _postgres_env(base: dict[str, str]) -> dict[str, str]:
    redis = urlsplit(base["REDIS_URL"])
    redis_url = urlunsplit(redis._replace(path="/15"))
    import redis as redis_client

    redis_client.Redis.from_url(redis_url).flushdb()
    return {
        **base,
        "DATABASE_URL": database_create(base["DATABASE_URL"], suffix="_bench"),
        "REDIS_URL": redis_url,
    }


def _mode_env(mode: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SQLITE_PATH",)}
    env.update(SLUICE_ENV="production", SLUICE_DATA_DIR=str(data_dir), DEBUG="0")
    env.setdefault("SECRET_KEY", "bench-" + "x" * 50)
    env.setdefault("ALLOWED_HOSTS", "127.0.0.1")
    if mode == "sqlite":
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        return env
    return _postgres_env(env)


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"sluice-bench-{mode}-") as tmp:
        env = _mode_env(mode, Path(tmp))
        _manage("migrate", "--no-input", "-v", "0", env=env)
        _manage("createcachetable", env=env)
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.scenario",
                f"--workers={args.workers}",
                f"--noop-tasks={args.noop_tasks}",
                f"--items={args.items}",
                f"--slow-items={args.slow_items}",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if completed.returncode:
            sys.stderr.write(completed.stderr)
            raise SystemExit(f"the {mode} benchmark failed")
        return json.loads(completed.stdout.strip().splitlines()[-1])


LABELS = {"postgres": "PostgreSQL + Redis", "sqlite": "SQLite (embedded, ORM broker)"}


def render(results: dict[str, dict], args: argparse.Namespace, command: str) -> str:
    cpu = os.cpu_count()
    lines = [
        "## Throughput end to end",
        "",
        "Measured by `bench/throughput.py` in one run; every figure below comes from that run.",
        "",
        f"- Command: `{command}`",
        f"- When: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {cpu} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.system()}",
        f"- Worker cluster: `manage.py qcluster` with {args.workers} worker processes, the "
        "settings Sluice ships (`save_limit=-1`, `bulk=10`, persistent connections).",
        "- The engine scenario: items submitted through the ingest service in requests of "
        "1,000, one classify step on the simulated provider, the confidence gate, and a signed "
        "webhook POST per item to a receiver on 127.0.0.1; timed from the first submission "
        "until the last item is `delivered`.",
        "- The no-op baseline: bare django-q2 tasks that do nothing, enqueued one by one with "
        "the cluster stopped, then drained: timed from the cluster's first task until the "
        "broker holds none (how fast the queue itself runs work, enqueueing apart).",
        "",
        "| mode | no-op tasks/s | items/s, 0 ms model | items/s, 1 s model | queue→start p50 / p95"
        " (0 ms) | queue→start p50 / p95 (1 s) | worker memory peak (cluster / largest process) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in results.items():
        fast, slow, noop = r["engine_0ms"], r["engine_1s"], r["noop"]
        lines.append(
            f"| {LABELS[mode]} | {noop['per_second']:,.0f} ({noop['tasks']:,} tasks; enqueued "
            f"at {noop['enqueue_per_second']:,.0f}/s) "
            f"| {fast['per_second']:,.0f} ({fast['items']:,} items in {fast['seconds']} s) "
            f"| {slow['per_second']:,.0f} ({slow['items']:,} items in {slow['seconds']} s) "
            f"| {fast['queue_to_start_p50_ms']:,.0f} / {fast['queue_to_start_p95_ms']:,.0f} ms "
            f"| {slow['queue_to_start_p50_ms']:,.0f} / {slow['queue_to_start_p95_ms']:,.0f} ms "
            f"| {max(fast['cluster_peak_mib'], slow['cluster_peak_mib'])} / "
            f"{max(fast['largest_process_peak_mib'], slow['largest_process_peak_mib'])} MiB |"
        )
    lines += [
        "",
        "Targets on a 2-core machine: at least 1,000 items/s at 0 ms on PostgreSQL + Redis, and "
        "at least 170 items/s (10,000 a minute) at 1 s model latency with at most two worker "
        "processes.",
        "",
        *raw_figures(results),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", default="")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noop-tasks", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--slow-items", type=int, default=5_000)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    have_servers = bool(os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))
    modes = args.modes.split(",") if args.modes else ["sqlite"]
    if not args.modes and have_servers:
        modes = ["postgres", "sqlite"]
    if "postgres" in modes and not have_servers:
        raise SystemExit("postgres mode needs DATABASE_URL and REDIS_URL (make services)")
    results = {}
    for mode in modes:
        print(f"bench: {mode}…", flush=True)
        results[mode] = run_mode(mode, args)
        print(json.dumps(results[mode], indent=2), flush=True)
    command = "python -m bench.throughput " + " ".join(sys.argv[1:])
    if not args.no_write:
        section_write("throughput", render(results, args, command.strip()))
        print(f"bench: wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
