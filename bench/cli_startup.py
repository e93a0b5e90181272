"""CLI start-up: wall time of `segflow --help` and `segflow predict --help` (median of N), the
import time of `segflow.cli` (`python -X importtime`), and which heavy libraries each command
loads before it does any work (they must stay lazy: imported inside the command that needs them).

    .venv/bin/python -m bench.cli_startup            # N=10
    .venv/bin/python -m bench.cli_startup -n 20 --top 15

Reference floor: `python -c pass` (the interpreter alone) and `python -c "import typer"`.
Results: a table on stdout, JSON in bench/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
PYTHON = str(BIN / "python")
SEGFLOW = str(BIN / "segflow")
HEAVY = ("torch", "monai", "great_expectations", "wandb", "prefect", "dvc", "pandas", "numpy", "scipy",
         "nibabel", "pydantic", "yaml", "cv2", "albumentations", "matplotlib")

# What each command imports before it prints: run the console entry point in-process, then list
# the heavy top-level packages present in sys.modules.
LOADED = """
import sys
sys.argv = ["segflow", *sys.argv[1:]]
from segflow.cli import app
try:
    app()
except SystemExit:
    pass
heavy = {heavy!r}
print("LOADED", " ".join(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
"""


def wall(cmd: list[str], cwd: Path, n: int) -> list[float]:
    """Wall seconds of `cmd`, run `n` times (after one untimed warm-up for the file cache)."""
    subprocess.run(cmd, cwd=cwd, capture_output=True, check=True)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def import_times(module: str, cwd: Path) -> list[tuple[str, float, float]]:
    """(module, self s, cumulative s) from `python -X importtime -c 'import MODULE'`."""
    done = subprocess.run([PYTHON, "-X", "importtime", "-c", f"import {module}"], cwd=cwd,
                          capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
        if match:
            rows.append((match.group(4), int(match.group(1)) / 1e6, int(match.group(2)) / 1e6))
    return rows


def heavy_loaded(args: list[str], cwd: Path) -> list[str]:
    done = subprocess.run([PYTHON, "-c", LOADED.format(heavy=HEAVY), *args], cwd=cwd, capture_output=True,
                          text=True)
    line = next((ln for ln in done.stderr.splitlines() if ln.startswith("LOADED")), "LOADED")
    return line.split()[1:]


def project_folder(scratch: Path) -> Path:
    """A folder that is a segflow project root (params.yaml + dvc.yaml), as the CLI finds one."""
    (scratch / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    (scratch / "dvc.yaml").write_text("")
    return scratch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="timed runs per command (median reported)")
    parser.add_argument("--top", type=int, default=10, help="slowest imports listed (cumulative)")
    args = parser.parse_args()
    commands = {
        "python -c pass (floor)": [PYTHON, "-c", "pass"],
        "python -c 'import typer'": [PYTHON, "-c", "import typer"],
        "segflow --help": [SEGFLOW, "--help"],
        "segflow predict --help": [SEGFLOW, "predict", "--help"],
        "segflow stage --help": [SEGFLOW, "stage", "--help"],
    }
    with tempfile.TemporaryDirectory(prefix="segflow-cli-bench-") as scratch:
        cwd = project_folder(Path(scratch))
        results: dict = {"n": args.n, "commands": {}}
        rows = []
        for name, cmd in commands.items():
            times = wall(cmd, cwd, args.n)
            loaded = heavy_loaded(cmd[2:], cwd) if cmd[0] == SEGFLOW else []
            results["commands"][name] = {"median_s": statistics.median(times), "min_s": min(times),
                                         "max_s": max(times), "runs_s": times, "heavy_loaded": loaded}
            rows.append([name, f"{statistics.median(times):.3f}", f"{min(times):.3f}", f"{max(times):.3f}",
                         " ".join(loaded) if cmd[0] == SEGFLOW else "-"])
        imports = import_times("segflow.cli", cwd)
    total = next((cum for mod, _, cum in imports if mod == "segflow.cli"), None)
    slowest = sorted(imports, key=lambda r: r[2], reverse=True)[: args.top]
    results["import_segflow_cli_s"] = total
    results["slowest_imports"] = [{"module": m, "self_s": s, "cumulative_s": c} for m, s, c in slowest]
    rows.append(["import segflow.cli (-X importtime)", f"{total:.3f}" if total else "?", "", "", ""])
    report("cli_startup", results, rows, ["what", "median s", "min s", "max s", "heavy libs loaded"])
    print("\nslowest imports under segflow.cli (cumulative): "
          + ", ".join(f"{m} {c * 1000:.0f} ms" for m, _, c in slowest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
