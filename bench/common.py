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


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """CPU model, cores, RAM, load and the versions that set the speed."""
    cpu = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.MULTILINE)
    ram = re.search(r"^MemTotal:\s*(\d+)\s*kB", _read("/proc/meminfo"), re.MULTILINE)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu.group(1).strip() if cpu else (platform.processor() or "unknown"),
            "cores": os.cpu_count(), "usable_cores": usable,
            "ram_gib": round(int(ram.group(1)) / 2**20, 1) if ram else None,
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "torch": _version("torch"), "monai": _version("monai"), "dvc": _version("dvc"),
            "prefect": _version("prefect"), "python": platform.python_version(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def report(name: str, results: dict, rows: list[list], headers: list[str], out: Path | None = None) -> Path:
    """Print `rows` as a table and write {"benchmark", "machine", "results"} as JSON (atomically)."""
    from tabulate import tabulate

    from segflow.io import write_text

    print(tabulate(rows, headers=headers))
    dest = out or RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), "results": results}
    write_text(dest, json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\n{name}: results in {dest}")
    return dest
