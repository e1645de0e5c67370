"""eval_set and parse_eval_sets on digits."""

from __future__ import annotations

import pytest
import torch

from sgdtemp.data import DataSplits, corrupt, eval_set, load_dataset, parse_eval_sets
from sgdtemp.errors import UserError


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    return load_dataset("digits", seed=0)


@pytest.mark.parametrize("spec", ["train", "heldout", "test"])
def test_plain_specs_return_the_split(splits: DataSplits, spec: str) -> None:
    assert eval_set(splits, spec) is getattr(splits, spec)


def test_corrupt_spec_corrupts_the_test_set(splits: DataSplits) -> None:
    shifted = eval_set(splits, "corrupt:gaussian_noise:4", seed=3)
    assert shifted.name == "digits:corrupt:gaussian_noise:4"
    assert torch.equal(shifted.y, splits.test.y) and shifted.n_classes == splits.test.n_classes
    assert shifted.x.dtype == torch.float32 and shifted.x.shape == splits.test.x.shape
    assert torch.equal(shifted.x, corrupt(splits.test.x, "gaussian_noise", 4, seed=3))
    again = eval_set(splits, "corrupt:gaussian_noise:4", seed=3)
    assert torch.equal(shifted.x, again.x)
    assert not torch.equal(shifted.x, eval_set(splits, "corrupt:gaussian_noise:4", seed=4).x)
    assert torch.equal(splits.test.x, load_dataset("digits", seed=0).test.x)  # test untouched


def test_parse_eval_sets() -> None:
    assert parse_eval_sets("heldout") == ["heldout"]
    assert parse_eval_sets(" test , corrupt:fog:5,heldout,test ") == [
        "test",
        "corrupt:fog:5",
        "heldout",
    ]
    assert parse_eval_sets("corrupt: jpeg : 2") == ["corrupt:jpeg:2"]


BAD_SPECS = {
    "unknown_split": ("validation", "choose train, heldout, test or corrupt:NAME:SEVERITY"),
    "unknown_corruption": ("corrupt:snow:2", "choose one of gaussian_noise"),
    "severity_zero": ("corrupt:fog:0", "severity must be one of 1, 2, 3, 4, 5"),
    "severity_six": ("corrupt:fog:6", "severity must be one of 1, 2, 3, 4, 5"),
    "severity_text": ("corrupt:fog:high", "severity must be an integer 1-5"),
    "missing_severity": ("corrupt:fog", "choose train, heldout, test"),
    "empty_entry": ("test,,heldout", "empty entry"),
    "empty": ("", "empty entry"),
}


@pytest.mark.parametrize(("text", "message"), BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_specs_list_the_choices(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        parse_eval_sets(text)
    assert "\n" not in str(err.value)


def test_eval_set_rejects_bad_spec_before_work(splits: DataSplits) -> None:
    with pytest.raises(UserError, match="elastic"):  # the message lists the corruptions
        eval_set(splits, "corrupt:blur:3")
