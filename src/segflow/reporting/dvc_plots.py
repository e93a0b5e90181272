"""Offline rendering of `dvc plots`: an HTML page with no network needs, plus PNG files.

`dvc plots show` writes HTML whose <script> tags load vega, vega-lite and vega-embed from a
CDN, so on a machine without internet it shows nothing. Here the three libraries are inlined
into an HTML template (the bundle comes from the PyPI package `vl-convert-python`, so no node
is needed) and passed to `dvc plots show --html-template`. The template deliberately has no
`{scripts}` placeholder: that is where dvc-render would put the CDN tags. Each vega plot is
also written as a PNG (rendered by vl-convert, no browser needed).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Template placeholders dvc-render substitutes with str.replace (see dvc_render/html.py).
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

#: Vega-Lite major version of the specs DVC 3.x generates ("$schema": .../vega-lite/v5.json).
VEGA_LITE_MAJOR = "5"

TEMPLATE_HTML = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!-- {marker} -->
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


class ReportingError(RuntimeError):
    """Plots could not be rendered (dvc failed, or the project defines no plots)."""


def _vegalite_version() -> str:
    """Newest Vega-Lite 5.x that vl-convert ships (DVC's specs use the v5 schema)."""
    import vl_convert as vlc

    versions = [v for v in vlc.get_vegalite_versions() if v.split(".")[0] == VEGA_LITE_MAJOR]
    if not versions:
        raise ReportingError(f"vl-convert ships no Vega-Lite {VEGA_LITE_MAJOR}.x.")
    return max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def _template_marker() -> str:
    """Names the bundled library versions; a cached template without it is rebuilt."""
    import vl_convert as vlc

    return (
        f"segflow offline template: vega {vlc.get_vega_version()}, "
        f"vega-lite {_vegalite_version()}, vega-embed {vlc.get_vega_embed_version()}"
    )


def _script_safe(js: str) -> str:
    """Escape `</script`, which would end the inline <script> early (`<\\/` is `</` in JS)."""
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)


def _javascript_bundle() -> str:
    """vega + vega-lite + vega-embed as one classic script defining the global `vegaEmbed`."""
    import vl_convert as vlc

    bundle = _script_safe(vlc.javascript_bundle(vl_version=_vegalite_version()))
    clashes = [p for p in DVC_PLACEHOLDERS if p in bundle]
    if clashes:
        raise ReportingError(f"The vega bundle contains DVC template placeholders {clashes}.")
    return bundle


def build_offline_template(dest: Path) -> Path:
    """Write (or reuse, if up to date) an HTML template for `dvc plots show --html-template`.

    vega, vega-lite and vega-embed are inlined (about 0.9 MB), so the page DVC fills in needs
    no network. `dest` is the template file; it is rebuilt only when the bundled versions change.
    """
    dest = Path(dest)
    marker = _template_marker()
    if dest.is_file() and marker in dest.read_text(encoding="utf-8")[:2000]:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    html = TEMPLATE_HTML.format(marker=marker, bundle=_javascript_bundle())
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(dest)
    return dest


def _run_dvc(project_root: Path, *args: str) -> str:
    """Run `dvc <args>` in `project_root` (analytics off); stdout, or ReportingError."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    cmd = [sys.executable, "-m", "dvc", *args]
    proc = subprocess.run(cmd, cwd=project_root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {proc.returncode}"
        raise ReportingError(f"`dvc {' '.join(args)}` failed in {project_root}: {last}")
    return proc.stdout


def _plot_specs(project_root: Path) -> dict[str, list[dict[str, Any]]]:
    """The plots `dvc plots show --json` reports, by plot id (raises if none can be shown).

    DVC exits 0 even when dvc.yaml is corrupt or a plot file is missing; it lists those
    under "errors". They are fatal only when no plot at all is left to show.
    """
    payload = json.loads(_run_dvc(project_root, "plots", "show", "--json") or "{}")
    data = {plot_id: entries for plot_id, entries in (payload.get("data") or {}).items()
            if entries}
    errors = [e.get("msg", str(e)) for e in payload.get("errors") or []]
    if not data and errors:
        raise ReportingError(f"DVC could not load the plots in {project_root}: {errors[0]}")
    if not data:
        raise ReportingError(f"DVC found no plots in {project_root} (check `plots:` in dvc.yaml).")
    for msg in errors:
        log.warning("dvc plots: %s", msg)
    return data


def _png_name(plot_id: str, index: int, count: int) -> str:
    """File name for one plot's PNG: the plot id made filesystem-safe."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", plot_id).strip("_") or "plot"
    return f"{stem}_{index}.png" if count > 1 else f"{stem}.png"


def write_pngs(project_root: Path, out_dir: Path) -> list[Path]:
    """Render every vega plot of the project to `out_dir/<plot id>.png`; return the paths."""
    import vl_convert as vlc

    out_dir.mkdir(parents=True, exist_ok=True)
    vl_version = _vegalite_version()
    written = []
    for plot_id, entries in _plot_specs(project_root).items():
        vega = [e for e in entries if e.get("type") == "vega"]
        for index, entry in enumerate(vega):
            path = out_dir / _png_name(plot_id, index, len(vega))
            path.write_bytes(vlc.vegalite_to_png(entry["content"], vl_version=vl_version, scale=2))
            written.append(path)
    return written


def render_plots(project_root: Path, out_dir: Path, *, template: Path | None = None) -> Path:
    """Render the project's `dvc plots` into `out_dir` for offline viewing; return index.html.

    Writes `out_dir/index.html` (self-contained, no CDN) and one PNG per vega plot. The
    template is cached at `template` (default `<project_root>/.segflow/plots-template.html`).
    """
    project_root, out_dir = Path(project_root).resolve(), Path(out_dir).resolve()
    if not project_root.is_dir():
        raise ReportingError(f"Project folder {project_root} does not exist.")
    template = template or project_root / ".segflow" / "plots-template.html"
    template = build_offline_template(template)
    write_pngs(project_root, out_dir)  # also raises ReportingError when there are no plots
    _run_dvc(project_root, "plots", "show", "--html-template", str(template), "-o", str(out_dir))
    index = out_dir / "index.html"
    if not index.is_file():
        raise ReportingError(f"`dvc plots show` wrote no {index}.")
    return index
