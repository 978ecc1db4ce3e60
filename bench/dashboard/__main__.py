"""`python -m bench.dashboard`: see the package's docstring."""

from __future__ import annotations

from bench.dashboard.cli import main

main()
