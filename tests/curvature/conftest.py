"""Small float64 models and data for the curvature tests, described as data."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from torch import nn


def _mlp(gen: torch.Generator) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3))


def _relu_mlp(gen: torch.Generator) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


def _cnn(gen: torch.Generator) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 2 * 1, 3),
    )


def _cnn_groupnorm(gen: torch.Generator) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 2, 3),
    )


# name -> (model factory, input shape of one example)
CASES: dict[str, tuple[Callable[[torch.Generator], nn.Module], tuple[int, ...]]] = {
    "mlp_tanh": (_mlp, (2, 2, 2)),
    "mlp_relu": (_relu_mlp, (2, 2, 2)),
    "cnn": (_cnn, (2, 4, 2)),
    "cnn_groupnorm": (_cnn_groupnorm, (2, 4, 2)),
}


def make_case(
    name: str, n: int = 24, seed: int = 0
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 model with random weights and ``n`` random examples of 3 classes."""
    factory, shape = CASES[name]
    gen = torch.Generator().manual_seed(seed)
    model = factory(gen).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.7)
    x = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    return model, x, y


@pytest.fixture(params=sorted(CASES), ids=lambda n: f"model={n}")
def case(request: pytest.FixtureRequest) -> tuple[str, nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = make_case(request.param)
    return request.param, model, x, y


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def loss_of_flat(model: nn.Module, loss_fn, x, y) -> Callable[[torch.Tensor], torch.Tensor]:
    """The mean loss as a function of the flat parameter vector (oracle plumbing)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]

    def f(theta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        return loss_fn(torch.func.functional_call(model, params, (x,)), y)

    return f


def dense_hessian(model: nn.Module, loss_fn, x, y) -> torch.Tensor:
    """The oracle: torch.func.hessian of the loss over all of (x, y) at the model's weights."""
    with warnings.catch_warnings():
        # torch's first forward-mode call scripts decompositions with the deprecated jit.script
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        return torch.func.hessian(loss_of_flat(model, loss_fn, x, y))(flat_params(model))


@pytest.fixture
def helpers() -> SimpleNamespace:
    return SimpleNamespace(
        make_case=make_case,
        flat_params=flat_params,
        loss_of_flat=loss_of_flat,
        dense_hessian=dense_hessian,
    )


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add scheduling waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
