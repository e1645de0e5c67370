"""Evaluation sets named by a short spec: the splits, or a corrupted test set (domain shift).

Specs: ``train``, ``heldout`` (sampling shift: unseen images of the training distribution),
``test``, and ``corrupt:NAME:SEVERITY`` (the test set under one corruption of
:data:`~sgdtemp.data.CORRUPTIONS` at severity 1..5, seeded).
"""

from __future__ import annotations

from sgdtemp.data._corruptions import CORRUPTIONS, check_corruption, corrupt
from sgdtemp.data._datasets import DataSplits, ImageDataset
from sgdtemp.errors import UserError

__all__ = ["SPLIT_SPECS", "eval_set", "parse_eval_sets", "parse_eval_spec"]

SPLIT_SPECS = ("train", "heldout", "test")
_CHOICES = (
    f"{', '.join(SPLIT_SPECS)} or corrupt:NAME:SEVERITY "
    f"(NAME one of {', '.join(CORRUPTIONS)}; SEVERITY 1-5)"
)


def parse_eval_spec(spec: str) -> tuple[str, str | None, int | None]:
    """Split a spec into ``(kind, corruption, severity)``, validating it.

    Example:
        >>> parse_eval_spec("corrupt:fog:3")
        ('corrupt', 'fog', 3)
        >>> parse_eval_spec("heldout")
        ('heldout', None, None)
    """
    text = spec.strip()
    if text in SPLIT_SPECS:
        return text, None, None
    parts = text.split(":")
    if len(parts) != 3 or parts[0] != "corrupt":
        raise UserError(f"unknown eval set {spec!r}; choose {_CHOICES}")
    name, level = parts[1].strip(), parts[2].strip()
    if not level.isdigit():
        raise UserError(f"eval set {spec!r}: severity must be an integer 1-5, got {level!r}")
    check_corruption(name, int(level))
    return "corrupt", name, int(level)


def parse_eval_sets(text: str) -> list[str]:
    """Parse a comma-separated list of eval-set specs (a CLI value), validated and deduplicated.

    Args:
        text: e.g. ``"heldout,test,corrupt:gaussian_noise:3"``.

    Returns:
        The specs in their canonical spelling, in order, without repeats.

    Raises:
        UserError: for an empty list or entry, or an unknown spec, corruption or severity
            (the message lists the valid choices).

    Example:
        >>> parse_eval_sets("test, corrupt:fog:2,test")
        ['test', 'corrupt:fog:2']
    """
    specs: list[str] = []
    for item in text.split(","):
        if not item.strip():
            raise UserError(f"eval sets {text!r} contain an empty entry; choose {_CHOICES}")
        kind, name, level = parse_eval_spec(item)
        canonical = kind if name is None else f"corrupt:{name}:{level}"
        if canonical not in specs:
            specs.append(canonical)
    return specs


def eval_set(splits: DataSplits, spec: str, *, seed: int = 0) -> ImageDataset:
    """The evaluation set named by ``spec``.

    Args:
        splits: from :func:`~sgdtemp.data.load_dataset`.
        spec: ``train``, ``heldout``, ``test`` or ``corrupt:NAME:SEVERITY``.
        seed: seed of the corruption's random draws (same seed, same corrupted images).

    Returns:
        The split itself, or the corrupted test set (same labels, name
        ``"<dataset>:corrupt:NAME:SEVERITY"``).

    Raises:
        UserError: for an unknown spec, corruption or severity outside 1..5.

    Example:
        >>> from sgdtemp.data import load_dataset
        >>> splits = load_dataset("digits")
        >>> shifted = eval_set(splits, "corrupt:pixelate:4")
        >>> shifted.name, len(shifted) == len(splits.test)
        ('digits:corrupt:pixelate:4', True)
    """
    kind, name, level = parse_eval_spec(spec)
    if name is None or level is None:
        return {"train": splits.train, "heldout": splits.heldout, "test": splits.test}[kind]
    test = splits.test
    dataset = test.name.rsplit(":", 1)[0]
    return ImageDataset(
        name=f"{dataset}:corrupt:{name}:{level}",
        x=corrupt(test.x, name, level, seed=seed),
        y=test.y,
        n_classes=test.n_classes,
    )
