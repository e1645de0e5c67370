"""The two-minima verdicts, computed from cells written by hand (each rule passing and failing)."""

from typing import Any

import pytest

from sgdtemp.experiments.two_minima.cell import _agreement
from sgdtemp.experiments.two_minima.checks import checks, iso_temperature
from sgdtemp.experiments.two_minima.sampling import regime_note, sampling_comparison


def _cell(
    noise: str,
    T: float,
    B: int,
    *,
    p_sgd: float | None = 0.5,
    p_sde: float | None = None,
    p_fp: float = 0.5,
    p_gibbs: float = 0.5,
    lr_sharpness: float = 0.1,
    equilibrated: bool = True,
    stderr: float = 0.01,
    domain: float = 1.0,
) -> dict[str, Any]:
    simulated = p_sgd is not None
    c: dict[str, Any] = {
        "noise": noise,
        "T": T,
        "batch_size": B,
        "lr": T * B,
        "lr_sharpness": lr_sharpness,
        "simulated": simulated,
        "p_wide_fp": p_fp,
        "p_wide_gibbs": p_gibbs,
        "p_wide_sgd": p_sgd,
        "p_wide_sde": (p_fp if p_sde is None else p_sde) if simulated else None,
        "equilibrated": equilibrated and simulated,
        "test_loss": {"domain": domain, "sampling": 1.0} if simulated else None,
        "test_loss_fp": {"domain": domain, "sampling": 1.0},
    }
    stats = {"equilibrated": c["equilibrated"], "stderr": stderr}
    c["sgd"] = {**stats, "p_wide": p_sgd} if simulated else None
    c["sde"] = {**stats, "p_wide": c["p_wide_sde"]} if simulated else None
    c["agreement"] = _agreement(c, c["sgd"], c["sde"])
    return c


def _summary(cells: list[dict[str, Any]], replacement: bool = True) -> dict[str, Any]:
    return {
        "cells": cells,
        "iso_temperature": iso_temperature(cells),
        "sampling": {"replacement": replacement, "note": regime_note(replacement)},
        "sampling_comparison": sampling_comparison(cells, replacement, 0.3),
    }


def _verdict(summary: dict[str, Any], prefix: str) -> dict[str, Any]:
    found = [c for c in checks(summary) if c["claim"].startswith(prefix)]
    assert len(found) == 1, prefix
    return found[0]


def _isotropic(**kw: Any) -> list[dict[str, Any]]:
    fp = {0.005: 0.15, 0.01: 0.43, 0.02: 0.59}
    return [
        _cell("isotropic", T, B, p_sgd=fp[T], p_fp=fp[T], p_gibbs=fp[T], **kw)
        for T in fp
        for B in (1, 2)
    ]


def _translation(n_comparable: int, *, p_sgd: float = 0.93, stderr: float = 0.01) -> list:
    cells = [
        _cell("translation", T, 1, p_sgd=p_sgd, p_fp=0.92, p_gibbs=0.6, stderr=stderr)
        for T in (0.05, 0.055, 0.06, 0.065)[:n_comparable]
    ]
    cells.append(_cell("translation", 0.04, 1, p_sgd=None, p_fp=0.95, p_gibbs=0.56))
    return cells


def test_the_order_is_the_report_numbering():
    claims = [c["claim"] for c in checks(_summary(_isotropic() + _translation(3)))]
    assert len(claims) == 8
    assert claims[0].startswith("every cell is stable")
    assert claims[6].startswith("chains started in either basin agree")  # TM7
    assert claims[7].startswith("translation: SGD sits closer")  # TM8


def test_test_loss_claim_judges_the_domain_shift_on_equilibrated_cells():
    """The paper's claim is about the domain shift; the sampling series is context, not judged;
    a cell that did not equilibrate is not used."""
    cells = _isotropic()
    for c in cells:
        c["test_loss"]["domain"] = {0.005: 9.0, 0.01: 3.0, 0.02: 2.0}[c["T"]]
        c["equilibrated"] = c["T"] != 0.005
    claim = _verdict(_summary(cells), "isotropic: the domain-shift test loss")
    assert claim["holds"] is True
    assert "domain test loss (SGD, equilibrated cells) by T: n/a, 3.0000, 2.0000" in claim["detail"]
    for c in cells:  # now the domain loss rises across the equilibrated cells
        c["test_loss"]["domain"] = {0.005: 0.0, 0.01: 2.0, 0.02: 3.0}[c["T"]]
    assert _verdict(_summary(cells), "isotropic: the domain-shift")["holds"] is False
    for c in cells:
        c["equilibrated"] = c["T"] == 0.02
    assert _verdict(_summary(cells), "isotropic: the domain-shift")["holds"] is None


@pytest.mark.parametrize("n_comparable, holds", [(2, False), (3, True)])
def test_each_noise_model_needs_three_comparable_cells(n_comparable, holds):
    verdict = _verdict(_summary(_isotropic() + _translation(n_comparable)), "each noise model")
    assert verdict["holds"] is holds
    assert f"translation: {n_comparable} comparable cells" in verdict["detail"]


def test_agreement_within_the_tolerances():
    cells = _isotropic() + _translation(3)
    assert _verdict(_summary(cells), "each noise model")["holds"] is True
    cells[0] = _cell("isotropic", 0.005, 1, p_sgd=0.21, p_fp=0.15)  # SGD 0.06 off
    assert _verdict(_summary(cells), "each noise model")["holds"] is False
    cells[0] = _cell("isotropic", 0.005, 1, p_sgd=0.15, p_sde=0.19, p_fp=0.15)  # SDE 0.04 off
    assert _verdict(_summary(cells), "each noise model")["holds"] is False
    cells[0] = _cell("isotropic", 0.005, 1, p_sgd=0.25, p_fp=0.15, lr_sharpness=0.5)
    assert _verdict(_summary(cells), "each noise model")["holds"] is True  # not comparable


