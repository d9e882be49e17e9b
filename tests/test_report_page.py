"""`relam report SPEC`: one self-contained HTML page with the table beside the paper, the learning
curves (an embedded PNG), the claims judged pass / fail, and the provenance of every run."""
from __future__ import annotations

import base64
import io
import re

import matplotlib.image as mpimg
import pytest
import yaml

from relam import cli
from relam.experiments import ResultStore, expand, load_spec, run_spec
from relam.experiments.report_page import render_page
from relam.experiments.reports import evaluate_claims, render_table
from relam.experiments.store import git_commit, machine_info, package_versions


@pytest.fixture()
def spec(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RELAM_SCALE", raising=False)
    budgets = {s: {"train_steps": 30, "eval_every": 10, "eval_episodes": 1} for s in ("smoke", "quick", "paper")}
    data = {
        "name": "page", "title": "Page <test> & co", "report": "table",
        "tasks": ["drawer-open-v3", "door-open-v3"],
        "methods": [{"label": "High", "method": "synthetic", "settings": {"level": 0.8}},
                    {"label": "Low", "method": "synthetic", "settings": {"level": 0.2}}],
        "seeds": [0, 1],
        "budgets": {"metaworld": budgets},
        "paper": {"drawer-open-v3": {"High": 78.0, "Low": 60.0}},
        "tolerance": {"quick": 10.0},
        "claims": [
            {"id": "high-beats-low", "kind": "ordering", "text": "High beats Low", "better": "High",
             "than": ["Low"], "margin": {"quick": 0.0}},
            {"id": "low-is-best", "kind": "best", "text": "Low is best", "best": "Low", "margin": {"quick": 5.0}},
            {"id": "close", "kind": "close", "text": "High and Low are close", "labels": ["High", "Low"],
             "margin": {"quick": 100.0}},
            {"id": "high-leads-by-50", "kind": "ordering", "text": "High beats Low by 50", "better": "High",
             "than": ["Low"], "margin": {"quick": 0.0}, "gap": {"quick": 50.0}},
            {"id": "high-leads-by-70", "kind": "ordering", "text": "High beats Low by 70", "better": "High",
             "than": ["Low"], "margin": {"quick": 0.0}, "gap": {"quick": 70.0}},
        ],
    }
    path = tmp_path / "page.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def _verdicts(claims) -> dict[str, str]:
    return {c.id: c.verdict for c in claims}


def test_claims_known_answers(spec):
    run_spec(spec, "quick", progress=False)
    cells = render_table(spec, "quick", reps=50).cells
    v = _verdicts(evaluate_claims(spec, "quick", cells))
    # High ~ 80 and Low ~ 20 on both tasks; the paper says Low 60 on drawer-open (40 points off)
    assert v == {"high-beats-low": "pass", "low-is-best": "fail", "close": "pass",
                 "high-leads-by-50": "pass", "high-leads-by-70": "fail",
                 "drawer-open-v3/High": "pass", "drawer-open-v3/Low": "fail"}
    lead = {c.id: c.detail for c in evaluate_claims(spec, "quick", cells)}
    assert "lead of at least 50" in lead["high-leads-by-50"] and "+ 70" in lead["high-leads-by-70"]
    # smoke sets no margins or tolerance: nothing is judged, but the numbers are given
    smoke = evaluate_claims(spec, "smoke", render_table(spec, "smoke", reps=50).cells)
    assert {c.verdict for c in smoke} == {"incomplete"}  # smoke runs were not run
    run_spec(spec, "smoke", progress=False)
    smoke = evaluate_claims(spec, "smoke", render_table(spec, "smoke", reps=50).cells)
    assert {c.verdict for c in smoke} == {"not checked"}
    assert "with a margin of 0 it would fail: drawer-open-v3: Low" in smoke[1].detail


def test_partial_results_make_claims_incomplete(spec):
    runs = expand(spec, "quick")
    run_spec(spec, "quick", runs=[r for r in runs if not (r.label == "Low" and r.seed == 1)], progress=False)
    claims = evaluate_claims(spec, "quick", render_table(spec, "quick", reps=50).cells)
    c = claims[0]
    assert c.verdict == "incomplete" and "drawer-open-v3/Low (1/2 runs)" in c.detail
    assert "on the finished runs it would hold" in c.detail


def test_page_is_self_contained_with_table_curves_claims_and_provenance(spec, tmp_path, capsys):
    run_spec(spec, "quick", progress=False)
    assert cli.main(["report", str(spec.path), "--scale", "quick", "--out", str(tmp_path / "rep"),
                     "--reps", "100"]) == 0
    out = capsys.readouterr().out
    assert "page [quick]: 8 records; claims: 4 pass, 3 fail" in out
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Page &lt;test&gt; &amp; co" in page  # escaped
    # nothing outside the page is referenced: no links, scripts or files
    assert not re.search(r'(src|href)="(?!data:)', page)
    # the table beside the paper
    assert "<th>High</th><th>Low</th>" in page and "[paper 78.0, Δ" in page and "IQM [95% CI]" in page
    # the curves: an embedded PNG, the same as `relam plot` writes
    [b64] = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    png = base64.b64decode(b64)
    assert png == (tmp_path / "rep" / "curves.png").read_bytes()
    img = mpimg.imread(io.BytesIO(png), format="png")
    assert img.ndim == 3 and img.shape[1] > img.shape[0] > 100
    # claims with their verdicts
    assert re.search(r'<tr class="pass"><td>high-beats-low</td>.*?<b>pass</b>', page)
    assert re.search(r'<tr class="fail"><td>low-is-best</td>.*?<b>fail</b>', page)
    # provenance of every run: key, commit, machine, wall time, versions
    store = ResultStore()
    for run in expand(spec, "quick"):
        rec = store.get(run.key)
        assert f"<code>{run.key}</code>" in page
        assert rec["git_commit"] == git_commit() and rec["machine"] == machine_info()
        assert rec["finished_at"] in page
    assert f"<code>{git_commit()}</code>" in page and machine_info().get("cpu", rec["host"]) in page
    assert f"<td>torch</td><td>{package_versions()['torch']}</td>" in page


def test_page_with_no_results(spec, tmp_path):
    rep = render_page(spec, "quick", out_dir=tmp_path / "rep", reps=50)
    assert rep.n_records == 0 and "no results yet" not in rep.html  # the PNG says it, not the HTML
    assert rep.html.count(">missing<") == 8 and "No records yet." in rep.html
    assert {c.verdict for c in rep.claims} == {"incomplete"}
