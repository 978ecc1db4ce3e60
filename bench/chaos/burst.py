"""Chaos: a burst of ten times the rate a client may submit.

    python -m bench.chaos.burst                   # limit 600 items a minute (10/s), burst 100/s
    python -m bench.chaos.burst --limit-per-minute 6000 --burst-rate 1000 --seconds 10

Runs `manage.py loadtest` on a private Sluice whose client may submit --limit-per-minute items
a minute, at ten times that rate (or --burst-rate) for --seconds. Verdict PASS when ingest
answered only 202 or 429, every 429 carried Retry-After, nothing failed in transport, and every
item that was accepted ended delivered: refused requests are the client's to retry, accepted
ones are never lost. Prints the load test's report and the verdict; exits 1 on FAIL.

The limit counts a fixed one-minute window, so a short burst across a minute's turn may pass up to
twice the limit; the default burst (15 s at ten times the limit) exceeds it in any window.
"""

from __future__ import annotations

import argparse
import json

from bench.loadtest import main as loadtest


def verdict(report: dict) -> dict[str, bool]:
    ingest = report["stages"]["ingest"]
    return {
        "only_202_or_429": set(ingest["http_statuses"]) <= {"202", "429"},
        "refused_with_429": ingest["rate_limited_requests"] > 0,
        "every_429_has_retry_after": ingest["rate_limited_without_retry_after"] == 0,
        "no_transport_errors": ingest["transport_errors"] == 0,
        "every_accepted_item_delivered": report["items"]["all_settled"]
        and report["items"]["by_status"] == {"delivered": report["items"]["created"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit-per-minute", type=int, default=600)
    parser.add_argument("--burst-rate", type=float, default=None, help="default: 10x the limit")
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    rate = args.burst_rate or 10 * args.limit_per_minute / 60
    report = loadtest(
        [
            *("--rate", f"{rate:g}", "--duration", f"{args.seconds:g}", "--batch", "10"),
            *("--ingest-limit", str(args.limit_per_minute), "--json"),
        ]
    )
    checks = verdict(report)
    result = "PASS" if all(checks.values()) else "FAIL"
    print(json.dumps({"checks": checks, "verdict": result}, indent=2))
    print(f"verdict: {result}")
    if result != "PASS":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
