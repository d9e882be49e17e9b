"""``relam report SPEC``: one self-contained HTML page of a spec's results.

The page holds, in order: the spec's table beside the paper's numbers (the cells of
:func:`relam.experiments.reports.render_table`), the learning curves
(:func:`~relam.experiments.reports.render_curves`, embedded as a PNG ``data:`` URI, so the page is
one file to mail or attach), the spec's claims and the paper's numbers judged pass / fail
(:func:`~relam.experiments.reports.evaluate_claims`), and the provenance of every run: its record's
status, success, wall time and finish time, the commit it ran at, the machine (host, CPU, memory,
GPU) and the package versions (one table of the distinct version sets, each run naming its set).
The table and curve files are written beside ``report.html`` as by ``relam table`` / ``relam plot``.
When the spec has ReLAM runs on Meta-World, the page also embeds the GIFs of their trained policies
that ``relam gif`` wrote (:mod:`relam.policy_gif`), after the curves.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relam.cache import atomic_write_bytes, read_json
from relam.experiments.reports import (evaluate_claims, render_curves, render_table, report_dir,
                                       table_rows)
from relam.experiments.runner import spec_status
from relam.experiments.spec import Spec
from relam.experiments.store import ResultStore, git_commit

__all__ = ["PageReport", "render_page"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1400px;
color:#222;line-height:1.35;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr.suite td{background:#e8eef7;font-weight:600}tr.iqm td{font-style:italic}
.pass{background:#d9f2d9}.fail{background:#f7d4d4}.nc{background:#eee}.inc{background:#fbefc8}
.meta{color:#555;font-size:13px}code{font-size:12px}img{max-width:100%;border:1px solid #ddd}
figure{display:inline-block;vertical-align:top;max-width:440px;margin:8px 16px 8px 0}
"""
_VERDICT_CLASS = {"pass": "pass", "fail": "fail", "not checked": "nc", "incomplete": "inc"}


