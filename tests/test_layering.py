"""The layering of design.md: the math layers pull in no plotting, storage or cluster code."""

import importlib.util
import subprocess
import sys

import pytest

MATH_LAYERS = [
    "sgdtemp",
    "sgdtemp.theory",
    "sgdtemp.landscapes",
    "sgdtemp.simulate",
    "sgdtemp.curvature",
    "sgdtemp.shift",
    "sgdtemp.train",
    "sgdtemp.monitor",
]
FORBIDDEN = [
    "matplotlib",
    "sqlite3",
    "ray",
    "dask",
    "distributed",
    "sgdtemp.cli",
    "sgdtemp.storage",
    "sgdtemp.plotting",
    "sgdtemp.experiments",
    # the monitor's sinks and integrations import these only when they are made
    "mlflow",
    "tensorboard",
    "lightning",
    "transformers",
]


@pytest.mark.parametrize("module", MATH_LAYERS)
def test_math_layer_imports_nothing_heavy(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet")
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {module} pulled in {out.stdout.strip()}"


def test_nothing_imports_the_cli():
    import pathlib

    import sgdtemp

    root = pathlib.Path(sgdtemp.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "cli" not in p.relative_to(root).parts
        and p.name != "__main__.py"
        and "sgdtemp.cli" in p.read_text()
    ]
    assert offenders == []
