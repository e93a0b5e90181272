"""Great-expectations Data Docs that open offline, written atomically.

The contracts validate in a fresh ephemeral GX context (`contracts.gx_context`), whose stores then hold
exactly this run's suites and results. GX's pages load bootstrap, jQuery, bootstrap-table and
Font Awesome from CDNs, and its index fills its table with JavaScript, so offline it is blank.
`write_data_docs` therefore
1. has GX build its site (a page per validation result and per suite, an index) into `gx/`;
2. copies the vendored assets (`static/data_docs`, unmodified npm files) into the site and points
   every page at them, dropping the SRI/crossorigin attributes a file:// page cannot satisfy;
3. heads each GX page with what a failed suite means here (GX has one meaning: "failed"; in
   segflow a failed errors suite quarantines cases, a failed warnings suite only reports);
4. writes segflow's `index.html` above it: the verdict, what a failed rule means, one row per
   rule (its expectation, severity, outcome, failing cases, a link to GX's page) and every finding;
5. builds all of this in a hidden sibling folder and renames it into place.
"""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VENDOR = Path(__file__).parent / "static" / "data_docs"
GX_SITE = "gx"
SITE_NAME = "segflow"
MAX_CASES_SHOWN = 20  # failing case ids listed per rule on the index page
MAX_FINDINGS_SHOWN = 2000  # findings listed on the index page (all are in the JSON report)

_UNPKG = "https://unpkg.com/bootstrap-table@"
_CDNJS = "https://cdnjs.cloudflare.com/ajax/libs/"
#: CDN address in GX 1.24's templates -> vendored file (same package and version).
CDN_ASSETS = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery.min.js",
    f"{_CDNJS}popper.js/1.12.9/umd/popper.min.js": "popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap.min.css",
    f"{_UNPKG}1.19.1/dist/bootstrap-table.min.css": "bootstrap-table.min.css",
    f"{_UNPKG}1.19.1/dist/bootstrap-table.min.js": "bootstrap-table.min.js",
    f"{_UNPKG}1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table-filter-control.min.js",
    f"{_UNPKG}1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table-filter-control.min.css",
    f"{_UNPKG}1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table-filter-control.min.css",
    f"{_CDNJS}bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": "bootstrap-datepicker.min.css",
    f"{_CDNJS}bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": "bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-prefers-dark.min.css",
    f"{_CDNJS}font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
}
GX_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.[\w-]+\.amazonaws\.com/[\w-]+\.png(?:\?[^\"')\s]*)?")
VEGA_TAG = re.compile(r'<script src="https://cdn\.jsdelivr\.net/npm/vega[\w-]*@\d+"></script>\n?')
SRI_ATTRIBUTES = re.compile(r'\s+(?:integrity="[^"]*"|crossorigin="[^"]*")')
# GX counts one folder too few on validation pages (favicon.j2): re-anchor every static link.
STATIC_LINK = re.compile(r'\b(src|href)="(?:\./|(?:\.\./)+)?static/')
_EXTERNAL_TAG = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']((?:https?:)?//[^\"']+)", re.I)
_EXTERNAL_CSS = re.compile(r"url\(\s*[\"']?((?:https?:)?//[^)\"']+)", re.I)


@dataclass(frozen=True)
class RuleRow:
    """One expectation of the run as the index lists it."""

    suite: str
    rule: str
    severity: str
    expectation: str
    columns: str
    success: bool
    failing_cases: list[str]
    observed: str


def rule_rows(results: Iterable[Any]) -> list[RuleRow]:
    """One row per expectation of the GX suite results, in order; rule and severity come from
    the expectation's meta."""
    rows = []
    for suite_result in results:
        for outcome in suite_result.results:
            config, found = outcome.expectation_config, outcome.result or {}
            meta, kwargs = config.meta or {}, config.kwargs
            failing = [str(r.get("case_id", r)) for r in found.get("unexpected_index_list") or []]
            observed = found.get("observed_value")
            rows.append(RuleRow(
                suite=suite_result.suite_name, rule=str(meta.get("rule", config.type)),
                severity=str(meta.get("severity", "")), expectation=config.type,
                columns=", ".join(str(kwargs[k]) for k in ("column", "column_A", "column_B") if kwargs.get(k)),
                success=bool(outcome.success), failing_cases=list(dict.fromkeys(failing)),
                observed="" if observed is None else str(observed),
            ))
    return rows