@dataclass
class PageReport:
    """The written page and the numbers behind it."""

    path: Path
    html: str
    claims: list  # ClaimVerdict
    n_records: int


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _table(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    """An HTML table; cells are already HTML."""
    out = ["<table>", "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _results_table(spec: Spec, rep) -> str:
    labels = spec.labels()
    rows, classes = [], []
    for kind, first, texts in table_rows(spec, rep.cells, rep.iqm):
        if kind == "suite":
            rows.append([f'{_e(first)}</td><td colspan="{len(labels)}">'])
        else:
            rows.append([_e(first), *map(_e, texts)])
        classes.append(kind if kind != "task" else "")
    return _table(["Task", *map(_e, labels)], rows, classes)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _machine_text(rec: dict[str, Any]) -> str:
    m = rec.get("machine") or {}
    parts = [p for p in (m.get("cpu"), f"{m['cpus']} CPUs" if m.get("cpus") else None,
                         f"{m['memory_gib']} GiB" if m.get("memory_gib") else None,
                         f"GPU {m['gpu']}" if m.get("gpu") else None) if p]
    return _e(rec.get("host") or "?") + (f"<br><small>{_e(', '.join(parts))}</small>" if parts else "")


def _provenance(spec: Spec, scale: str, store: ResultStore | None) -> tuple[str, int]:
    """The per-run provenance table and the table of the distinct package-version sets."""
    rows, classes = [], []
    sets: dict[tuple, str] = {}
    n = 0
    for run, rec in spec_status(spec, scale, store):
        if rec is None:
            rows.append([_e(spec.task_label(run.task)), _e(run.label), _e(run.seed), f"<code>{run.key}</code>",
                         "missing", "", "", "", "", "", ""])
            classes.append("inc")
            continue
        n += 1
        vkey = tuple(sorted((rec.get("versions") or {}).items()))
        vid = sets.setdefault(vkey, chr(ord("A") + len(sets)) if len(sets) < 26 else f"#{len(sets) + 1}")
        ok = rec.get("status") == "ok"
        status = "ok" if ok else ("not implemented" if rec.get("not_implemented") else "failed")
        success = f"{100 * rec['success']:.1f}%" if ok and rec.get("success") is not None else _e(rec.get("error"))
        wall = rec.get("wall_time_s")
        rows.append([_e(spec.task_label(run.task)), _e(run.label), _e(run.seed), f"<code>{run.key}</code>",
                     _e(status), success, _e(_duration(wall)),
                     _e(rec.get("finished_at")), f"<code>{_e(rec.get('git_commit') or '?')}</code>",
                     _machine_text(rec), vid])
        classes.append("" if ok else "fail")
    runs = _table(["Task", "Method", "Seed", "Key", "Status", "Success / error", "Wall time",
                   "Finished (UTC)", "Commit", "Machine", "Versions"], rows, classes)
    names = list(dict.fromkeys(name for vkey in sets for name, _ in vkey))
    versions = _table(["Package", *(f"set {vid}" for vid in sets.values())],
                      [[_e(name), *(_e(dict(vkey).get(name, "—")) for vkey in sets)] for name in names]) \
        if sets else "<p>No records yet.</p>"
    return runs + "\n<h3>Package versions</h3>\n" + versions, n


def _policy_gifs(spec: Spec, scale: str, out: Path, store: ResultStore | None) -> str:
    """The section of the trained policies' GIFs (``relam gif``): each GIF found for a finished
    ReLAM run of the spec, in the page's folder or the spec's default reports folder, embedded when
    its ``.json`` names the cell's current run key; a GIF of another run is named, not shown."""
    from relam.policy_gif import GIF_METHODS, default_gif_path

    roots = list(dict.fromkeys([out, report_dir(spec, scale)]))
    shown, stale, cells = [], [], 0
    for run, rec in spec_status(spec, scale, store):
        if run.method not in GIF_METHODS or spec.suite_of(run.task) != "metaworld":
            continue
        cells += 1
        if rec is None or rec.get("status") != "ok":
            continue
        for root in roots:
            gif = default_gif_path(spec, scale, run.task, run.label, run.seed, root=root)
            meta_path = gif.with_suffix(".json")
            if not (gif.exists() and meta_path.exists()):
                continue
            try:
                meta = read_json(meta_path)
            except (OSError, ValueError):  # unreadable: treated as a GIF of another run
                meta = {}
            what = f"{_e(spec.task_label(run.task))} / {_e(run.label)} / seed {_e(run.seed)}"
            if meta.get("key") != run.key:
                stale.append(f"<li>{what}: <code>{_e(gif)}</code> shows run <code>{_e(meta.get('key'))}</code>, "
                             f"not this cell's run <code>{run.key}</code>; remake it with <code>relam gif "
                             f"{_e(spec.name)} --scale {_e(scale)} --task {_e(run.task)} --method "
                             f"'{_e(run.label)}' --seed {_e(run.seed)}</code></li>")
                continue
            eps = "; ".join(f"episode seed {e['seed']}: {'success' if e['success'] else 'no success'}, stage "
                            f"{e['stage']}/{e['n_subgoals']}, {e['length']} steps" for e in meta.get("episodes", []))
            b64 = base64.b64encode(gif.read_bytes()).decode()
            shown.append(f"<figure><img alt=\"{what}\" src=\"data:image/gif;base64,{b64}\">"
                         f"<figcaption class=meta>{what} (run <code>{run.key}</code>, checkpoint at "
                         f"{_e(meta.get('checkpoint_steps'))} env steps, made {_e(meta.get('made_at'))}): "
                         f"{_e(eps)}; the run's final evaluation: {100 * rec['success']:.1f}% success</figcaption>"
                         "</figure>")
            break
    if not cells:
        return ""
    intro = ("<p class=meta>The final policy of each run, acting deterministically on the run's own "
             "evaluation episodes. Discs: the current keypoints; crosses: the subgoal each keypoint is "
             "heading for, joined to it by a line; thin lines and rings: the subgoals of the plan still "
             "ahead; bottom left: step, subgoals reached and success.</p>")
    parts = ["<h2>The trained policy</h2>", intro, *shown]
    if not shown:
        parts.append(f"<p>No GIF yet: <code>relam gif {_e(spec.name)} --scale {_e(scale)}</code> makes one "
                     "from a finished ReLAM run's checkpoint.</p>")
    if stale:
        parts.append("<p>GIFs of other runs (not shown):</p><ul>" + "".join(stale) + "</ul>")
    return "\n".join(parts)


def render_page(spec: Spec, scale: str, store: ResultStore | None = None, out_dir: str | Path | None = None,
                reps: int = 2000) -> PageReport:
    """Write ``report.html`` (plus ``table.*`` and ``curves.png``) into ``out_dir`` (default: the
    spec's reports folder in the cache) and return it."""
    out = Path(out_dir) if out_dir is not None else report_dir(spec, scale)
    rep = render_table(spec, scale, store=store, out_dir=out, reps=reps)
    png = render_curves(spec, scale, store=store, out_dir=out).read_bytes()
    claims = evaluate_claims(spec, scale, rep.cells)
    prov, n_records = _provenance(spec, scale, store)
    counts = (rep.cells[["n_expected", "n_ok", "n_failed"]].sum()).to_dict()
    claim_rows = [[_e(c.id), _e(c.text), f"<b>{_e(c.verdict)}</b>", _e(c.detail)] for c in claims]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body = [
        f"<h1>{_e(spec.title)}</h1>",
        f'<p class="meta">spec <code>{_e(spec.name)}</code> ({_e(spec.path)}), scale <b>{_e(scale)}</b>; '
        f"{int(counts['n_ok'])} of {int(counts['n_expected'])} runs finished, {int(counts['n_failed'])} failed; "
        f"page made {now} at commit <code>{_e(git_commit() or '?')}</code></p>",
        f"<p>{_e(spec.description)}</p>" if spec.description else "",
        "<h2>Results beside the paper</h2>",
        "<p class=meta>Final success rate (%), mean ± std over seeds (finished/expected runs when partial); "
        "[paper value, Δ = ours − paper]; — = no result. IQM rows: interquartile mean over runs × tasks "
        "with a 95% stratified-bootstrap interval.</p>",
        _results_table(spec, rep),
        f"<p class=meta>Note: {_e(spec.paper_notes)}</p>" if spec.paper_notes else "",
        "<h2>Learning curves</h2>",
        "<p class=meta>Mean over seeds with a 95% bootstrap band; dashed: the paper's final value.</p>",
        f'<img alt="learning curves" src="data:image/png;base64,{base64.b64encode(png).decode()}">',
        _policy_gifs(spec, scale, out, store),
        "<h2>Claims</h2>",
        f"<p class=meta>The spec's claims, then one per paper number (within the spec's tolerance at "
        f"scale {_e(scale)}), judged as the reproduction tests judge them.</p>",
        _table(["Claim", "Text", "Verdict", "Detail"], claim_rows,
               [_VERDICT_CLASS.get(c.verdict, "") for c in claims]),
        "<h2>Provenance of every run</h2>",
        prov,
    ]
    page = ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(spec.title)} ({_e(scale)})</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")
    path = atomic_write_bytes(out / "report.html", page.encode())
    return PageReport(path=path, html=page, claims=claims, n_records=n_records)
