"""What every bench script shares: the machine it ran on, and one way to report (a table on
stdout, JSON under bench/results/). Ratios are measured side by side in one run; absolute numbers
are only comparable on the same machine under the same load."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def read_text_or_empty(path: str) -> str:
    """A file's text, or "" where it does not exist (no /proc on this OS)."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def package_version(name: str) -> str | None:
    """Installed version of a package, without importing it."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model(cpuinfo: str) -> str:
    """The `model name` of /proc/cpuinfo text (platform's processor name where there is none)."""
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or "unknown")


def ram_gib(meminfo: str) -> float | None:
    """MemTotal of /proc/meminfo text in GiB."""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo, re.MULTILINE)
    return round(int(match.group(1)) / 2**20, 1) if match else None


def machine_info() -> dict:
    """CPU model, cores, RAM, load and the versions that set the speed."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(read_text_or_empty("/proc/cpuinfo")), "cores": os.cpu_count(), "usable_cores": usable,
            "ram_gib": ram_gib(read_text_or_empty("/proc/meminfo")),
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            **{name: package_version(name) for name in ("torch", "monai", "dvc", "prefect")},
            "python": platform.python_version(), "platform": platform.platform(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def report(name: str, results: dict, rows: list[list], headers: list[str], out: Path | None = None) -> Path:
    """Print `rows` as a table and write {"benchmark", "machine", "results"} as JSON (atomically)."""
    from tabulate import tabulate

    from segflow.files import write_text

    print(tabulate(rows, headers=headers))
    dest = out or RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), "results": results}
    write_text(dest, json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\n{name}: results in {dest}")
    return dest
