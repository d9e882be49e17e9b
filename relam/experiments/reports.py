"""Reports: the paper's tables and learning-curve figures from whatever records exist.

The table mirrors Table 4 -- suites and tasks as rows, methods as columns -- with each cell the mean
+- std of the final success rate over seeds (in percent, like the paper), the paper's number and our
difference beside it, and per suite an IQM row with a 95% stratified-bootstrap interval (rliable:
runs are resampled within each task, which is what "stratified" means there). Learning curves show,
per task, the mean over seeds and a 95% bootstrap interval of that mean. Partial results always
render: a cell says how many of its runs exist, and missing cells are marked, so a report can be
looked at while a sweep is still running.
"""
from __future__ import annotations

import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from relam.cache import atomic_write_bytes, cache_dir
from relam.experiments.runner import spec_status
from relam.experiments.spec import Spec
from relam.experiments.store import ResultStore

__all__ = ["ClaimVerdict", "TableReport", "claim_cells", "collect", "curve_data", "evaluate_claims", "iqm_intervals",
           "judge_claim", "render_curves", "render_table", "report_dir", "table_frame", "table_rows"]

SUITE_TITLES = {"metaworld": "Meta-World Environments", "maniskill": "ManiSkill Environments"}
MISSING = "—"


def report_dir(spec: Spec, scale: str) -> Path:
    """Default folder of a spec's reports: ``<cache>/reports/<spec>/<scale>/``."""
    return cache_dir() / "reports" / spec.name / scale


def collect(spec: Spec, scale: str, store: ResultStore | None = None) -> pd.DataFrame:
    """One row per expected run: where it belongs, its status and its final success (percent)."""
    rows = []
    for run, rec in spec_status(spec, scale, store):
        status = "missing" if rec is None else ("ok" if rec.get("status") == "ok" else
                                                 "not_implemented" if rec.get("not_implemented") else "failed")
        rows.append({
            "suite": spec.suite_of(run.task), "task": run.task, "task_label": spec.task_label(run.task),
            "label": run.label, "method": run.method, "seed": run.seed, "key": run.key, "status": status,
            "success": 100.0 * rec["success"] if status == "ok" else np.nan,
            "error": (rec or {}).get("error"),
        })
    return pd.DataFrame(rows, columns=["suite", "task", "task_label", "label", "method", "seed", "key",
                                       "status", "success", "error"])


def table_frame(spec: Spec, df: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label): runs expected/ok/failed, mean and std (percent), paper and difference."""
    rows = []
    for task in spec.tasks:
        for label in spec.labels():
            cell = df[(df.task == task) & (df.label == label)]
            ok = cell[cell.status == "ok"].success.to_numpy(dtype=float)
            mean = float(ok.mean()) if len(ok) else np.nan
            std = float(ok.std(ddof=0)) if len(ok) else np.nan
            paper = spec.paper_value(task, label)
            rows.append({
                "suite": spec.suite_of(task), "task": task, "task_label": spec.task_label(task), "label": label,
                "n_expected": len(cell), "n_ok": len(ok), "n_failed": int((cell.status == "failed").sum()),
                "n_not_implemented": int((cell.status == "not_implemented").sum()),
                "mean": mean, "std": std, "paper": np.nan if paper is None else float(paper),
                "diff": mean - paper if paper is not None and len(ok) else np.nan,
            })
    return pd.DataFrame(rows)


def iqm_intervals(spec: Spec, df: pd.DataFrame, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (suite, label): IQM of final success over runs x tasks with a 95% stratified bootstrap CI.

    rliable needs a full (runs x tasks) matrix; with partial results each task contributes its first
    ``n`` successful seeds, ``n`` being the smallest count over the suite's tasks (0 -> no estimate).
    """
    from rliable import library as rly
    from rliable import metrics

    rows = []
    for suite in dict.fromkeys(spec.suite_of(t) for t in spec.tasks):
        tasks = [t for t in spec.tasks if spec.suite_of(t) == suite]
        for label in spec.labels():
            cols = []
            for t in tasks:
                ok = df[(df.task == t) & (df.label == label) & (df.status == "ok")].sort_values("seed")
                cols.append(ok.success.to_numpy(dtype=float))
            n = min(len(c) for c in cols)
            row = {"suite": suite, "label": label, "n_runs": n, "n_tasks": len(tasks),
                   "complete": all(len(c) == n for c in cols), "iqm": np.nan, "lo": np.nan, "hi": np.nan}
            if n > 0:
                mat = np.stack([c[:n] for c in cols], axis=1)  # (runs, tasks)
                # rliable 1.2's StratifiedBootstrap draws its resamples from numpy's *global* RNG
                # (update_indices calls np.random.choice), not from random_state: seed that too, and
                # put it back, so that the same records always give the same interval
                saved = np.random.get_state()
                np.random.seed(seed)
                try:
                    with warnings.catch_warnings():  # arch's notice about RandomState; seeded on purpose
                        warnings.simplefilter("ignore", FutureWarning)
                        point, interval = rly.get_interval_estimates(
                            {label: mat}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps,
                            random_state=np.random.RandomState(seed))
                finally:
                    np.random.set_state(saved)
                row.update(iqm=float(point[label][0]), lo=float(interval[label][0, 0]),
                           hi=float(interval[label][1, 0]))
            rows.append(row)
    return pd.DataFrame(rows)