def test_equilibration_check_lists_the_cells_said_up_front():
    cells = _isotropic() + _translation(3)
    verdict = _verdict(_summary(cells), "chains started in either basin")
    assert verdict["holds"] is True
    assert "1 cells not simulated" in verdict["detail"]
    assert "translation T=0.04 B=1" in verdict["detail"]
    cells[1]["equilibrated"] = False
    verdict = _verdict(_summary(cells), "chains started in either basin")
    assert (
        verdict["holds"] is False and "not equilibrated: isotropic T=0.005 B=2" in verdict["detail"]
    )


def test_translation_law_gap_and_sgd_witness():
    cells = _translation(3)
    assert _verdict(_summary(cells), "translation: the effective potential")["holds"] is True
    assert _verdict(_summary(cells), "translation: SGD sits closer")["holds"] is True
    # SGD halfway between the laws: its margin is 0 and does not beat its error bar
    cells = _translation(3, p_sgd=0.76)
    assert _verdict(_summary(cells), "translation: SGD sits closer")["holds"] is False
    # a margin of 0.3 inside a huge error bar proves nothing
    cells = _translation(3, stderr=0.2)
    assert _verdict(_summary(cells), "translation: SGD sits closer")["holds"] is False
    gap = _translation(3)
    for c in gap:
        c["p_wide_gibbs"] = 0.8  # the laws differ by 0.12 only
    assert _verdict(_summary(gap), "translation: the effective potential")["holds"] is False


def test_iso_temperature_groups_judge_only_equilibrated_pairs():
    cells = _isotropic()
    cells[1]["p_wide_sgd"] = 0.25  # T=0.005, B=2 differs from B=1 by 0.1
    groups = {g["T"]: g for g in iso_temperature(cells)}
    assert groups[0.005]["agree_within_0.05"] is False
    assert groups[0.01]["agree_within_0.05"] is True
    cells[1]["equilibrated"] = False
    assert {g["T"]: g for g in iso_temperature(cells)}[0.005]["agree_within_0.05"] is None


def _shown(c: dict[str, Any], p_other: float, *, stderr: float = 0.01, eq: bool = True) -> None:
    """Give a cell the other scheme's run (reshuffled when the cell is with replacement)."""
    other = not c.get("replacement", True)
    c["replacement"] = not other
    c["sampling_comparison"] = {
        "replacement": other,
        "p_wide_fp": c["p_wide_fp"] + 0.001,
        "sgd": {"p_wide": p_other, "stderr": stderr, "equilibrated": eq},
    }


def test_sgd_checks_say_their_sampling_regime():
    cells = _isotropic() + _translation(3)
    for replacement, needle in ((True, "with replacement"), (False, "outside the i.i.d. regime")):
        found = checks(_summary(cells, replacement))
        judged_sgd = [found[i] for i in (2, 4, 5, 6, 7)]  # TM3, TM5, TM6, TM7, TM8
        assert all(needle in c["detail"] for c in judged_sgd)
        assert needle not in found[0]["detail"]  # TM1 does not judge SGD


def test_the_other_sampling_is_shown_not_judged():
    """Reshuffled SGD far from Fokker-Planck changes no verdict; it is tabulated and stated."""
    cells = _isotropic() + _translation(3)
    before = [c["holds"] for c in checks(_summary(cells))]
    _shown(cells[0], 0.30)  # isotropic T=0.005 B=1: FP 0.15, SGD with replacement 0.15
    _shown(cells[2], 0.44)  # T=0.01 B=1: FP 0.43
    _shown(cells[3], 0.60, eq=False)
    summary = _summary(cells)
    assert [c["holds"] for c in checks(summary)] == before
    block = summary["sampling_comparison"]
    assert block["judged"] is False and len(block["cells"]) == 3
    row = block["cells"][0]
    assert row["p_wide_sgd_with_replacement"] == 0.15 and row["p_wide_sgd_reshuffled"] == 0.30
    assert row["p_wide_fp"] == 0.15
    assert row["p_wide_fp_without_replacement_factor"] == pytest.approx(0.151)
    assert row["reshuffled_minus_with_replacement"] == pytest.approx(0.15)
    text = block["statement"]
    assert "in the 2 where both equilibrated" in text
    assert "at most 0.150 reshuffled (isotropic T=0.005 B=1: 0.300 vs FP 0.150)" in text
    assert "more than 3 standard errors in 1 of them" in text
    assert "factor moves p_FP by at most 0.0010" in text
    assert "not equilibrated under one scheme: isotropic T=0.01 B=2" in text
    tm5 = _verdict(summary, "each noise model")
    assert tm5["detail"].endswith("sampling_comparison: " + text)


def test_the_comparison_is_named_by_scheme_when_reshuffling_is_judged():
    """With replacement = false the judged SGD is the reshuffled one: the table's columns still
    mean what their names say."""
    cell = _cell("isotropic", 0.005, 2, p_sgd=0.25, p_fp=0.15)
    cell["replacement"] = False
    _shown(cell, 0.16)
    block = sampling_comparison([cell], False, 0.3)
    assert block["judged_sampling"] == "reshuffled every epoch"
    assert block["shown_sampling"] == "with replacement"
    row = block["cells"][0]
    assert row["p_wide_sgd_reshuffled"] == 0.25 and row["p_wide_sgd_with_replacement"] == 0.16
    assert row["p_wide_fp"] == pytest.approx(0.151)  # the with-replacement law is the shown one's
    assert row["p_wide_fp_without_replacement_factor"] == 0.15
    assert block["statement"].startswith(
        "not judged: SGD with replacement beside the judged SGD reshuffled every epoch"
    )
