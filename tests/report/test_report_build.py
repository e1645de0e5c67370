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