def _cell_text(r: pd.Series, with_paper: bool = True) -> str:
    if r.n_ok == 0:
        if r.n_not_implemented == r.n_expected:
            text = f"{MISSING} (not implemented)"
        elif r.n_failed:
            text = f"{MISSING} ({r.n_failed} failed)"
        else:
            text = MISSING
    else:
        text = f"{r['mean']:.1f} ± {r['std']:.1f}"
        if r.n_ok < r.n_expected:
            text += f" ({r.n_ok}/{r.n_expected})"
    if with_paper and not np.isnan(r.paper):
        d = "" if np.isnan(r['diff']) else f", Δ {r['diff']:+.1f}"
        text += f" [paper {r.paper:.1f}{d}]"
    return text


def _iqm_text(r: pd.Series) -> str:
    if r.n_runs == 0:
        return MISSING
    text = f"{r.iqm:.1f} [{r.lo:.1f}, {r.hi:.1f}]"
    if not r.complete:
        text += f" (n={r.n_runs})"
    return text


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("—", "--")):
        s = s.replace(a, b)
    return s


IQM_ROW = "IQM [95% CI]"


def table_rows(spec: Spec, cells: pd.DataFrame, iqm: pd.DataFrame) -> list[tuple[str, str, list[str]]]:
    """The table's body, one ``(kind, first column, cell texts)`` per row, for every output format:
    kind ``suite`` (a heading; no cells), ``task`` (a task's cells, paper values beside) or ``iqm``
    (the suite's IQM row), in the order of the spec's tasks."""
    labels = spec.labels()
    rows: list[tuple[str, str, list[str]]] = []
    for suite in dict.fromkeys(spec.suite_of(t) for t in spec.tasks):
        rows.append(("suite", SUITE_TITLES.get(suite, suite), []))
        for task in [t for t in spec.tasks if spec.suite_of(t) == suite]:
            row = cells[cells.task == task].set_index("label")
            rows.append(("task", spec.task_label(task), [_cell_text(row.loc[lab]) for lab in labels]))
        irow = iqm[iqm.suite == suite].set_index("label")
        rows.append(("iqm", IQM_ROW, [_iqm_text(irow.loc[lab]) for lab in labels]))
    return rows


@dataclass
class TableReport:
    """A rendered table: the texts and where they were written."""

    markdown: str
    latex: str
    cells: pd.DataFrame
    iqm: pd.DataFrame
    paths: dict[str, Path]


