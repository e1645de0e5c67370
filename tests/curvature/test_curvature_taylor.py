"""Taylor-mode quadratic forms z^T H z against the dense Hessian and against HVPs (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sgdtemp.curvature import HessianOperator, hutchinson_trace, hutchpp_trace
from sgdtemp.curvature._base import quadratic_forms
from sgdtemp.curvature._taylor import taylor_program

ATOL = 1e-10
LOSS = nn.CrossEntropyLoss()


class _Residual(nn.Module):
    """Conv, GroupNorm, ReLU, a residual add with a 1x1 shortcut, a spatial mean, a head."""

    def __init__(self, channels_last: bool) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(2, 4, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = torch.relu(self.gn(self.c1(x)))
        h = torch.relu(self.c2(h) + self.shortcut(x))
        return self.head(h.mean(dim=(2, 3)))


def _residual_case(channels_last: bool):
    gen = torch.Generator().manual_seed(0)
    model = _Residual(channels_last).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.7)
    x = torch.randn(20, 2, 4, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=gen)
    return model, x, y


def _probes(d, k, seed=1):
    return torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", ["mlp_relu", "cnn", "residual"])
@pytest.mark.parametrize("max_columns", [1, 3, 8])
def test_taylor_quadratic_forms_match_the_dense_hessian(helpers, name, max_columns):
    if name == "residual":
        model, x, y = _residual_case(channels_last=False)
    else:
        model, x, y = helpers.make_case(name)
    dense = helpers.dense_hessian(model, LOSS, x, y)
    op = HessianOperator(model, LOSS, [(x[:9], y[:9]), (x[9:], y[9:])], max_columns=max_columns)
    z = _probes(dense.shape[0], 7)
    forms = op.quadratic_forms(z)
    assert op.model_loss.uses_taylor is True
    assert torch.allclose(forms, (z * (dense @ z)).sum(dim=0), atol=ATOL)


def test_channels_last_model_agrees_with_hessian_vector_products():
    # torch.func.hessian fails on channels_last GroupNorm, so the oracle here is op @ z
    model, x, y = _residual_case(channels_last=True)
    op = HessianOperator(model, LOSS, (x, y))
    z = _probes(op.shape[0], 5)
    forms = op.quadratic_forms(z)
    assert op.model_loss.uses_taylor is True
    assert torch.allclose(forms, (z * (op @ z)).sum(dim=0), atol=ATOL)


def test_unsupported_layers_fall_back_to_products(helpers):
    model, x, y = helpers.make_case("mlp_tanh")  # no Taylor rule for Tanh
    assert taylor_program(model) is None
    op = HessianOperator(model, LOSS, (x, y))
    z = _probes(op.shape[0], 4)
    dense = helpers.dense_hessian(model, LOSS, x, y)
    assert torch.allclose(op.quadratic_forms(z), (z * (dense @ z)).sum(dim=0), atol=ATOL)
    assert op.model_loss.uses_taylor is False


def test_taylor_can_be_switched_off(helpers):
    model, x, y = helpers.make_case("cnn")
    op = HessianOperator(model, LOSS, (x, y), taylor=False)
    z = _probes(op.shape[0], 3)
    with_taylor = HessianOperator(model, LOSS, (x, y)).quadratic_forms(z)
    assert torch.allclose(op.quadratic_forms(z), with_taylor, atol=ATOL)
    assert op.model_loss.uses_taylor is False


def test_trace_estimators_on_the_model_equal_those_on_the_dense_matrix(helpers):
    model, x, y = helpers.make_case("cnn")
    dense = helpers.dense_hessian(model, LOSS, x, y)
    op = HessianOperator(model, LOSS, (x, y), batch_size=10)
    for estimator, m in ((hutchinson_trace, 6), (hutchpp_trace, 9)):
        ours = estimator(op, m, generator=torch.Generator().manual_seed(3))
        ref = estimator(dense, m, generator=torch.Generator().manual_seed(3))
        assert ours.value == pytest.approx(ref.value, abs=1e-9)
        assert ours.stderr == pytest.approx(ref.stderr, abs=1e-9)


def test_quadratic_forms_helper_on_plain_operators():
    a = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(quadratic_forms(a, z), torch.tensor([7.0, 3.0], dtype=torch.float64))
