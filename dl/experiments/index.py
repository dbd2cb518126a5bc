"""The index report of `dl reproduce`: one verdict table across all experiments, as
Markdown (index.md, linking each experiment's report.md) and as one self-contained HTML
page (index.html, figures embedded as data URIs, so it can be mailed or uploaded alone).
"""

from __future__ import annotations

import base64
import datetime
import html
import json
from pathlib import Path
from typing import Any

from dl.experiments.common import count_outcomes, interval, md_cell, status

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.PASS { color: #11692a; font-weight: bold; } .FAIL { color: #b3261e; font-weight: bold; }
.NOT { color: #666; font-weight: bold; } .ERROR { color: #b3261e; font-weight: bold; }
.INCONCLUSIVE { color: #8a5a00; font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
"""


def _entries_rows(entries: list[dict[str, Any]]):
    for e in entries:
        if e.get("error"):
            yield (
                e["experiment"],
                {
                    "claim": "(the experiment did not finish)",
                    "criterion": "",
                    "measured": e["error"],
                },
                "ERROR",
            )
        for v in e.get("verdicts", []):
            yield e["experiment"], v, status(v)


# The two tables of the index: claims (and experiments that did not finish), then checks.
_TABLES = (("claim", "Claims of the source texts"), ("check", "Sanity and acceptance checks"))


def _table_rows(entries, kind: str):
    for name, v, st in _entries_rows(entries):
        if v.get("kind", "claim") == kind:
            yield name, v, st


def write_index(root: Path, entries: list[dict[str, Any]], *, quick: bool, seed: int) -> list[Path]:
    """Write index.json, index.md and index.html into `root`.

    Args:
      root: the `dl reproduce --out` folder; experiment `name` wrote into root/name/.
      entries: one per experiment: {"experiment", "time_s", "verdicts", "figures"?,
        "error"?}.
      quick, seed: how the run was made (shown in the header).

    Returns:
      The three paths.
    """
    root.mkdir(parents=True, exist_ok=True)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary = count_outcomes([v for e in entries for v in e.get("verdicts", [])])
    failed = sum(bool(e.get("error")) for e in entries)
    summary += f"; {failed} experiment(s) did not finish (ERROR)" if failed else ""
    total = sum(e.get("time_s", 0.0) for e in entries)
    title = f"dl reproduce{' --quick' if quick else ''} (seed {seed})"

    md = [
        f"# {title}",
        "",
        f"{when}; {len(entries)} experiments in {total / 60:.1f} min; verdicts: {summary}.",
        "",
    ]
    for kind, heading in _TABLES:
        md += [
            f"## {heading}",
            "",
            "| experiment | claim | criterion | measured | estimate [95% CI] | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for name, v, st in _table_rows(entries, kind):
            cells = [md_cell(v[k]) for k in ("claim", "criterion", "measured")]
            md.append(
                f"| [{name}]({name}/report.md) | {' | '.join(cells)} | "
                f"{md_cell(interval(v))} | **{st}** |"
            )
        md.append("")
    md += ["## Run time", "", "| experiment | seconds |", "|---|---|"]
    md += [f"| {e['experiment']} | {e.get('time_s', 0):.0f} |" for e in entries]
    md += ["", "## Figures", ""]
    for e in entries:
        for f in e.get("figures", []):
            md.append(f"![{e['experiment']}: {f}]({e['experiment']}/{f})")
    (root / "index.md").write_text("\n".join(md) + "\n")

    h = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(when)}; {len(entries)} experiments in {total / 60:.1f} min; "
        f"verdicts: {html.escape(summary)}.</p>",
    ]
    for kind, heading in _TABLES:
        h.append(
            f"<h2>{heading}</h2><table><tr><th>experiment</th><th>claim</th><th>criterion</th>"
            "<th>measured</th><th>estimate [95% CI]</th><th>verdict</th></tr>"
        )
        for name, v, st in _table_rows(entries, kind):
            cls = st.split()[0]
            cells = "".join(
                f"<td>{html.escape(str(x))}</td>"
                for x in (v["claim"], v["criterion"], v["measured"], interval(v))
            )
            h.append(
                f"<tr><td><a href='#{html.escape(name)}'>{html.escape(name)}</a></td>{cells}"
                f"<td class='{cls}'>{st}</td></tr>"
            )
        h.append("</table>")
    for e in entries:
        name = e["experiment"]
        h.append(f"<h2 id='{html.escape(name)}'>{html.escape(name)}</h2>")
        h.append(
            f"<p>{e.get('time_s', 0):.0f} s; full report: "
            f"<code>{html.escape(name)}/report.md</code></p>"
        )
        for f in e.get("figures", []):
            path = root / name / f
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                h.append(f"<img alt='{html.escape(f)}' src='data:image/png;base64,{data}'>")
    h.append("</body></html>")
    (root / "index.html").write_text("\n".join(h))
    (root / "index.json").write_text(json.dumps(entries, indent=2, default=str))
    return [root / "index.json", root / "index.md", root / "index.html"]
