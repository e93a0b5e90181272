"""`python -m segflow` (what bin/segflow, and so every dvc.yaml stage, runs): the `segflow`
command. A Python without segflow's dependencies gets one line saying what to do, not a traceback."""

from __future__ import annotations

import sys

SETUP_HINT = "run `make setup` (or `. .venv/bin/activate` first)"


def missing_dependency_message(missing: ModuleNotFoundError) -> str:
    """One line naming what is missing from which Python, and the way out."""
    name = (missing.name or "").split(".")[0]
    what = "segflow is not installed" if name in ("", "segflow") else f"segflow's dependency {name} is not installed"
    return f"{what} in {sys.executable}: {SETUP_HINT}"


def main() -> int:
    try:
        from segflow.cli import app
    except ModuleNotFoundError as missing:
        print(missing_dependency_message(missing), file=sys.stderr)
        return 1
    app(prog_name="segflow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
