import base64
import json
import re

import pytest

from sgdtemp.analysis import VERDICTS
from sgdtemp.errors import UserError
from sgdtemp.report import REPORT_FILES, build_report
from sgdtemp.storage import Store

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_report_is_one_self_contained_page(built_report):
    html = built_report.html.read_text()
    assert sorted(p.name for p in built_report.html.parent.iterdir()) == sorted(REPORT_FILES)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html)
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == built_report.figures
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)


def test_every_claim_is_in_the_table_with_its_verdict_and_figure(built_report):
    html = built_report.html.read_text()
    for claim in built_report.claims:
        assert f"<td>{claim.id}</td>" in html
        assert claim.verdict in VERDICTS
        if claim.figure is not None and claim.verdict != "not measured":
            assert f'id="{claim.figure}"' in html or f"id='{claim.figure}'" in html
    ids = [c.id for c in built_report.claims]
    assert ids[:9] == [f"C{i}" for i in range(1, 10)]
    assert "TM1" in ids and "TM2" in ids and "S1" in ids


def test_studies_beside_the_store_are_included(built_report):
    by_id = {c.id: c for c in built_report.claims}
    assert by_id["TM1"].verdict == "holds"
    assert by_id["TM2"].verdict == "does not hold at this scale"
    assert by_id["S1"].verdict == "holds"
    html = built_report.html.read_text()
    assert "Two minima: p wide" in html and "Stationary law: wide-basin probability" in html


def test_left_out_cells_are_reported(built_report):
    html = built_report.html.read_text()
    assert "diverged" in html and "Left out of the trends" in html


def test_analysis_json_is_strict_json_with_the_claims(built_report):
    data = json.loads(built_report.analysis_json.read_text())  # NaN would not parse back
    assert [c["id"] for c in data["claims"]] == [c.id for c in built_report.claims]
    assert data["analysis"]["sweep"] == "synthetic"
    assert data["two_minima_checks"][0]["holds"] is True


def test_an_empty_store_still_gets_a_report(tmp_path):
    with Store(tmp_path / "runs.db"):
        pass
    result = build_report(tmp_path / "runs.db", tmp_path / "out")
    assert {c.verdict for c in result.claims} == {"not measured"}
    assert "No training runs" in result.html.read_text()


def test_bad_inputs_fail_before_writing(tmp_path):
    with pytest.raises(UserError, match="no such store"):
        build_report(tmp_path / "missing.db", tmp_path / "out")
    with Store(tmp_path / "runs.db"):
        pass
    with pytest.raises(UserError, match="no such folder"):
        build_report(tmp_path / "runs.db", tmp_path / "out", two_minima=tmp_path / "nope")
    (tmp_path / "stationary").mkdir()
    (tmp_path / "stationary" / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="summary"):
        build_report(tmp_path / "runs.db", tmp_path / "out")
    (tmp_path / "stationary" / "summary.json").unlink()
    with pytest.raises(UserError, match="sweep"):
        build_report(tmp_path / "runs.db", tmp_path / "out2", sweep="nope")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_a_stationary_sweep_reports_its_regime_and_mechanisms(built_stationary_report):
    html = built_stationary_report.html.read_text()
    assert "Trained until stationary: 10 of 12 runs became stationary within budget" in html
    assert "weight decay λ = 0.01" in html and "Rule: F = L + λ/2‖θ‖²" in html
    assert "2 runs not stationary within budget" in html
    assert 'id="fig-mechanisms"' in html and "id='tab-mechanisms'" in html
    assert "the descent on test did not converge (max_iters)" in html
    assert "<th>compared at</th>" in html
    by_id = {c.id: c for c in built_stationary_report.claims}
    assert [c for c in by_id if c.startswith("C")] == [f"C{i}" for i in range(1, 12)]
    for cid in ("C3", "C4", "C5", "C6", "C9", "C10", "C11"):
        assert by_id[cid].compared_at == "stationary", cid
        assert f"<td>{cid}</td>" in html


def test_analysis_json_has_the_stationary_interface(built_stationary_report):
    data = json.loads(built_stationary_report.analysis_json.read_text())
    assert (data["runs_total"], data["runs_stationary"]) == (12, 10)
    keys = {
        "eval_set",
        "temperature",
        "runs",
        "vertical",
        "shift_curvature",
        "cross",
        "bias_curvature",
        "covariance_curvature",
        "sum",
        "measured",
    }
    rows = data["decomposition"]
    assert rows and all(keys <= set(row) for row in rows)
    test_rows = {row["temperature"]: row["runs"] for row in rows if row["eval_set"] == "test"}
    assert sorted(test_rows.values()) == [2, 2, 4]  # 2 not stationary, 2 not converged
    assert all("compared_at" in c for c in data["claims"])
    assert {c["compared_at"] for c in data["claims"] if c["id"] in ("C3", "C10")} == {"stationary"}


def test_analysis_json_of_a_fixed_epoch_sweep_has_the_keys_too(built_report):
    data = json.loads(built_report.analysis_json.read_text())
    assert data["runs_stationary"] == 0 and data["decomposition"] == []
    assert data["runs_total"] == len(data["analysis"]["runs"])
    assert all(c["compared_at"] is not None for c in data["claims"])
