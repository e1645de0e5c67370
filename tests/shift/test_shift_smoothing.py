"""The smoothing continuation against the nonsmooth optimality condition of a ReLU network.

A one-hidden-layer ReLU network's regularized loss has kinks where a unit's input z_ij crosses 0.
At a minimum on kinks no gradient vanishes; the condition is Clarke stationarity: some choice
of the ReLU's slope in [0, 1] at each near-zero z_ij makes the gradient vanish. The oracle below
computes the smallest such gradient in closed form (a box-constrained least-squares problem over
those slopes, scipy), independently of the continuation.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

from sgdtemp.curvature import ModelLoss
from sgdtemp.errors import UserError
from sgdtemp.shift import ShiftOptions, measure_mechanisms, measure_shift
from sgdtemp.shift._smoothing import SmoothedModel, nonsmooth_ops
from sgdtemp.train import build_model

F64 = torch.float64
WD = 0.05
BETAS = (10.0, 100.0, 1000.0)


def _case(seed=1, n=40, ne=30, d=6, h=12, k=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=F64)
    w = torch.randn(d, k, generator=gen, dtype=F64)
    y = (x @ w + 0.7 * torch.randn(n, k, generator=gen, dtype=F64)).argmax(1)
    xe = torch.randn(ne, d, generator=gen, dtype=F64)
    ye = (xe @ w + 0.7 * torch.randn(ne, k, generator=gen, dtype=F64)).argmax(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k)).double()
    return model, (x, y), (xe, ye)


def _clarke_gap(model, theta, data, tau):
    """Smallest |gradient| over ReLU slopes in [0, 1] at the units with |z_ij| < tau."""
    x, y = data
    w1, b1 = model[0].weight, model[0].bias
    w2 = model[2].weight
    sizes = [w1.numel(), b1.numel(), w2.numel(), model[2].bias.numel()]
    tw1, tb1, tw2, tb2 = torch.split(theta, sizes)
    tw1, tw2 = tw1.reshape(w1.shape), tw2.reshape(w2.shape)
    n, d = x.shape
    z = x @ tw1.T + tb1
    hidden = z.clamp(min=0)
    p = (hidden @ tw2.T + tb2).softmax(1)
    p[torch.arange(n), y] -= 1
    dh = p @ tw2 / n  # dL/dh, (n, h)
    dz = dh * (z > 0)
    grad = torch.cat(
        [(dz.T @ x).reshape(-1), dz.sum(0), (p.T @ hidden / n).reshape(-1), p.sum(0) / n]
    )
    grad = grad + WD * theta
    near = (z.abs() < tau).nonzero().tolist()
    v = np.zeros((theta.numel(), len(near)))
    on = np.zeros(len(near))
    for col, (i, j) in enumerate(near):
        v[j * d : (j + 1) * d, col] = float(dh[i, j]) * x[i].numpy()
        v[w1.numel() + j, col] = float(dh[i, j])
        on[col] = float(z[i, j] > 0)
    base = grad.numpy() - v @ on  # slopes 0 at the near-zero units
    fit = scipy.optimize.lsq_linear(v, -base, bounds=(0.0, 1.0), tol=1e-12)
    return float(np.linalg.norm(base + v @ fit.x))


def test_continuation_reaches_a_clarke_stationary_point_where_newton_stalls():
    model, train, evals = _case()
    loss = nn.CrossEntropyLoss()
    plain = measure_shift(model, loss, train, evals, weight_decay=WD, smoothing="off")
    smooth = measure_shift(model, loss, train, evals, weight_decay=WD, smoothing_betas=BETAS)
    # plain Newton stalls on the kinks, and says so
    assert not plain.converged and plain.smoothing_beta is None
    assert "not smooth" in plain.message
    assert _clarke_gap(model, plain.eval_minimum, evals, 0.03) > 0.2 * plain.nonsmooth_grad_norm
    # the continuation converges: its last stage's gradient met the tolerance ...
    target = 1e-4 * smooth.initial_grad_norm
    assert smooth.converged and smooth.smoothing_beta == 1000.0
    assert smooth.grad_norm_at_eval_min <= target
    assert "softplus continuation to beta=1000" in smooth.message
    # ... the network's own gradient did not (kinks) ...
    assert smooth.nonsmooth_grad_norm > 100 * target
    # ... but some slopes at the near-zero units make it vanish: a Clarke-stationary point
    assert _clarke_gap(model, smooth.eval_minimum, evals, 0.03) < 0.05 * smooth.nonsmooth_grad_norm
    assert smooth.eval_objective_at_eval_min < plain.eval_objective_at_eval_min


def test_float32_continuation_converges_with_the_float64_answer():
    model, train, evals = _case()
    loss = nn.CrossEntropyLoss()
    f64 = measure_shift(model, loss, train, evals, weight_decay=WD, smoothing_betas=BETAS)
    model32 = copy.deepcopy(model).float()
    train32 = (train[0].float(), train[1])
    evals32 = (evals[0].float(), evals[1])
    f32 = measure_shift(model32, loss, train32, evals32, weight_decay=WD, smoothing_betas=BETAS)
    assert f32.converged, f32.message
    assert f32.shift_norm == pytest.approx(f64.shift_norm, rel=1e-3)
    assert f32.shift_curvature == pytest.approx(f64.shift_curvature, rel=1e-2)


def test_mechanisms_descend_with_the_continuation():
    model, train, evals = _case()
    gen = torch.Generator().manual_seed(5)
    theta = ModelLoss(model, nn.CrossEntropyLoss(), train).flat_params()
    iterates = theta + 0.05 * torch.randn(8, theta.numel(), generator=gen, dtype=F64)
    res = measure_mechanisms(
        model,
        nn.CrossEntropyLoss(),
        train,
        {"eval": evals},
        iterates.mean(0),
        iterates,
        weight_decay=WD,
        smoothing_betas=BETAS,
    )
    assert res.all_converged
    assert res.smoothing_beta == 1000.0 and res.evals["eval"].smoothing_beta == 1000.0
    assert res.nonsmooth_grad_norm > res.grad_norm


def test_smoothed_model_is_softplus_and_soft_max_pooling():
    gen = torch.Generator().manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    x = torch.randn(9, 4, generator=gen, dtype=F64)
    y = torch.randint(0, 2, (9,), generator=gen)
    explicit = copy.deepcopy(mlp)
    explicit[1] = nn.Softplus(beta=7.0, threshold=30.0)
    ours = ModelLoss(SmoothedModel(mlp, 7.0), nn.CrossEntropyLoss(), (x, y), taylor=False)
    ref = ModelLoss(explicit, nn.CrossEntropyLoss(), (x, y))
    theta = ref.flat_params()
    v = torch.randn(2, theta.numel(), generator=gen, dtype=F64)
    assert ours.loss(theta) == pytest.approx(ref.loss(theta), rel=1e-14)
    assert torch.allclose(ours.value_and_grad(theta)[1], ref.value_and_grad(theta)[1], rtol=1e-12)
    assert torch.allclose(ours.hvp(theta, v), ref.hvp(theta, v), rtol=1e-10)
    # 2x2 max pooling becomes log-sum-exp over the window / beta; sharp beta: the max itself
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()).double()
    img = torch.randn(3, 1, 4, 4, generator=gen, dtype=F64)
    pre = conv[0](img)
    windows = pre.reshape(3, 2, 2, 2, 2, 2)
    soft = torch.logsumexp(3.0 * windows, dim=(3, 5)) / 3.0
    expected = nn.functional.softplus(soft, beta=3.0, threshold=30.0)
    assert torch.allclose(SmoothedModel(conv, 3.0)(img), expected, rtol=1e-12)
    assert torch.allclose(SmoothedModel(conv, 1e7)(img), conv(img), atol=1e-6)


def test_nonsmooth_ops_finds_modules_and_functional_calls():
    img = torch.zeros(2, 1, 28, 28)
    assert nonsmooth_ops(build_model("mlp", in_shape=(1, 28, 28), n_classes=10), img) == (
        {"relu"},
        set(),
    )
    cnn = build_model("cnn", in_shape=(1, 28, 28), n_classes=10)
    assert nonsmooth_ops(cnn, img)[0] == {"relu", "max_pool2d"}
    resnet = build_model("resnet", in_shape=(3, 16, 16), n_classes=10)  # torch.relu in its blocks
    assert nonsmooth_ops(resnet, torch.zeros(2, 3, 16, 16))[0] == {"relu"}
    smooth = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    assert nonsmooth_ops(smooth, torch.zeros(2, 3)) == (set(), set())
    padded = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.LeakyReLU())
    left = nonsmooth_ops(padded, torch.zeros(1, 1, 4, 4))[1]
    assert left == {"max_pool2d (padded, dilated or strided)", "leaky_relu"}


def test_an_unconverged_descent_that_went_far_says_so():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=gen, dtype=F64)
    y = (x @ torch.tensor([3.0, -4.0, 5.0], dtype=F64))[:, None]
    model = nn.Linear(3, 1).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    res = measure_shift(model, nn.MSELoss(), (x, y), (x, y + 20.0), weight_decay=1e-3, max_iters=4)
    assert not res.converged
    assert "far from its start" in res.message


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"smoothing": "always"}, "smoothing must be one of"),
        ({"smoothing_betas": ()}, "increasing positive"),
        ({"smoothing_betas": (10.0, 10.0)}, "increasing positive"),
        ({"smoothing_betas": (-1.0, 10.0)}, "increasing positive"),
    ],
)
def test_bad_smoothing_options(kwargs, match):
    with pytest.raises(UserError, match=match):
        ShiftOptions(**kwargs)
