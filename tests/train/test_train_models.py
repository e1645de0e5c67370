"""The model registry: shapes, seeded PyTorch-default initialisation, the BatchNorm flag."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.train.models import (
    MODELS,
    TemperatureConfoundWarning,
    build_model,
    cnn,
    init_parameters,
    mlp,
    temperature_confounders,
)

SHAPES = {"mlp": (1, 8, 8), "cnn": (1, 28, 28), "resnet": (3, 16, 16)}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_images_to_logits(name):
    model = build_model(name, in_shape=SHAPES[name], n_classes=7, generator=_gen(0))
    out = model(torch.rand(3, *SHAPES[name]))
    assert out.shape == (3, 7)
    assert model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_models_are_clean(name):
    model = build_model(name, in_shape=SHAPES[name], n_classes=10, generator=_gen(0))
    assert temperature_confounders(model) == ()
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_seeded_init_is_reproducible_and_leaves_the_global_rng_alone(name):
    before = torch.get_rng_state()
    a = build_model(name, in_shape=SHAPES[name], n_classes=10, generator=_gen(5))
    b = build_model(name, in_shape=SHAPES[name], n_classes=10, generator=_gen(5))
    c = build_model(name, in_shape=SHAPES[name], n_classes=10, generator=_gen(6))
    assert torch.equal(torch.get_rng_state(), before)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


def test_mlp_init_equals_pytorch_default_construction():
    # Oracle: PyTorch's own constructors, drawing from the global generator seeded alike.
    with torch.random.fork_rng():
        torch.manual_seed(11)
        ref = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    ours = build_model("mlp", in_shape=(1, 8, 8), n_classes=10, width=32, generator=_gen(11))
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), name


def test_cnn_init_equals_pytorch_default_construction():
    with torch.random.fork_rng():
        torch.manual_seed(3)
        ref = cnn((1, 28, 28), 10, width=4)  # built normally: nn's reset_parameters
    ours = build_model("cnn", in_shape=(1, 28, 28), n_classes=10, width=4, generator=_gen(3))
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), name


def test_generator_none_uses_the_global_generator_like_nn_modules():
    with torch.random.fork_rng():
        torch.manual_seed(2)
        a = build_model("mlp", in_shape=(1, 4, 4), n_classes=3)
        torch.manual_seed(2)
        b = mlp((1, 4, 4), 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_init_is_uniform_with_the_default_bound():
    layer = init_parameters(nn.Linear(400, 300), generator=_gen(0))
    bound = 1 / math.sqrt(400)
    w = layer.weight.detach()
    assert w.abs().max() <= bound
    # U(-b, b) has variance b^2/3; 120k draws give a relative standard error of ~0.3 %.
    assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.02)
    assert layer.bias.detach().abs().max() <= bound


def test_cnn_matches_a_plain_functional_reference():
    # Oracle: the documented layout (ReLU before pooling, contiguous tensors), float64.
    model = build_model("cnn", in_shape=(1, 28, 28), n_classes=10, width=4, generator=_gen(1))
    model = model.double()
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64, generator=_gen(2))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (4, (2, 2), (2, 2)),
        (8, (3, 3), (1, 1)),
        (16, (3, 3), (1, 1)),
    ]
    h = F.relu(F.conv2d(x, convs[0].weight, convs[0].bias, stride=2))
    for conv in convs[1:]:
        h = F.max_pool2d(F.relu(F.conv2d(h, conv.weight, conv.bias, padding=1)), 2)
    ref = F.linear(h.flatten(1), model.head.weight, model.head.bias)
    torch.testing.assert_close(model(x), ref, rtol=1e-12, atol=1e-12)


def test_mlp_layout():
    model = build_model("mlp", in_shape=(1, 28, 28), n_classes=10, generator=_gen(0))
    assert [tuple(p.shape) for p in model.parameters()] == [(256, 784), (256,), (10, 256), (10,)]
    deep = build_model("mlp", in_shape=(2, 3, 3), n_classes=4, width=5, depth=2)
    assert [tuple(p.shape) for p in deep.parameters()] == [
        (5, 18),
        (5,),
        (5, 5),
        (5,),
        (4, 5),
        (4,),
    ]
    linear = build_model("mlp", in_shape=(1, 3, 3), n_classes=4, depth=0)
    assert [tuple(p.shape) for p in linear.parameters()] == [(4, 9), (4,)]
    smooth = build_model("mlp", in_shape=(1, 3, 3), n_classes=4, activation="softplus")
    assert [type(m) for m in smooth] == [nn.Flatten, nn.Linear, nn.Softplus, nn.Linear]


@pytest.mark.parametrize("norm", ["none", "group", "batch"])
def test_resnet_norms(norm, recwarn):
    model = build_model("resnet", in_shape=(3, 16, 16), n_classes=10, norm=norm, width=8)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    kinds = {type(m) for m in model.modules()}
    assert (nn.GroupNorm in kinds) == (norm == "group")
    assert (nn.BatchNorm2d in kinds) == (norm == "batch")
    warned = [w for w in recwarn if issubclass(w.category, TemperatureConfoundWarning)]
    assert bool(warned) == (norm == "batch")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batchnorm_variant_warns_and_is_flagged(name):
    with pytest.warns(TemperatureConfoundWarning, match="batch size"):
        model = build_model(name, in_shape=SHAPES[name], n_classes=10, norm="batch")
    assert temperature_confounders(model) in (("BatchNorm1d",), ("BatchNorm2d",))
    running = [
        m.running_var for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)
    ]
    assert running and all(torch.equal(v, torch.ones_like(v)) for v in running)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("vgg", {}, "unknown model"),
        ("mlp", {"widht": 3}, "bad option"),
        ("mlp", {"width": 0}, "width"),
        ("mlp", {"norm": "group"}, "norm"),
        ("mlp", {"activation": "gelu"}, "activation"),
        ("cnn", {"norm": "layer"}, "norm"),
        ("resnet", {"blocks": 0}, "blocks"),
    ],
)
def test_bad_model_requests_raise_user_error(name, kwargs, match):
    with pytest.raises(UserError, match=match):
        build_model(name, in_shape=(3, 16, 16), n_classes=10, **kwargs)


def test_bad_shapes_raise_user_error():
    with pytest.raises(UserError, match="at least 8x8"):
        build_model("cnn", in_shape=(1, 4, 4), n_classes=10)
    with pytest.raises(UserError, match="in_shape"):
        build_model("mlp", in_shape=(784,), n_classes=10)
    with pytest.raises(UserError, match="n_classes"):
        build_model("mlp", in_shape=(1, 4, 4), n_classes=1)


def test_init_parameters_rejects_unknown_layers():
    with pytest.raises(TypeError, match="LayerNorm"):
        init_parameters(nn.Sequential(nn.LayerNorm(3)))