def write_data_docs(context: Any, results: list[Any], findings: list[dict], dest: Path, headline: str) -> Path:
    """Write the Data Docs of what `context` validated to the folder `dest` (replaced whole);
    returns its index.html.

    Args:
        results: the run's GX suite validation results, in order (rows of the rule table).
        findings: one dict per finding (case_id, file, rule, severity, message).
        headline: the one-screen summary that heads segflow's index page.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        build_gx_site(context, staging / GX_SITE)
        localize_site(staging / GX_SITE)
        add_reading_note(staging / GX_SITE)
        page = render_index(rule_rows(results), findings, headline, staging / GX_SITE)
        (staging / "index.html").write_text(page, encoding="utf-8")
        replace_dir(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest / "index.html"


def build_gx_site(context: Any, site: Path) -> None:
    """Render GX's own Data Docs site for the suites and results stored in `context` into `site`."""
    if SITE_NAME in (context.get_config().data_docs_sites or {}):
        context.delete_data_docs_site(SITE_NAME)
    context.add_data_docs_site(SITE_NAME, {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_cta_footer": False},
    })
    context.build_data_docs(site_names=[SITE_NAME])


def localize_site(site: Path) -> None:
    """Copy the vendored assets into `site` and point every page and stylesheet at them."""
    vendor = site / "static" / "vendor"
    shutil.copytree(VENDOR, vendor)
    for page in [*site.rglob("*.html"), *site.glob("static/styles/*.css")]:
        prefix = Path(os.path.relpath(site / "static", page.parent)).as_posix()
        text = localize(page.read_text(encoding="utf-8"), prefix)
        page.write_text(text, encoding="utf-8")
        for url in external_resources(text):
            log.warning("Data Docs page %s still loads %s from the network", page, url)


def add_reading_note(site: Path) -> None:
    """Head each of GX's pages with what a failed (red) suite means here and a link back to
    segflow's page: GX marks a suite failed for any failed expectation, warnings included."""
    for page in site.rglob("*.html"):
        back = Path(os.path.relpath(site.parent / "index.html", page.parent)).as_posix()
        text = page.read_text(encoding="utf-8")
        note = GX_NOTE_HTML.format(note=html.escape(GX_NOTE), back=back)
        page.write_text(BODY_TAG.sub(lambda tag: tag.group(0) + note, text, count=1), encoding="utf-8")


def localize(text: str, static: str) -> str:
    """`text` with GX's CDN assets replaced by files under `static` (the site's static folder,
    relative to the page); GX's chart libraries (vega) are dropped: no segflow rule draws one."""
    for url, name in CDN_ASSETS.items():
        text = text.replace(url, f"{static}/vendor/{name}")
    text = GX_LOGO.sub(f"{static}/images/logo-long.png", text)
    text = STATIC_LINK.sub(rf'\1="{static}/', VEGA_TAG.sub("", text))
    return SRI_ATTRIBUTES.sub("", text)


def external_resources(text: str) -> list[str]:
    """Network addresses a page needs to render: script/link/img sources and CSS url()s.
    (Plain hyperlinks are not resources: the page renders without following them.)"""
    return _EXTERNAL_TAG.findall(text) + _EXTERNAL_CSS.findall(text)


def _validation_pages(site: Path) -> dict[str, str]:
    """Suite name -> its validation result page, relative to the Data Docs folder."""
    pages = {}
    for page in sorted((site / "validations").glob("*/**/*.html")):
        suite = page.relative_to(site / "validations").parts[0]
        pages[suite] = page.relative_to(site.parent).as_posix()
    return pages


def render_index(rows: list[RuleRow], findings: list[dict], headline: str, site: Path) -> str:
    """segflow's entry page: the verdict, one table row per rule, then every finding."""
    pages = _validation_pages(site)
    shown = findings[:MAX_FINDINGS_SHOWN]
    omitted = len(findings) - len(shown)
    return INDEX_HTML.format(
        css=f"{GX_SITE}/static/vendor/bootstrap.min.css", headline=html.escape(headline),
        gx_index=f"{GX_SITE}/index.html", n_findings=len(findings), note=html.escape(READING_NOTE),
        rules="\n".join(_rule_row(row, pages.get(row.suite)) for row in rows),
        findings="\n".join(_finding_row(f) for f in shown),
        omitted=f"<p>{omitted} more findings are in the JSON report.</p>" if omitted > 0 else "",
    ) + "\n"


