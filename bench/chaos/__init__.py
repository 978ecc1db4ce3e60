"""Chaos scenarios: each a repeatable command with a verdict (see docs/resilience.md)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def run_isolated(module: str, argv: list[str], *, workers: int) -> dict:
    """Run `python -m <module> --inner <argv>` against a private, freshly migrated embedded
    database in a temporary directory; print its figures and verdict; exit 1 on FAIL."""
    from bench.loadtest import private_env

    manage = [sys.executable, str(ROOT / "manage.py")]
    with tempfile.TemporaryDirectory(prefix="sluice-chaos-") as data_dir:
        env = private_env(data_dir, workers)
        for command in (["migrate", "--no-input", "-v", "0"], ["createcachetable"]):
            subprocess.run([*manage, *command], env=env, cwd=ROOT, check=True)
        done = subprocess.run(
            [sys.executable, "-m", module, "--inner", *argv],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit("the scenario did not run")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))
    print(f"verdict: {result['verdict']}")
    if result["verdict"] != "PASS":
        raise SystemExit(1)
    return result


def scenario_main(
    *,
    module: str,
    doc: str,
    inner: Callable[[argparse.Namespace], None],
    items: int,
    outage_seconds: float,
    recover_timeout: float,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """The command line every outage scenario shares: bounded options, then the scenario in a
    private Sluice (`run_isolated`), which runs `inner` with the parsed options."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--items", type=int, default=items)
    parser.add_argument("--outage-seconds", type=float, default=outage_seconds)
    parser.add_argument("--recover-timeout", type=float, default=recover_timeout)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    if extra:
        extra(parser)
    args = parser.parse_args()
    if not 1 <= args.items <= 20_000 or not 0 < args.outage_seconds <= 1800:
        raise SystemExit("--items must be 1 to 20000 and --outage-seconds at most 1800")
    if args.inner:
        inner(args)
        return
    run_isolated(module, sys.argv[1:], workers=args.workers)


def cluster_inner(
    args: argparse.Namespace,
    *,
    make_pipeline: Callable[..., object],
    run: Callable[[object], dict],
) -> None:
    """In a process whose environment points at the private database: a webhook receiver,
    the pipeline `make_pipeline(webhook_url=)` builds, a real worker cluster, and the figures
    of `run(pipeline)` with the receiver's count, printed as JSON."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from bench.scenario import Cluster, Receiver

    with Receiver() as hook:
        pipeline = make_pipeline(webhook_url=hook.url)
        with Cluster(args.workers):
            time.sleep(3)  # the cluster's processes start
            result = run(pipeline)
    result["webhook_posts"] = hook.received
    print(json.dumps(result, default=str))
