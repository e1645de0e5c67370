"""Every Python block of the README runs as it stands (a script in an empty folder); every TOML
block is a valid sweep spec."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
SPECS = re.findall(r"^```toml\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path):
    script = tmp_path / f"block{index}.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{out.stderr}"
    assert out.stdout.strip(), "a README block should show its result"


@pytest.mark.parametrize("index", range(len(SPECS)))
def test_readme_spec_parses(index):
    from sgdtemp.experiments.spec import parse_spec

    assert parse_spec(SPECS[index], source="README.md").grid
