import pytest

from sgdtemp.analysis import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    VERDICTS,
    Claim,
    all_claims,
    analyze,
    checks_claims,
)


def _by_id(claims):
    return {c.id: c for c in claims}


def test_every_claim_has_a_verdict_a_rule_and_numbers(make_store):
    claims = all_claims(analyze(make_store()))
    assert [c.id for c in claims][:11] == [f"C{i}" for i in range(1, 12)]
    for c in claims:
        assert c.verdict in VERDICTS and c.rule and c.measured


def test_invariant_truth_with_a_falling_trend_gives_holds(make_store):
    c = _by_id(all_claims(analyze(make_store())))
    for cid in ("C1", "C2", "C3", "C4", "C7", "C8", "C9"):
        assert c[cid].verdict == HOLDS, (cid, c[cid].measured)
    assert "fig-curves" == c["C1"].figure


def test_verdicts_follow_the_data_not_the_paper(make_store):
    c = _by_id(
        all_claims(analyze(make_store(break_invariance=0.1, trend=-0.02, curvature_power=-0.5)))
    )
    assert c["C1"].verdict == DOES_NOT_HOLD and "breaks at" in c["C1"].measured
    assert c["C3"].verdict == DOES_NOT_HOLD
    assert c["C4"].verdict == DOES_NOT_HOLD
    assert c["C7"].verdict == DOES_NOT_HOLD


def test_domain_shift_claims_follow_the_domain_trend(make_store):
    helps = _by_id(all_claims(analyze(make_store(domain_trend=0.1))))
    hurts = _by_id(all_claims(analyze(make_store(domain_trend=-0.1))))
    assert helps["C6"].verdict == HOLDS and hurts["C6"].verdict == DOES_NOT_HOLD
    assert "dominates" in helps["C6"].measured
    assert hurts["C5"].verdict == DOES_NOT_HOLD


def test_what_was_not_measured_says_so(make_store):
    c = _by_id(all_claims(analyze(make_store(seeds=(0,), shift=False))))
    assert c["C1"].verdict == NOT_MEASURED and c["C2"].verdict == NOT_MEASURED
    assert c["C8"].verdict == NOT_MEASURED and c["C9"].verdict == NOT_MEASURED


def test_no_sweep_and_no_studies():
    claims = all_claims(None)
    assert {c.verdict for c in claims} == {NOT_MEASURED}
    assert [c.id for c in claims] == ["C0", "TM0", "S0"]


def test_study_checks_map_to_verdicts():
    checks = [
        {"claim": "a", "holds": True, "detail": "x"},
        {"claim": "b", "holds": False, "detail": "y"},
        {"claim": "c", "holds": None, "detail": "z"},
    ]
    claims = checks_claims(checks, prefix="TM", source="§4", figure="fig-two-minima", missing="")
    assert [(c.id, c.verdict, c.measured) for c in claims] == [
        ("TM1", HOLDS, "x"),
        ("TM2", DOES_NOT_HOLD, "y"),
        ("TM3", NOT_MEASURED, "z"),
    ]
    tm = _by_id(all_claims(None, two_minima={"checks": checks}))
    assert tm["TM2"].verdict == DOES_NOT_HOLD


def test_a_claim_rejects_unknown_verdicts():
    with pytest.raises(ValueError):
        Claim("X", "s", "c", "maybe", "r", "m")


def test_one_temperature_cannot_show_a_trend(make_store):
    c = _by_id(all_claims(analyze(make_store(temperatures=(1 / 1024,)))))
    for cid in ("C3", "C4", "C5", "C6", "C7", "C9"):
        assert c[cid].verdict == NOT_MEASURED, (cid, c[cid].measured)
    assert "confidence interval" in c["C3"].measured
