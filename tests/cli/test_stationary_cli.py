"""``sgdtemp stationary``: JSON summary, files, the 1-D path and one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sgdtemp.cli import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["stationary", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_isotropic_double_well_matches_gibbs(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(
        capsys,
        "--landscape",
        "double-well-2d",
        "--temperature",
        "0.3",
        "--grid",
        "100",
        "--param",
        "t=-0.2",
        "--sigma",
        "1.2",
    )
    probs = [b["probability"] for b in out["basins"]]
    gibbs = [b["probability"] for b in out["gibbs_basins"]]
    assert len(probs) == 2 and math.isclose(sum(probs), 1.0, abs_tol=1e-12)
    np.testing.assert_allclose(probs, gibbs, rtol=1e-8)
    assert probs[1] > probs[0]  # t < 0: the right basin is deeper
    assert out["mass_error"] < 1e-8
    assert out["detailed_balance"] and out["max_current"] < 1e-10
    assert out["trusted"] and out["wall_sensitivity"] < 1e-9 and out["limited_cells"] == 0
    assert out["params"]["t"] == -0.2 and out["sigma"] == 1.2
    basin = out["basins"][1]
    assert len(basin["location"]) == 2 and len(basin["hessian_eigenvalues"]) == 2


def test_data_noise_breaks_detailed_balance_and_writes_files(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    out = run_json(
        capsys,
        "--landscape",
        "double-well-2d",
        "--noise",
        "data",
        "--temperature",
        "0.08",
        "--sigma",
        "2",
        "--grid",
        "80",
        "--seed",
        "3",
        "--out",
        str(tmp_path),
        "--sgd-chains",
        "400",
        "--sgd-steps",
        "200",
    )
    assert not out["detailed_balance"] and out["current_ratio"] > 1e-3
    assert out["min_density"] >= 0
    names = {p.split("/")[-1] for p in out["files"]}
    assert {"density.png", "effective_potential.png", "current.png", "stationary.npz"} <= names
    with np.load(tmp_path / "stationary.npz") as arrays:
        assert arrays["density"].shape == arrays["loss"].shape == arrays["current"].shape[:2]
        area = (arrays["x"][1] - arrays["x"][0]) * (arrays["y"][1] - arrays["y"][0])
        assert abs(arrays["density"].sum() * area - 1) < 1e-10
    assert json.loads((tmp_path / "stationary.json").read_text())["noise"] == "data"
    sgd = out["sgd"]
    assert len(sgd["basins"]) == 2 and abs(sum(sgd["basins"]) - 1) < 1e-12


def test_same_seed_same_answer(capsys: pytest.CaptureFixture[str]) -> None:
    argv = (
        "--landscape",
        "double-well-2d",
        "--noise",
        "data",
        "--temperature",
        "0.2",
        "--grid",
        "80",
        "--param",
        "n=256",
    )
    a, b = run_json(capsys, *argv, "--seed", "1"), run_json(capsys, *argv, "--seed", "1")
    c = run_json(capsys, *argv, "--seed", "2")
    assert a["basins"] == b["basins"] and a["basins"] != c["basins"]


def test_issue_18_law_is_flagged_as_depending_on_the_walls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Data noise at T = 0.5: no-flux and projecting walls give basin masses 0.03 apart."""
    assert (
        main(
            [
                "stationary",
                "--landscape",
                "double-well-2d",
                "--noise",
                "data",
                "--temperature",
                "0.5",
                "--grid",
                "60",
                "--json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert not out["trusted"] and out["wall_sensitivity"] > 0.02 and out["walls"] == "no-flux"
    left = out["basins"][0]
    assert left["probability_projected"] - left["probability"] > 0.02
    assert out["limited_flux_ratio"] > 0 and out["wall_flux_ratio"] > 0
    assert "not trusted" in captured.err and "walls" in captured.err
    assert len(captured.err.strip().splitlines()) <= 2  # one line per warning


def test_one_dimensional_family_uses_exact_law(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--landscape", "two-minima", "--temperature", "0.02", "--grid", "100")
    assert out["method"] == "exact 1-D quadrature"
    probs = [b["probability"] for b in out["basins"]]
    gibbs = [b["probability"] for b in out["gibbs_basins"]]
    # isotropic noise: the law is Gibbs; the two differ only by the trapezoid error of int L'/C
    np.testing.assert_allclose(probs, gibbs, rtol=1e-4)
    assert out["mass_error"] < 1e-8 and len(out["basins"][0]["location"]) == 1


def test_human_readable_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["stationary", "--landscape", "double-well-2d", "--temperature", "0.3", "--grid", "100"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "P (Gibbs)" in text and "detailed balance holds" in text


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--landscape", "nope", "--temperature", "0.1"], "unknown landscape 'nope'"),
        (
            ["--landscape", "double-well-2d", "--temperature", "0.1", "--param", "q=1"],
            "unknown parameter 'q'",
        ),
        (["--landscape", "double-well-2d", "--temperature", "0.1", "--param", "t"], "K=V"),
        (
            ["--landscape", "double-well-2d", "--temperature", "0.1", "--param", "translation=1"],
            "only with --noise data",
        ),
        (["--landscape", "double-well-2d", "--temperature", "0"], "--temperature must be"),
        (["--landscape", "double-well-2d", "--temperature", "-1"], "--temperature must be"),
        (
            ["--landscape", "double-well-2d", "--temperature", "0.1", "--sigma", "0"],
            "--sigma must be",
        ),
        (["--landscape", "double-well-2d", "--temperature", "0.1", "--grid", "4"], "too small"),
        (
            ["--landscape", "double-well-2d", "--temperature", "0.005", "--grid", "16"],
            "too coarse to resolve the basin",
        ),
        (
            ["--landscape", "double-well-2d", "--temperature", "0.1", "--param", "t=3"],
            "single minimum",
        ),
        (
            ["--landscape", "two-minima", "--temperature", "0.1", "--domain", "0", "1", "0", "1"],
            "only to 2-D",
        ),
    ],
    ids=[
        "landscape",
        "param",
        "param-form",
        "param-noise",
        "T0",
        "Tneg",
        "sigma",
        "grid-small",
        "grid-coarse",
        "bad-t",
        "domain-1d",
    ],
)
def test_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], match: str
) -> None:
    assert main(["stationary", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sgdtemp stationary: error:") and match in err
    assert err.count("\n") == 1
