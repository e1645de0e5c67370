"""StackedConvNet: K conv nets as one wide net, against K separate models (float64 oracles)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sgdtemp.train import stacked_conv
from sgdtemp.train.models import build_model, init_parameters
from sgdtemp.train.stacked import StackedFunctional, StackedMLP, stack_models, stackable
from sgdtemp.train.stacked_conv import StackedConvNet, convnet_stackable, forward_macs

RTOL = 1e-10  # float64: only the summation order differs (grouped vs single convolutions)
K, B = 3, 5


def _models(make, k=K):
    return [make(torch.Generator().manual_seed(s)).double() for s in range(k)]


def _registry(name, shape, **kwargs):
    def make(g):
        return build_model(name, in_shape=shape, n_classes=3, generator=g, **kwargs)

    return make, shape


def _sequential(layers, shape):
    def make(g):
        return init_parameters(nn.Sequential(*layers()), generator=g)

    return make, shape


CASES = {
    "cnn": _registry("cnn", (1, 12, 12), width=4),
    "cnn-group": _registry("cnn", (2, 16, 16), width=4, norm="group"),
    "resnet": _registry("resnet", (3, 8, 8), width=4),  # GroupNorm (the default)
    "resnet-none-2-blocks": _registry("resnet", (1, 8, 8), width=4, blocks=2, norm="none"),
    # a norm before any convolution, grouped / strided / dilated convolutions without bias,
    # other pooling layers and Tanh: each leaf's shared-input branch in evaluation
    "sequential": _sequential(
        lambda: [
            nn.GroupNorm(2, 4, eps=1e-3),
            nn.Conv2d(4, 6, 3, groups=2, bias=False),
            nn.Tanh(),
            nn.Conv2d(6, 4, 3, stride=2, padding=2, dilation=2),
            nn.GroupNorm(2, 4, affine=False),
            nn.AvgPool2d(2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 5, bias=False),
            nn.ReLU(),
            nn.Linear(5, 3),
        ],
        (4, 9, 9),
    ),
}


def _data(shape, k=K, b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(k, b, *shape, generator=g, dtype=torch.float64)
    return x, torch.randint(3, (k, b), generator=g)


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_and_grads_equal_k_separate_models(case):
    make, shape = CASES[case]
    models = _models(make)
    stacked = stack_models(models, torch.device("cpu"))
    assert isinstance(stacked, StackedConvNet)
    x, y = _data(shape)
    scale = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    losses, grads = stacked.loss_and_grads(x, y, scale)
    for k, model in enumerate(models):
        loss = F.cross_entropy(model(x[k]), y[k])
        expected = torch.autograd.grad(loss, list(model.parameters()))
        torch.testing.assert_close(losses[k], loss.detach(), rtol=RTOL, atol=0)
        for name, g, e in zip(stacked.names, grads, expected):
            torch.testing.assert_close(g[k], scale[k] * e, rtol=RTOL, atol=1e-14, msg=name)


@pytest.mark.parametrize("by_model", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_of_shared_inputs_equal_k_forward_passes(case, by_model, monkeypatch):
    make, shape = CASES[case]
    models = _models(make)
    stacked = StackedConvNet(models, torch.device("cpu"))
    monkeypatch.setattr(stacked_conv, "EVAL_BY_MODEL_MACS", 0 if by_model else 1 << 60)
    monkeypatch.setattr(stacked_conv, "EVAL_EXAMPLES", 8)  # chunks of 2 (wide) or 8: 7 + 1
    x = _data(shape, k=1, b=15, seed=1)[0][0]
    logits = stacked.logits(x)
    assert logits.shape == (K, 15, 3)
    for k, model in enumerate(models):
        with torch.no_grad():
            torch.testing.assert_close(logits[k], model.eval()(x), rtol=RTOL, atol=1e-14)


def test_sgd_step_and_keep_follow_each_model():
    make, shape = CASES["cnn"]
    models = _models(make, k=4)
    stacked = StackedConvNet(models, torch.device("cpu"))
    x, y = _data(shape, k=4)
    lr = torch.tensor([0.1, 0.0, 0.2, 0.3], dtype=torch.float64)
    stacked.sgd_step(x, y, lr)
    for k, model in enumerate(models):
        loss = F.cross_entropy(model(x[k]), y[k])
        with torch.no_grad():
            for p, g in zip(
                model.parameters(), torch.autograd.grad(loss, list(model.parameters()))
            ):
                p.sub_(lr[k] * g)
    stacked.keep([3, 1])  # a reordered, smaller stack, down to one model
    assert stacked.n_models == 2
    for row, k in enumerate([3, 1]):
        state = stacked.state(row)
        for name, p in models[k].named_parameters():
            torch.testing.assert_close(state[name], p.detach(), rtol=RTOL, atol=1e-14)
            assert state[name].stride() == p.stride()  # channels_last rows stay channels_last
    stacked.keep([1])
    x1 = x[:1, :2]
    torch.testing.assert_close(stacked.logits(x1[0])[0], models[1].eval()(x1[0]).detach())


def test_stack_models_picks_the_implementation():
    cnn = CASES["cnn"][0](torch.Generator())
    mlp = build_model("mlp", in_shape=(1, 4, 4), n_classes=3, width=4)
    odd = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Softmax(dim=1), nn.Linear(2, 2))
    device = torch.device("cpu")
    assert isinstance(stack_models([cnn, cnn], device), StackedConvNet)
    assert isinstance(stack_models([mlp, mlp], device), StackedMLP)
    assert isinstance(stack_models([odd, odd], device), StackedFunctional)
    # GroupNorm outside a known container: no path runs it (vmap fails on it in torch 2.13)
    odd_norm = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2), nn.Softmax(dim=1))
    assert not convnet_stackable(odd_norm) and not stackable(odd_norm)


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(start_dim=2)),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout()),
        nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3)), nn.Softmax(dim=1)),
    ],
    ids=["reflect-padding", "flatten-dim-2", "dropout", "softmax"],
)
def test_layers_that_mix_models_or_are_unknown_are_refused(model):
    assert not convnet_stackable(model)


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_forward_macs_match_the_flop_counter(name):
    # Oracle: torch's FlopCounterMode counts 2 FLOPs per multiply-add of convolutions and
    # matrix products, and nothing else.
    model = build_model(name, in_shape=(1, 28, 28), n_classes=10, width=8)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    assert 2 * forward_macs(model, (1, 28, 28)) == counter.get_total_flops()
