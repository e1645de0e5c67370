import pytest

from sgdtemp.analysis.synthetic import SyntheticSweep, write_synthetic_sweep


@pytest.fixture
def make_store(tmp_path):
    """Write a simulated sweep (real SQLite through the store API) and return its path."""
    count = 0

    def make(**truth):
        nonlocal count
        count += 1
        db = tmp_path / f"runs{count}.db"
        write_synthetic_sweep(db, SyntheticSweep(**truth))
        return db

    return make
