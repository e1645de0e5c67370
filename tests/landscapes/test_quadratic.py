"""The tilted quadratic: closed forms and validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.landscapes import QuadraticLoss

RTOL = 1e-12


def test_closed_forms() -> None:
    gen = torch.Generator().manual_seed(0)
    h = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    xi = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    loss = QuadraticLoss(h, xi)
    minimum = loss.minimizers()
    np.testing.assert_allclose(
        minimum.numpy(), -np.linalg.solve(h.numpy(), xi.mean(0).numpy())[None], rtol=RTOL
    )
    np.testing.assert_allclose(
        loss.noise_cov(torch.zeros(3, 2, dtype=torch.float64))[1].numpy(),
        np.cov(xi.numpy().T, bias=True),
        rtol=RTOL,
    )
    theta = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    expected = 0.5 * ((theta @ h) * theta).sum(1) + theta @ xi.mean(0)
    torch.testing.assert_close(loss.loss(theta), expected, rtol=RTOL, atol=0)
    assert loss.dim == 2 and loss.n_examples == 30 and loss.name == "quadratic"


@pytest.mark.parametrize(
    "h, xi",
    [
        (torch.tensor([[1.0, 0.2], [0.0, 1.0]]), torch.zeros(3, 2)),  # not symmetric
        (torch.tensor([[1.0, 0.0], [0.0, -1.0]]), torch.zeros(3, 2)),  # not positive definite
        (torch.eye(2), torch.zeros(3, 3)),  # wrong tilt dimension
        (torch.eye(2), torch.zeros(0, 2)),  # no examples
        (torch.ones(2, 3), torch.zeros(3, 2)),  # not square
        (torch.eye(2), torch.zeros(3, 2, dtype=torch.float64)),  # dtype mismatch
    ],
)
def test_rejects_bad_input(h, xi) -> None:
    with pytest.raises(UserError):
        QuadraticLoss(h, xi)
