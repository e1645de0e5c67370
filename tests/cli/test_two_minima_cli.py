import json
import subprocess
import sys

import pytest

from sgdtemp.cli import main

TINY = """
n_train = 256
n_test = 256
n_chains = 32
n_steps = 1000
min_steps = 200
record_every = 4
grid_points = 401
[noise_models.isotropic]
temperatures = [0.032]
[noise_models.translation]
temperatures = [0.065]
"""


@pytest.fixture()
def tiny_toml(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_runs_and_writes_outputs(tmp_path, tiny_toml, capsys):
    out = tmp_path / "out"
    assert main(["two-minima", "--config", str(tiny_toml), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    on_disk = json.loads((out / "summary.json").read_text())
    assert printed["cells"] == on_disk["cells"]
    assert (out / "data.npz").exists()
    for name in ("landscape", "densities", "p_wide", "test_loss", "iso_temperature"):
        assert (out / f"{name}.png").stat().st_size > 1000


def test_the_plan_is_said_before_the_table(tmp_path, tiny_toml, capsys):
    """Cells that cannot equilibrate within the budget are named up front, then shown as not
    simulated, with the predicted relaxation steps beside the steps run."""
    out = tmp_path / "out"
    assert main(["two-minima", "--config", str(tiny_toml), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    skipped = [c for c in summary["cells"] if not c["simulated"]]
    assert skipped and len(skipped) < len(summary["cells"])
    head, table = text.split("\nnoise ", 1)
    assert head.startswith("plan: ")
    for c in skipped:
        assert f"not simulated: {c['noise']} T={c['T']:g} B={c['batch_size']}" in head
    assert "relax" in table.splitlines()[0] and "steps" in table.splitlines()[0]
    assert "[holds]" in table
    # the sampling SGD was judged in, and the other scheme's column and statement
    assert "SGD minibatches with replacement" in head.splitlines()[0]
    assert "SGD drew minibatches with replacement" in head
    assert "other: SGD reshuffled every epoch, shown, not judged" in head
    assert "other" in table.splitlines()[0]
    assert "\nsampling comparison: " in table


def test_existing_results_are_kept(tmp_path, tiny_toml, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("precious")
    code = main(["two-minima", "--config", str(tiny_toml), "--out", str(out)])
    assert code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "precious"


@pytest.mark.parametrize(
    "config_text, needle",
    [
        ("n_chains = -2\n", "n_chains"),
        ("lr_scale = 0\n", "lr_scale"),
        ("[noise_models.foo]\n", "foo"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, config_text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(config_text)
    out = tmp_path / "never"
    proc = subprocess.run(
        [sys.executable, "-m", "sgdtemp", "two-minima", "--config", str(cfg), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert needle in proc.stderr
    assert not out.exists()
