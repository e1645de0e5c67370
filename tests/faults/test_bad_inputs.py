"""Every command against bad inputs: exit 2, one stderr line, no traceback, nothing left behind.

Each case is a command line and a fragment its one-line error must contain (so that it fails for
the intended reason). The command runs in-process in an empty working folder; before and after,
every file under that folder and under the shared assets (the user's files: checkpoints, stores,
specs) is hashed: a case passes only if nothing was created, removed or modified. Warnings are
errors in this suite's pytest configuration, so a warning printed before the error fails too.

``{a}`` is the assets folder (see ``conftest.py``), ``{t}`` the case's working folder.
"""

from __future__ import annotations

import pytest
import torch

from sgdtemp.cli import main
from tests.faults.helpers import snapshot

NO_CUDA = not torch.cuda.is_available()
# A folder where nobody may create files, root included (sysfs refuses new files).
READ_ONLY = "/sys/kernel"

TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--lr", "0.1", "--batch-size", "32"]
TRAIN_OK = [*TRAIN, "--epochs", "1"]
CURV = ["curvature", "{a}/checkpoint.pt", "--dataset", "digits"]
SHIFT = ["shift", "{a}/checkpoint.pt", "--dataset", "digits", "--eval-set", "test"]
SCALE = ["scale", "--lr", "0.1", "--batch-size", "32", "--to-batch-size", "64"]
STAT = ["stationary", "--landscape", "double-well-2d", "--temperature", "0.05"]
STAT1 = ["stationary", "--landscape", "two-minima", "--temperature", "0.05"]
SWEEP = ["sweep", "{a}/spec.toml", "--db"]
EXPORT = ["export", "--db"]
REPORT = ["report", "--out", "{t}/report", "--db"]
REPRO = ["reproduce", "--profile", "smoke"]


def spec(text: str) -> str:
    """A sweep spec written into the case's folder (see ``materialize``)."""
    return "SPEC:" + text


def config(text: str) -> str:
    """A two-minima config written into the case's folder."""
    return "CONFIG:" + text