def _rule_row(row: RuleRow, page: str | None) -> str:
    esc = html.escape
    status = "passed" if row.success else ("failed" if row.severity == "error" else "warned")
    cases = row.failing_cases[:MAX_CASES_SHOWN]
    more = len(row.failing_cases) - len(cases)
    detail = ", ".join(esc(c) for c in cases) + (f" and {more} more" if more > 0 else "")
    if not row.failing_cases and not row.success and row.observed:
        detail = f"observed: {esc(row.observed)}"
    suite = f'<a href="{esc(page)}">{esc(row.suite)}</a>' if page else esc(row.suite)
    return (f'<tr class="{ROW_STYLE[status]}"><td><code>{esc(row.rule)}</code></td><td>{esc(row.severity)}</td>'
            f"<td>{status}</td><td>{len(row.failing_cases) or ''}</td><td>{detail}</td>"
            f"<td>{esc(row.expectation)}<br><small>{esc(row.columns)}</small></td><td>{suite}</td></tr>")


def _finding_row(finding: dict) -> str:
    cells = [html.escape(str(finding.get(key, ""))) for key in ("case_id", "file", "rule", "severity", "message")]
    cells[2] = f"<code>{cells[2]}</code>"
    style = ROW_STYLE["failed" if finding.get("severity") == "error" else "warned"]
    return f'<tr class="{style}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


ROW_STYLE = {"passed": "table-success", "failed": "table-danger", "warned": "table-warning"}
# What a failed expectation means in segflow (GX itself has one meaning: "the delivery failed").
READING_NOTE = ("A failed rule does not reject the delivery. A failed error rule quarantines the cases it names "
                "and keeps the rest; only an error about the delivery as a whole (e.g. too few usable cases, "
                "the same content in two folds, a repeated case id) stops the pipeline, and the verdict above "
                "then says so. A warned rule only reports: every case is kept. A delivery without defects shows "
                "every rule passed.")
GX_NOTE = ("segflow validates errors and warnings as separate suites (..._errors, ..._warnings). A failed "
           "errors suite means the cases it names were quarantined and the rest kept (or, for a "
           "delivery-level rule, that the pipeline stopped); a failed warnings suite only reports, "
           "every case is kept. A delivery without defects passes every suite.")
GX_NOTE_HTML = ('\n<div class="alert alert-info m-3" role="note">{note} '
                '<a href="{back}">segflow\'s summary: verdict, kept and quarantined cases</a>.</div>\n')
BODY_TAG = re.compile(r"<body\b[^>]*>")
INDEX_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>segflow data validation</title>
<link rel="stylesheet" href="{css}">
</head>
<body class="container-fluid p-4">
<h1 class="h3">segflow data validation</h1>
<pre class="border rounded p-3 bg-light">{headline}</pre>
<h2 class="h4">Rules</h2>
<p class="alert alert-info">{note}</p>
<p>Each rule is one great-expectations expectation. Full results, with every unexpected value:
<a href="{gx_index}">Great Expectations Data Docs</a>.</p>
<table class="table table-sm table-bordered">
<thead><tr><th>rule</th><th>severity</th><th>outcome</th><th>cases</th><th>failing cases</th>
<th>expectation</th><th>suite</th></tr></thead>
<tbody>
{rules}
</tbody>
</table>
<h2 class="h4">Findings ({n_findings})</h2>
<table class="table table-sm table-bordered">
<thead><tr><th>case</th><th>file</th><th>rule</th><th>severity</th><th>finding</th></tr></thead>
<tbody>
{findings}
</tbody>
</table>
{omitted}
</body>
</html>"""


def _remove_leftovers(dest: Path) -> None:
    """Delete hidden staging folders a killed earlier run left beside `dest`."""
    for leftover in dest.parent.glob(f".{dest.name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)


def replace_dir(staging: Path, dest: Path) -> None:
    """Put the finished folder `staging` at `dest` by renames only, so `dest` is either the old
    whole folder, absent (only if killed between the two renames), or the new whole folder."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, old)
    os.replace(staging, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