def render_table(spec: Spec, scale: str, store: ResultStore | None = None, out_dir: str | Path | None = None,
                 reps: int = 2000) -> TableReport:
    """Write ``table.md``, ``table.csv`` (long format: cells and IQM rows) and ``table.tex``."""
    df = collect(spec, scale, store)
    cells = table_frame(spec, df)
    iqm = iqm_intervals(spec, df, reps=reps)
    labels = spec.labels()
    counts = df.status.value_counts().to_dict()
    summary = ", ".join(f"{counts.get(k, 0)} {k.replace('_', ' ')}" for k in
                        ("ok", "failed", "not_implemented", "missing") if counts.get(k, 0))

    md = [f"## {spec.title} (scale: {scale})", "",
          f"Final success rate (%), mean ± std over seeds (ok/expected runs when partial); "
          f"[paper value, Δ = ours − paper]; {MISSING} = no result. Runs: {summary}.", ""]
    md.append("| Task | " + " | ".join(_md_escape(lab) for lab in labels) + " |")
    md.append("|---|" + "---|" * len(labels))
    tex = [r"\begin{tabular}{l" + "c" * len(labels) + "}", r"\toprule",
           "Task & " + " & ".join(_tex_escape(lab) for lab in labels) + r" \\", r"\midrule"]
    for kind, first, texts in table_rows(spec, cells, iqm):
        if kind == "suite":
            md.append(f"| **{first}** |" + " |" * len(labels))
            tex.append(rf"\multicolumn{{{len(labels) + 1}}}{{l}}{{\textit{{{_tex_escape(first)}}}}} \\")
        elif kind == "task":
            md.append(f"| {_md_escape(first)} | " + " | ".join(map(_md_escape, texts)) + " |")
            tex.append(_tex_escape(first) + " & " + " & ".join(map(_tex_escape, texts)) + r" \\")
        else:
            md.append(f"| *{first}* | " + " | ".join(texts) + " |")
            tex.append(rf"\textit{{{_tex_escape(first)}}} & " + " & ".join(map(_tex_escape, texts)) + r" \\")
            tex.append(r"\midrule")
    tex[-1] = r"\bottomrule"
    tex.append(r"\end{tabular}")
    if spec.paper_notes:
        md += ["", f"Note: {spec.paper_notes}"]
    failed = df[df.status == "failed"]
    if len(failed):
        md += ["", "Failed runs (first error of each):"]
        for _, r in failed.head(20).iterrows():
            md.append(f"- {r.task_label} / {r.label} / seed {r.seed} (`{r.key}`): {str(r.error)[:200]}")
    markdown, latex = "\n".join(md) + "\n", "\n".join(tex) + "\n"

    out = Path(out_dir) if out_dir is not None else report_dir(spec, scale)
    long = pd.concat([cells.assign(kind="cell"),
                      iqm.rename(columns={"iqm": "mean"}).assign(kind="iqm")], ignore_index=True)
    paths = {"md": out / "table.md", "csv": out / "table.csv", "tex": out / "table.tex"}
    atomic_write_bytes(paths["md"], markdown.encode())
    atomic_write_bytes(paths["csv"], long.to_csv(index=False).encode())
    atomic_write_bytes(paths["tex"], latex.encode())
    return TableReport(markdown=markdown, latex=latex, cells=cells, iqm=iqm, paths=paths)