CASES: list[tuple[str, list[str], str]] = [
    # ---------------------------------------------------------------- top level
    ("no-command", [], "required"),
    ("unknown-command", ["frobnicate"], "invalid choice"),
    # ---------------------------------------------------------------- two-minima
    ("tm-missing-config", ["two-minima", "--config", "{t}/nope.toml", "--out", "{t}/o"], "nope"),
    ("tm-bad-toml", ["two-minima", "--config", config("n_chains = = 2"), "--out", "{t}/o"], "TOML"),
    (
        "tm-huge-chains",
        ["two-minima", "--config", config("n_chains = 100000000000"), "--out", "{t}/o"],
        "of memory",
    ),
    (
        "tm-huge-steps",
        [
            "two-minima",
            "--config",
            config(f"n_steps = {10**16}\nmin_steps = {10**16}\nrecord_every = {10**13}"),
            "--out",
            "{t}/o",
        ],
        "steps sgdtemp runs at most",
    ),
    (
        "tm-odd-chains",
        ["two-minima", "--config", config("n_chains = 3"), "--out", "{t}/o"],
        "n_chains",
    ),
    (
        "tm-zero-steps",
        ["two-minima", "--config", config("n_steps = 0"), "--out", "{t}/o"],
        "n_steps",
    ),
    (
        "tm-unknown-key",
        ["two-minima", "--config", config("n_chain = 4"), "--out", "{t}/o"],
        "n_chain",
    ),
    (
        "tm-negative-lr",
        ["two-minima", "--config", config("lr_scale = -1.0"), "--out", "{t}/o"],
        "lr_scale",
    ),
    ("tm-out-empty", ["two-minima", "--quick", "--out", ""], "empty path"),
    ("tm-out-file", ["two-minima", "--quick", "--out", "{a}/a_file.txt"], "not a folder"),
    ("tm-out-read-only", ["two-minima", "--quick", "--out", READ_ONLY + "/o"], "not writable"),
    # ---------------------------------------------------------------- stationary
    ("mon-missing-log", ["monitor", "{t}/nope.jsonl", "--out", "{t}/o"], "no such log file"),
    ("mon-not-a-log", ["monitor", "{a}/spec.toml", "--out", "{t}/o"], "no monitor records"),
    ("mon-out-empty", ["monitor", "{a}/monitor.jsonl", "--out", ""], "empty path"),
    ("mon-out-file", ["monitor", "{a}/monitor.jsonl", "--out", "{a}/a_file.txt"], "not a folder"),
    ("mon-out-read-only", ["monitor", "{a}/monitor.jsonl", "--out", READ_ONLY + "/o"], "writable"),
    (
        "train-monitor-every-0",
        [*TRAIN_OK, "--monitor", "--monitor-every", "0", "--out", "{t}/o"],
        "--monitor-every",
    ),
    (
        "train-monitor-probe-0",
        [*TRAIN_OK, "--monitor", "--monitor-probe", "0", "--out", "{t}/o"],
        "--monitor-probe",
    ),
    ("st-landscape", ["stationary", "--landscape", "nope", "--temperature", "1"], "nope"),
    ("st-temperature-0", [*STAT[:3], "--temperature", "0"], "--temperature"),
    ("st-temperature-nan", [*STAT[:3], "--temperature", "nan"], "--temperature"),
    ("st-temperature-inf", [*STAT[:3], "--temperature", "inf"], "--temperature"),
    ("st-grid-huge-2d", [*STAT, "--grid", "100000000"], "of memory"),
    ("st-grid-huge-1d", [*STAT1, "--grid", "100000000"], "of memory"),
    ("st-grid-huge-out", [*STAT, "--grid", "100000000", "--out", "{t}/st"], "of memory"),
    ("st-grid-small", [*STAT, "--grid", "1"], "too small"),
    ("st-param-unknown", [*STAT, "--param", "bogus=1"], "bogus"),
    ("st-param-form", [*STAT, "--param", "bogus"], "K=V"),
    ("st-param-nan", [*STAT, "--param", "t=nan"], "finite"),
    ("st-sigma", [*STAT, "--sigma", "-1"], "--sigma"),
    ("st-chains-huge", [*STAT, "--sgd-chains", "100000000000", "--out", "{t}/st"], "memory"),
    (
        "st-steps-huge",
        [*STAT, "--sgd-steps", "1000000000000000", "--out", "{t}/st"],
        "steps sgdtemp runs at most",
    ),
    ("st-steps-0", [*STAT, "--sgd-steps", "0"], "--sgd-steps"),
    ("st-domain-1d", [*STAT1, "--domain", "0", "1", "0", "1"], "--domain"),
    ("st-out-file", [*STAT, "--out", "{a}/a_file.txt"], "not a folder"),
    ("st-out-empty", [*STAT, "--out", ""], "empty path"),
    ("st-out-read-only", [*STAT, "--out", READ_ONLY], "not writable"),
    # ---------------------------------------------------------------- train
    ("train-lr-0", [*TRAIN_OK[:5], "0", *TRAIN_OK[6:], "--out", "{t}/r"], "--lr"),
    ("train-lr-nan", [*TRAIN_OK[:5], "nan", *TRAIN_OK[6:], "--out", "{t}/r"], "--lr"),
    ("train-lr-inf", [*TRAIN_OK[:5], "inf", *TRAIN_OK[6:], "--out", "{t}/r"], "--lr"),
    ("train-batch-0", [*TRAIN_OK[:8], "0", "--epochs", "1", "--out", "{t}/r"], "--batch-size must"),
    (
        "train-batch-huge",
        [*TRAIN_OK[:8], "100000", "--epochs", "1", "--out", "{t}/r"],
        "larger than the training set",
    ),
    ("train-epochs-negative", [*TRAIN, "--epochs", "-1", "--out", "{t}/r"], "--epochs"),
    (
        "train-epochs-huge",
        [*TRAIN, "--epochs", "99999999999999999999", "--out", "{t}/r"],
        "steps sgdtemp runs at most",
    ),
    ("train-epochs-text", [*TRAIN, "--epochs", "many", "--out", "{t}/r"], "invalid int"),
    (
        "train-sde-time-huge",
        [*TRAIN, "--until", "stationary", "--max-sde-time", "1e20", "--out", "{t}/r"],
        "steps sgdtemp runs at most",
    ),
    ("train-sde-time-alone", [*TRAIN_OK, "--max-sde-time", "5", "--out", "{t}/r"], "needs --until"),
    ("train-momentum", [*TRAIN_OK, "--momentum", "1", "--out", "{t}/r"], "--momentum"),
    ("train-weight-decay", [*TRAIN_OK, "--weight-decay", "-1", "--out", "{t}/r"], "--weight-decay"),
    ("train-model", [*TRAIN_OK[:3], "--model", "vgg", *TRAIN_OK[5:], "--out", "{t}/r"], "vgg"),
    ("train-dataset", ["train", "--dataset", "nope", *TRAIN_OK[3:], "--out", "{t}/r"], "nope"),
    ("train-out-empty", [*TRAIN_OK, "--out", ""], "empty path"),
    ("train-out-blank", [*TRAIN_OK, "--out", "  "], "empty path"),
    ("train-out-file", [*TRAIN_OK, "--out", "{a}/a_file.txt"], "not a folder"),
    ("train-out-read-only", [*TRAIN_OK, "--out", READ_ONLY], "not writable"),
    ("train-out-read-only-new", [*TRAIN_OK, "--out", READ_ONLY + "/new/run"], "not writable"),
    ("train-device-tpu", [*TRAIN_OK, "--device", "tpu", "--out", "{t}/r"], "tpu"),
    ("train-eval-unknown", [*TRAIN_OK, "--eval-sets", "corrupt:nope:3", "--out", "{t}/r"], "nope"),
    (
        "train-eval-empty",
        [*TRAIN_OK, "--eval-sets", "heldout,,test", "--out", "{t}/r"],
        "empty entry",
    ),
    ("train-seed", [*TRAIN_OK, "--seed", "-1", "--out", "{t}/r"], "--seed"),
    (
        "train-divergence",
        [*TRAIN_OK, "--divergence-bound", "0", "--out", "{t}/r"],
        "--divergence-bound",
    ),
    ("train-subset-0", [*TRAIN_OK, "--train-subset", "0", "--out", "{t}/r"], "subset"),
    ("train-heldout-big", [*TRAIN_OK, "--heldout", "100000", "--out", "{t}/r"], "heldout"),
    ("train-norm", [*TRAIN_OK, "--norm", "layer", "--out", "{t}/r"], "invalid choice"),
    ("train-width-0", [*TRAIN_OK, "--width", "0", "--out", "{t}/r"], "width"),
    # ---------------------------------------------------------------- curvature
    ("curv-missing", ["curvature", "{t}/nope.pt", "--dataset", "digits"], "does not exist"),
    ("curv-folder", ["curvature", "{a}", "--dataset", "digits"], "is a folder"),
    ("curv-flipped", ["curvature", "{a}/flipped.pt", "--dataset", "digits"], "damaged"),
    ("curv-weights-flipped", ["curvature", "{a}/weights_flipped.pt", "--dataset", "digits"], "CRC"),
    ("shift-weights-flipped", ["shift", "{a}/weights_flipped.pt", *SHIFT[2:]], "CRC"),
    ("scale-weights-flipped", [*SCALE, "--checkpoint", "{a}/weights_flipped.pt"], "CRC"),
    ("curv-truncated", ["curvature", "{a}/truncated.pt", "--dataset", "digits"], "damaged"),
    ("curv-edited", ["curvature", "{a}/edited.pt", "--dataset", "digits"], "sha256"),
    ("curv-nan", ["curvature", "{a}/nan.pt", "--dataset", "digits"], "non-finite weights"),
    (
        "curv-pickle",
        ["curvature", "{a}/plain.pkl", "--dataset", "digits"],
        "not a PyTorch checkpoint",
    ),
    (
        "curv-foreign",
        ["curvature", "{a}/foreign.pt", "--dataset", "digits"],
        "not an sgdtemp checkpoint",
    ),
    (
        "curv-spec-file",
        ["curvature", "{a}/spec.toml", "--dataset", "digits"],
        "not a PyTorch checkpoint",
    ),
    (
        "curv-other-dataset",
        ["curvature", "{a}/checkpoint.pt", "--dataset", "mnist"],
        "trained on digits",
    ),
    ("curv-probes", [*CURV, "--probes", "0"], "--probes"),
    ("curv-top-k", [*CURV, "--top-k", "-1"], "--top-k"),
    ("curv-top-k-huge", [*CURV, "--top-k", "100000"], "--top-k"),
    ("curv-examples", [*CURV, "--max-examples", "-1"], "--max-examples"),
    ("curv-batch", [*CURV, "--batch-size", "0"], "--batch-size"),
    ("curv-device", [*CURV, "--device", "tpu"], "tpu"),
    ("curv-split", [*CURV, "--split", "nope"], "nope"),
    ("curv-eig-tol", [*CURV, "--eig-tol", "0"], "--eig-tol"),
    ("curv-seed", [*CURV, "--seed", "-1"], "--seed"),
    ("shift-examples", [*SHIFT, "--max-examples", "-1"], "--max-examples"),
    ("shift-batch", [*SHIFT, "--batch-size", "0"], "--batch-size"),
    # ---------------------------------------------------------------- shift
    ("shift-train", [*SHIFT[:5], "train"], "other than train"),
    ("shift-two-sets", [*SHIFT[:5], "test,heldout"], "give one set"),
    ("shift-unknown-set", [*SHIFT[:5], "nope"], "nope"),
    ("shift-grad-tol-inf", [*SHIFT, "--grad-tol", "inf"], "grad_tol"),
    ("shift-grad-tol-nan", [*SHIFT, "--grad-tol", "nan"], "grad_tol"),
    ("shift-grad-tol-neg", [*SHIFT, "--grad-tol", "-1"], "grad_tol"),
    ("shift-rel-tol-nan", [*SHIFT, "--rel-grad-tol", "nan"], "grad_tol"),
    ("shift-mu", [*SHIFT, "--mu", "0"], "--mu"),
    ("shift-mu-inf", [*SHIFT, "--mu", "inf"], "--mu"),
    ("shift-iters", [*SHIFT, "--max-iters", "0"], "--max-iters"),
    ("shift-cg-iters", [*SHIFT, "--max-cg-iters", "0"], "--max-cg-iters"),
    ("shift-objective", [*SHIFT, "--objective", "nope"], "--objective"),
    ("shift-time", [*SHIFT, "--time-limit", "0"], "--time-limit"),
    ("shift-weight-decay", [*SHIFT, "--weight-decay", "-1"], "--weight-decay"),
    ("shift-top-k", [*SHIFT, "--top-k", "-1"], "--top-k"),
    ("shift-flipped", ["shift", "{a}/flipped.pt", *SHIFT[2:]], "damaged"),
    ("shift-nan", ["shift", "{a}/nan.pt", *SHIFT[2:]], "non-finite weights"),
    ("shift-truncated", ["shift", "{a}/truncated.pt", *SHIFT[2:]], "damaged"),
    # ---------------------------------------------------------------- scale
    ("scale-lr-overflow", ["scale", "--lr", "1e308", *SCALE[3:]], "not a positive finite"),
    ("scale-lr-0", ["scale", "--lr", "0", *SCALE[3:]], "lr"),
    ("scale-lr-nan", ["scale", "--lr", "nan", *SCALE[3:]], "lr"),
    ("scale-batch-0", [*SCALE[:3], "--batch-size", "0", *SCALE[5:]], "batch"),
    ("scale-to-batch-0", [*SCALE[:5], "--to-batch-size", "0"], "to_batch_size"),
    ("scale-momentum", [*SCALE, "--momentum", "1"], "momentum"),
    ("scale-sharpness", [*SCALE, "--sharpness", "-1"], "sharpness"),
    ("scale-sharpness-nan", [*SCALE, "--sharpness", "nan"], "sharpness"),
    (
        "scale-both",
        [*SCALE, "--sharpness", "1", "--checkpoint", "{a}/checkpoint.pt"],
        "either --sharpness or --checkpoint",
    ),
    ("scale-dataset-alone", [*SCALE, "--dataset", "digits"], "--dataset needs --checkpoint"),
    ("scale-flipped", [*SCALE, "--checkpoint", "{a}/flipped.pt"], "damaged"),
    ("scale-nan", [*SCALE, "--checkpoint", "{a}/nan.pt"], "non-finite weights"),
    ("scale-missing", [*SCALE, "--checkpoint", "{t}/nope.pt"], "does not exist"),
    ("scale-n-train", [*SCALE, "--n-train", "10"], "larger than the training set"),
    # ---------------------------------------------------------------- sweep
    ("sweep-missing-spec", ["sweep", "{t}/nope.toml", "--db", "{t}/r.db"], "no such sweep spec"),
    ("sweep-bad-toml", ["sweep", spec("grid = ["), "--db", "{t}/r.db"], "not valid TOML"),
    (
        "sweep-unknown-key",
        [
            "sweep",
            spec('dataset="digits"\nmodel="mlp"\nepoch=1\n[grid]\nlrs=[0.1]\nbatch_sizes=[8]'),
            "--db",
            "{t}/r.db",
        ],
        "epoch",
    ),
    ("sweep-no-grid", ["sweep", spec('dataset="digits"\nmodel="mlp"'), "--db", "{t}/r.db"], "grid"),
    (
        "sweep-device-tpu",
        [
            "sweep",
            spec('dataset="digits"\nmodel="mlp"\ndevice="tpu"\n[grid]\nlrs=[0.1]\nbatch_sizes=[8]'),
            "--db",
            "{t}/r.db",
        ],
        "unknown device",
    ),
    (
        "sweep-batch-huge",
        [
            "sweep",
            spec('dataset="digits"\nmodel="mlp"\n[grid]\nlrs=[0.1]\nbatch_sizes=[100000]'),
            "--db",
            "{t}/r.db",
        ],
        "exceeds",
    ),
    (
        "sweep-epochs-0",
        [
            "sweep",
            spec('dataset="digits"\nmodel="mlp"\nepochs=0\n[grid]\nlrs=[0.1]\nbatch_sizes=[8]'),
            "--db",
            "{t}/r.db",
        ],
        "epochs",
    ),
    (
        "sweep-lr-nan",
        [
            "sweep",
            spec('dataset="digits"\nmodel="mlp"\n[grid]\nlrs=[nan]\nbatch_sizes=[8]'),
            "--db",
            "{t}/r.db",
        ],
        "lrs",
    ),
    ("sweep-db-foreign", [*SWEEP, "{a}/foreign.db"], "another program"),
    ("sweep-db-garbage", [*SWEEP, "{a}/garbage.db"], "not an sgdtemp store"),
    ("sweep-db-newer", [*SWEEP, "{a}/newer.db"], "newer than this sgdtemp"),
    ("sweep-db-folder", [*SWEEP, "{a}"], "is a folder"),
    ("sweep-db-empty-path", [*SWEEP, ""], "empty"),
    ("sweep-max-attempts", [*SWEEP, "{t}/r.db", "--max-attempts", "0"], "--max-attempts"),
    ("sweep-address-local", [*SWEEP, "{t}/r.db", "--address", "x:1"], "--address"),
    ("sweep-workers", [*SWEEP, "{t}/r.db", "--workers", "0"], "--workers"),
    # ---------------------------------------------------------------- report
    ("report-missing", [*REPORT, "{t}/nope.db"], "no such store"),
    ("report-garbage", [*REPORT, "{a}/garbage.db"], "not an sgdtemp store"),
    ("report-foreign", [*REPORT, "{a}/foreign.db"], "another program"),
    ("report-empty", [*REPORT, "{a}/empty.db"], "is empty"),
    ("report-tampered", [*REPORT, "{a}/tampered.db"], "damaged"),
    ("report-sweep", [*REPORT, "{a}/store.db", "--sweep", "nope"], "nope"),
    (
        "report-out-file",
        ["report", "--db", "{a}/store.db", "--out", "{a}/a_file.txt"],
        "not a folder",
    ),
    ("report-out-empty", ["report", "--db", "{a}/store.db", "--out", ""], "empty path"),
    (
        "report-out-read-only",
        ["report", "--db", "{a}/store.db", "--out", READ_ONLY + "/r"],
        "not writable",
    ),
    # ---------------------------------------------------------------- reproduce
    ("repro-device-tpu", [*REPRO, "--device", "tpu", "--out", "{t}/q"], "unknown device"),
    ("repro-workers", [*REPRO, "--workers", "0", "--out", "{t}/q"], "--workers"),
    ("repro-data-root", [*REPRO, "--data-root", "{t}/nope", "--out", "{t}/q"], "no such folder"),
    ("repro-out-file", [*REPRO, "--out", "{a}/a_file.txt"], "not a folder"),
    ("repro-out-empty", [*REPRO, "--out", ""], "empty path"),
    ("repro-out-read-only", [*REPRO, "--out", READ_ONLY + "/q"], "not writable"),
    ("repro-profile", ["reproduce", "--profile", "huge", "--out", "{t}/q"], "invalid choice"),
    # ---------------------------------------------------------------- export
    ("export-missing", [*EXPORT, "{t}/nope.db"], "no such store"),
    ("export-empty-file", [*EXPORT, "{a}/empty.db"], "is empty"),
    ("export-empty-sqlite", [*EXPORT, "{a}/emptysql.db"], "is empty"),
    ("export-foreign", [*EXPORT, "{a}/foreign.db"], "another program"),
    ("export-garbage", [*EXPORT, "{a}/garbage.db"], "not an sgdtemp store"),
    ("export-newer", [*EXPORT, "{a}/newer.db"], "newer than this sgdtemp"),
    ("export-tampered", [*EXPORT, "{a}/tampered.db"], "damaged"),
    ("export-folder", [*EXPORT, "{a}"], "no such store"),
    ("export-sweep", [*EXPORT, "{a}/store.db", "--sweep", "nope"], "nope"),
    (
        "export-out-read-only",
        [*EXPORT, "{a}/store.db", "--out", READ_ONLY + "/x.csv"],
        "not writable",
    ),
    ("export-out-folder", [*EXPORT, "{a}/store.db", "--out", "{t}"], "is a folder"),
    ("export-out-no-folder", [*EXPORT, "{a}/store.db", "--out", "{t}/no/x.csv"], "does not exist"),
    ("export-out-empty", [*EXPORT, "{a}/store.db", "--out", ""], "empty path"),
    ("export-parquet-stdout", [*EXPORT, "{a}/store.db", "--format", "parquet"], "--out"),
    ("export-json-stdout", [*EXPORT, "{a}/store.db", "--json"], "--out"),
    ("export-format", [*EXPORT, "{a}/store.db", "--format", "xlsx"], "invalid choice"),
    # ---------------------------------------------------------------- download
    ("download-name", ["download", "nope", "--root", "{t}/cache"], "nope"),
    ("download-root-empty", ["download", "mnist", "--root", ""], "empty path"),
    (
        "download-root-read-only",
        ["download", "mnist", "--root", READ_ONLY + "/c"],
        "cannot be created",
    ),
    (
        "download-refused",
        ["download", "mnist", "--root", "{t}/cache", "--base-url", "http://127.0.0.1:9/"],
        "could not download",
    ),
]