def curve_data(spec: Spec, scale: str, store: ResultStore | None = None, n_boot: int = 1000,
               seed: int = 0) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Per (task, label) with at least one finished run: steps, mean, lo, hi (percent), n seeds.

    Seeds' curves are put on the union of their evaluation steps (linear interpolation, held flat
    past the ends); the band is a 95% percentile bootstrap over seeds of the mean.
    """
    store = store or ResultStore()
    rng = np.random.default_rng(seed)
    curves: dict[tuple[str, str], list[np.ndarray]] = {}
    for run, rec in spec_status(spec, scale, store):
        if rec is None or rec.get("status") != "ok" or not rec.get("curve"):
            continue
        curves.setdefault((run.task, run.label), []).append(np.asarray(rec["curve"], dtype=float))
    out = {}
    for k, cs in curves.items():
        steps = np.unique(np.concatenate([c[:, 0] for c in cs]))
        ys = np.stack([np.interp(steps, c[:, 0], c[:, 1]) for c in cs]) * 100.0  # (seeds, steps)
        idx = rng.integers(0, len(cs), size=(n_boot, len(cs)))
        boot = ys[idx].mean(axis=1)  # (n_boot, steps)
        out[k] = {"steps": steps, "mean": ys.mean(axis=0), "lo": np.percentile(boot, 2.5, axis=0),
                  "hi": np.percentile(boot, 97.5, axis=0), "n": np.array(len(cs))}
    return out


def render_curves(spec: Spec, scale: str, store: ResultStore | None = None,
                  out_dir: str | Path | None = None) -> Path:
    """One PNG for the spec: a panel per task, a line (mean) and band (95% CI) per method; a dashed
    line marks the paper's final value where the spec has one."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curve_data(spec, scale, store)
    n = len(spec.tasks)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, task in zip(axes[0], spec.tasks):
        any_line = False
        for i, label in enumerate(spec.labels()):
            d = data.get((task, label))
            if d is None:
                continue
            c = colors[i % len(colors)]
            ax.plot(d["steps"], d["mean"], color=c, label=f"{label} (n={int(d['n'])})")
            ax.fill_between(d["steps"], d["lo"], d["hi"], color=c, alpha=0.2, linewidth=0)
            paper = spec.paper_value(task, label)
            if paper is not None:  # the paper's final value, for comparison
                ax.axhline(paper, color=c, linestyle="--", linewidth=0.8, alpha=0.7)
            any_line = True
        if not any_line:
            ax.text(0.5, 0.5, "no results yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(spec.task_label(task))
        ax.set_xlabel("gradient steps" if spec.suite_of(task) == "maniskill" else "environment steps")
        ax.set_ylabel("success rate (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        if any_line:
            ax.legend(fontsize=7, loc="best")
    # wrapped to the figure's width: a one-panel figure is narrower than most titles
    fig.suptitle(textwrap.fill(f"{spec.title} (scale: {scale})", width=max(30, int(4.2 * n * 12))), fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out = Path(out_dir) if out_dir is not None else report_dir(spec, scale)
    path = out / "curves.png"
    atomic_write_bytes(path, buf.getvalue())
    return path


@dataclass
class ClaimVerdict:
    """One claim of a spec judged on the stored records at a scale.

    ``verdict``: ``pass`` / ``fail`` (every run of its cells finished, the scale has a margin or
    tolerance); ``not checked`` (the scale sets none: smoke only checks that runs finish; ``detail``
    still gives the numbers and what a margin of 0 would say); ``incomplete`` (some of its runs are
    missing or failed; ``detail`` names the cells)."""

    id: str
    text: str
    verdict: str
    detail: str


def _judge(checks: list[tuple[str, str, str, str]], means: dict[tuple[str, str], float],
           slack: float) -> list[str]:
    """Problems of ``checks`` (task, relation, a, b) -- ``geq``: a >= b - slack; ``close``:
    |a - b| <= slack; ``paper``: |a - b| <= slack with b a number -- at these cell means."""
    out = []
    for task, rel, a, b in checks:
        ma = means[(task, a)]
        mb = float(b) if rel == "paper" else means[(task, b)]
        if rel == "geq" and ma < mb - slack:
            out.append(f"{task}: {a} {ma:.1f} < {b} {mb:.1f} {'-' if slack >= 0 else '+'} {abs(slack):g}")
        elif rel in ("close", "paper") and abs(ma - mb) > slack:
            other = f"paper {mb:.1f}" if rel == "paper" else f"{b} {mb:.1f}"
            out.append(f"{task}: |{a} {ma:.1f} - {other}| > {slack:g}")
    return out


def _claim_checks(spec: Spec, claim) -> list[tuple[str, str, str, str]]:
    """A claim as (task, relation, label a, label b) comparisons (see :func:`_judge`); a
    :class:`~relam.experiments.spec.CellClaim` is one ``paper`` comparison (b: the paper's number)."""
    from relam.experiments.spec import BestClaim, CellClaim, CloseClaim, OrderingClaim

    if isinstance(claim, CellClaim):
        return [(claim.task, "paper", claim.label, str(claim.paper))]
    out = []
    for t in claim.tasks or spec.tasks:
        if isinstance(claim, OrderingClaim):
            out += [(t, "geq", claim.better, o) for o in claim.than]
        elif isinstance(claim, BestClaim):
            out += [(t, "geq", claim.best, o) for o in (claim.among or spec.labels()) if o != claim.best]
        elif isinstance(claim, CloseClaim):
            out.append((t, "close", *claim.labels))
    return out


def claim_cells(spec: Spec, claim) -> list[tuple[str, str]]:
    """The (task, label) cells whose runs a claim (a spec claim or a paper number's
    :class:`~relam.experiments.spec.CellClaim`) is judged on, in order."""
    return list(dict.fromkeys((t, lab) for t, rel, a, b in _claim_checks(spec, claim)
                              for lab in ((a,) if rel == "paper" else (a, b))))


def judge_claim(spec: Spec, scale: str, claim, cells: pd.DataFrame) -> ClaimVerdict:
    """One claim (a spec claim within its margin, or a paper number's CellClaim within the spec's
    tolerance) judged on the cells of :func:`table_frame` at ``scale``: the one judge of claims, for
    the report page and the reproduction tests alike (see :class:`ClaimVerdict`)."""
    from relam.experiments.spec import CellClaim

    by_cell = cells.set_index(["task", "label"])
    checks = _claim_checks(spec, claim)
    slack = spec.tolerance.at(scale) if isinstance(claim, CellClaim) else claim.margin.at(scale)
    gap = getattr(claim, "gap", None)
    if slack is not None and gap is not None and gap.at(scale) is not None:
        slack -= gap.at(scale)  # an ordering with a gap: better >= than + gap - margin
    involved = claim_cells(spec, claim)
    short = [f"{t}/{lab} ({int(by_cell.loc[(t, lab)].n_ok)}/{int(by_cell.loc[(t, lab)].n_expected)} runs)"
             for t, lab in involved if by_cell.loc[(t, lab)].n_ok < by_cell.loc[(t, lab)].n_expected]
    means = {k: float(by_cell.loc[k]["mean"]) for k in involved}  # nan for a cell with no run
    problems = _judge(checks, means, 0.0 if slack is None else slack)
    if short:
        so_far = "" if any(np.isnan(v) for v in means.values()) else (
            "; on the finished runs it would " + ("fail: " + "; ".join(problems) if problems else "hold"))
        return ClaimVerdict(claim.id, claim.text, "incomplete", "runs missing or failed: " + ", ".join(short) + so_far)
    if slack is None:
        detail = (f"scale {scale} sets no margin; with a margin of 0 it would "
                  + ("fail: " + "; ".join(problems) if problems else "hold"))
        return ClaimVerdict(claim.id, claim.text, "not checked", detail)
    return ClaimVerdict(claim.id, claim.text, "fail" if problems else "pass",
                        "; ".join(problems) if problems else (f"holds within {slack:g} points" if slack >= 0
                                                              else f"holds with a lead of at least {-slack:g} points"))


def evaluate_claims(spec: Spec, scale: str, cells: pd.DataFrame) -> list[ClaimVerdict]:
    """The spec's claims, then one per paper number (within the spec's tolerance), each judged by
    :func:`judge_claim` on the cells of :func:`table_frame` -- as the reproduction tests judge them."""
    return [judge_claim(spec, scale, c, cells) for c in [*spec.claims, *spec.cell_claims()]]