CUDA_CASES: list[tuple[str, list[str], str]] = [
    ("train-device-cuda", [*TRAIN_OK, "--device", "cuda", "--out", "{t}/r"], "CUDA"),
    ("curv-device-cuda", [*CURV, "--device", "cuda"], "CUDA"),
    (
        "sweep-device-cuda",
        [
            "sweep",
            spec(
                'dataset="digits"\nmodel="mlp"\ndevice="cuda"\n[grid]\nlrs=[0.1]\nbatch_sizes=[8]'
            ),
            "--db",
            "{t}/r.db",
        ],
        "CUDA",
    ),
    ("repro-device-cuda", [*REPRO, "--device", "cuda", "--out", "{t}/q"], "CUDA"),
]


def materialize(argv: list[str], assets, folder) -> list[str]:
    """Fill in the placeholders; inline specs and configs become files beside the case folder."""
    out = []
    for i, arg in enumerate(argv):
        for prefix, name in (("SPEC:", "spec.toml"), ("CONFIG:", "config.toml")):
            if arg.startswith(prefix):
                path = folder.parent / f"{folder.name}-{i}-{name}"
                path.write_text(arg[len(prefix) :] + "\n")
                arg = str(path)
        out.append(arg.format(a=assets, t=folder))
    return out


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)


def check_bad_input(argv, expected, assets, tmp_path, monkeypatch, capfd) -> str:
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    args = materialize(argv, assets, folder)
    before = snapshot(assets, tmp_path)
    code = run_cli(args)
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("sgdtemp") and "Traceback" not in err
    assert expected in lines[0], lines[0]
    assert out == ""
    assert snapshot(assets, tmp_path) == before  # nothing created, removed or modified
    return lines[0]


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(argv, expected, assets, tmp_path, monkeypatch, capfd):
    check_bad_input(argv, expected, assets, tmp_path, monkeypatch, capfd)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize(
    ("argv", "expected"), [c[1:] for c in CUDA_CASES], ids=[c[0] for c in CUDA_CASES]
)
def test_cuda_asked_on_a_machine_without_it(argv, expected, assets, tmp_path, monkeypatch, capfd):
    check_bad_input(argv, expected, assets, tmp_path, monkeypatch, capfd)


def test_every_command_is_covered():
    from sgdtemp.cli import COMMANDS

    covered = {argv[0] for _, argv, _ in CASES if argv}
    assert {c.replace("_", "-") for c in COMMANDS} <= covered
