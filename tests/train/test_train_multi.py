"""fit_many: the fused paths against fit, the rule that picks them, per-run options and stops."""

import pytest
import torch
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.train import multi
from sgdtemp.train.models import build_model
from sgdtemp.train.multi import CONV_FUSED_MAX_WORK, FUSED_MAX_WORK, fit_many, fused_path_applies
from sgdtemp.train.options import FitOptions
from sgdtemp.train.stacked import StackedMLP, mlp_plan, stack_models
from sgdtemp.train.stacked_conv import forward_macs
from sgdtemp.train.trainer import fit

RTOL64 = 1e-9  # float64: only the summation order differs (bmm vs mm)
ATOL32 = 1e-4  # float32: rounding differences of ~1e-7 per step, fed back through training

LRS = [0.05, 0.2, 0.4]
SEEDS = [0, 1, 2]


def _data(n=120, dtype=torch.float32):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(n, 1, 5, 5, generator=g, dtype=dtype)
    y = (x.flatten(1) @ torch.randn(25, 3, generator=g, dtype=dtype)).argmax(1)
    return x, y


def _factory(dtype=torch.float32, **kwargs):
    def make(g):
        return build_model(
            "mlp", in_shape=(1, 5, 5), n_classes=3, width=16, generator=g, **kwargs
        ).to(dtype)

    return make


def _one_by_one(factory, data, **kw):
    lrs, seeds = kw.pop("lrs"), kw.pop("seeds")
    return [
        fit(factory(torch.Generator().manual_seed(s)), data, lr=lr, seed=s, **kw)
        for lr, s in zip(lrs, seeds)
    ]


def _compare(many, ones, *, rtol, atol):
    assert len(many) == len(ones)
    for a, b in zip(many, ones):
        assert (a.status, a.steps, a.lr, a.seed, a.temperature) == (
            b.status,
            b.steps,
            b.lr,
            b.seed,
            b.temperature,
        )
        assert set(a.state) == set(b.state)
        for k in a.state:
            torch.testing.assert_close(a.state[k], b.state[k], rtol=rtol, atol=atol)
        assert len(a.epochs) == len(b.epochs)
        for ra, rb in zip(a.epochs, b.epochs):
            assert ra.keys() == rb.keys()
            for name in set(ra) - {"epoch", "step"}:
                assert ra[name]["loss"] == pytest.approx(rb[name]["loss"], rel=rtol, abs=atol)


@pytest.mark.parametrize(
    ("momentum", "weight_decay", "activation"),
    [(0.0, 0.0, "relu"), (0.9, 1e-3, "relu"), (0.9, 1e-3, "softplus"), (0.0, 0.0, "tanh")],
)
def test_fused_equals_fit_in_float64(momentum, weight_decay, activation):
    x, y = _data(dtype=torch.float64)
    kw = dict(
        lrs=LRS,
        seeds=SEEDS,
        batch_size=8,
        epochs=2,
        momentum=momentum,
        weight_decay=weight_decay,
        eval_sets={"heldout": (x[:30], y[:30])},
        device="cpu",
    )
    factory = _factory(torch.float64, activation=activation)
    assert isinstance(stack_models([factory(torch.Generator())], torch.device("cpu")), StackedMLP)
    many = fit_many(factory, (x, y), batched=True, **kw)
    _compare(many, _one_by_one(factory, (x, y), **kw), rtol=RTOL64, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.5])  # 0: the update folded into baddbmm_
def test_fused_equals_fit_in_float32_within_rounding(momentum):
    x, y = _data()
    kw = dict(
        lrs=LRS,
        seeds=SEEDS,
        batch_size=8,
        epochs=2,
        momentum=momentum,
        eval_sets={"heldout": (x[:30], y[:30])},
        device="cpu",
    )
    many = fit_many(_factory(), (x, y), **kw)
    _compare(many, _one_by_one(_factory(), (x, y), **kw), rtol=0, atol=ATOL32)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_fused_path_is_bit_reproducible(momentum):
    x, y = _data()
    kw = dict(lrs=LRS, seeds=SEEDS, batch_size=8, epochs=2, momentum=momentum, device="cpu")
    first, second = (fit_many(_factory(), (x, y), batched=True, **kw) for _ in range(2))
    for a, b in zip(first, second):
        assert a.epochs == b.epochs
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_fused_with_replacement_follows_each_runs_generator():
    x, y = _data(dtype=torch.float64)
    kw = dict(lrs=[0.1], seeds=[3, 4], batch_size=8, epochs=1, replacement=True, device="cpu")
    many = fit_many(_factory(torch.float64), (x, y), batched=True, **kw)
    ones = _one_by_one(_factory(torch.float64), (x, y), **(kw | {"lrs": [0.1, 0.1]}))
    _compare(many, ones, rtol=RTOL64, atol=1e-12)


def test_sequential_path_is_fit_bit_for_bit():
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40) % 3

    def factory(g):
        return build_model("cnn", in_shape=(1, 8, 8), n_classes=3, width=2, generator=g)

    kw = dict(lrs=[0.1, 0.2], seeds=[0, 1], batch_size=8, epochs=1, device="cpu")
    many = fit_many(factory, (x, y), batched=False, **kw)
    ones = _one_by_one(factory, (x, y), **kw)
    for a, b in zip(many, ones):
        assert a.epochs == b.epochs
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_each_run_diverges_on_its_own():
    x, y = _data(dtype=torch.float64)
    x = x * 50
    kw = dict(lrs=[0.01, 1e4], seeds=[0, 1], batch_size=8, epochs=3, device="cpu")
    many = fit_many(_factory(torch.float64), (x, y), batched=True, **kw)
    ones = _one_by_one(_factory(torch.float64), (x, y), **kw)
    assert [r.status for r in many] == ["ok", "diverged"]
    assert [r.status for r in ones] == ["ok", "diverged"]
    assert many[1].steps == ones[1].steps
    assert len(many[1].epochs) == len(ones[1].epochs)
    torch.testing.assert_close(
        many[0].state["1.weight"], ones[0].state["1.weight"], rtol=RTOL64, atol=1e-12
    )


def test_rule():
    mlp = _factory()(torch.Generator().manual_seed(0))
    assert fused_path_applies(mlp, batch_size=32, n_models=8)
    assert not fused_path_applies(mlp, batch_size=32, n_models=1)
    n_params = sum(p.numel() for p in mlp.parameters())
    assert not fused_path_applies(mlp, batch_size=FUSED_MAX_WORK // n_params + 1, n_models=8)
    cnn = build_model("cnn", in_shape=(1, 8, 8), n_classes=3, width=2)
    assert fused_path_applies(cnn, batch_size=32, n_models=8)  # stacked through vmap
    assert not fused_path_applies(cnn, batch_size=32, n_models=1)
    with pytest.warns(UserWarning):
        bn = build_model("mlp", in_shape=(1, 5, 5), n_classes=3, norm="batch")
    assert not fused_path_applies(bn, batch_size=32, n_models=8)
    assert mlp_plan(nn.Sequential(nn.Flatten(0), nn.Linear(3, 3))) is None  # not a plain MLP


@pytest.mark.parametrize(("model", "epochs"), [("cnn", 3), ("resnet", 2)])
def test_fused_convnets_equal_fit_in_float32_within_rounding(model, epochs):
    # Two epochs of the residual net: on this toy problem its training is chaotic from the
    # fourth epoch on (fit itself, from weights perturbed by 1e-7 relative, ends 3e-2 apart in
    # loss), which rounding differences of the fused path trigger just the same.
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.arange(64) % 3

    def factory(g):
        return build_model(model, in_shape=(1, 8, 8), n_classes=3, width=4, generator=g)

    kw = dict(
        lrs=[0.05, 0.2, 0.5],
        seeds=SEEDS,
        batch_size=8,
        epochs=epochs,
        momentum=0.5,
        eval_sets={"heldout": (x[:30], y[:30])},
        device="cpu",
    )
    many = fit_many(factory, (x, y), batched=True, **kw)
    _compare(many, _one_by_one(factory, (x, y), **kw), rtol=0, atol=ATOL32)


def test_fused_convnet_is_bit_reproducible():
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 3

    def factory(g):
        return build_model("resnet", in_shape=(1, 8, 8), n_classes=3, width=4, generator=g)

    kw = dict(lrs=LRS, seeds=SEEDS, batch_size=8, epochs=1, momentum=0.5, device="cpu")
    first, second = (fit_many(factory, (x, y), batched=True, **kw) for _ in range(2))
    for a, b in zip(first, second):
        assert a.epochs == b.epochs
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_rule_for_convnets_bounds_the_work_of_one_thread():
    shape = (1, 28, 28)
    small = build_model("cnn", in_shape=shape, n_classes=10, width=4)
    large = build_model("cnn", in_shape=shape, n_classes=10, width=32)
    macs = forward_macs(small, shape)
    fits = CONV_FUSED_MAX_WORK // macs
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert fused_path_applies(small, batch_size=fits, n_models=8, in_shape=shape)
        assert not fused_path_applies(small, batch_size=fits + 1, n_models=8, in_shape=shape)
        assert not fused_path_applies(large, batch_size=32, n_models=8, in_shape=shape)
        assert fused_path_applies(large, batch_size=32, n_models=8)  # no shape, no bound
        torch.set_num_threads(2)  # several threads: fused (measured faster at every size)
        assert fused_path_applies(large, batch_size=128, n_models=8, in_shape=shape)
    finally:
        torch.set_num_threads(threads)


def test_rule_for_other_models_follows_stack_models(monkeypatch):
    cnn = build_model("cnn", in_shape=(1, 8, 8), n_classes=3, width=2)
    monkeypatch.setattr(multi, "STACK_MODELS", False)
    assert not fused_path_applies(cnn, batch_size=32, n_models=8)
    mlp = _factory()(torch.Generator().manual_seed(0))
    assert fused_path_applies(mlp, batch_size=32, n_models=8)  # the MLP rule is its own


def test_lrs_and_seeds_broadcast_and_callback_indices():
    x, y = _data()
    seen = []
    rs = fit_many(
        _factory(),
        (x, y),
        lrs=[0.1, 0.2, 0.3],
        seeds=[5],
        batch_size=8,
        epochs=1,
        device="cpu",
        callback=seen.append,
    )
    assert [r.seed for r in rs] == [5, 5, 5]
    assert sorted((p.model, p.epoch) for p in seen) == [(k, e) for k in range(3) for e in (0, 1)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lrs=[0.1, 0.2], seeds=[0, 1, 2]), "same length"),
        (dict(lrs=[], seeds=[0]), "at least one"),
        (dict(lrs=[0.1, -0.1], seeds=[0]), "lr"),
        (dict(lrs=[0.1], seeds=[-1]), "seed"),
        (dict(lrs=[0.1], seeds=[0, 1], batch_size=500), "larger than the training set"),
    ],
)
def test_bad_input(kwargs, match):
    x, y = _data()
    options = dict(batch_size=8, epochs=1, device="cpu") | kwargs
    with pytest.raises(UserError, match=match):
        fit_many(_factory(), (x, y), batched=True, **options)


def test_batched_true_needs_a_model_without_buffers():
    x = torch.rand(16, 1, 8, 8)
    y = torch.arange(16) % 2

    def factory(g):
        with pytest.warns(UserWarning):  # BatchNorm confounds the temperature
            return build_model(
                "cnn", in_shape=(1, 8, 8), n_classes=2, width=2, norm="batch", generator=g
            )

    with pytest.raises(UserError, match="without buffers"):
        fit_many(
            factory,
            (x, y),
            lrs=[0.1],
            seeds=[0, 1],
            batch_size=4,
            epochs=1,
            batched=True,
            device="cpu",
        )


@pytest.mark.parametrize(
    ("model", "kwargs"),
    [
        ("mlp", {"width": 16}),
        ("cnn", {"width": 4}),
        ("cnn", {"width": 4, "norm": "group"}),
        ("resnet", {"width": 4}),  # GroupNorm
        ("resnet", {"width": 4, "norm": "none"}),
    ],
)
def test_each_run_keeps_its_own_options_fused(model, kwargs):
    """Per-run lr, weight decay, momentum, seed, epochs and data order, float64 vs fit."""
    x = torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.arange(48) % 3

    def factory(g):
        m = build_model(model, in_shape=(1, 8, 8), n_classes=3, generator=g, **kwargs)
        return m.to(torch.float64)

    runs = [
        FitOptions(lr=0.1, batch_size=8, epochs=2, seed=0, device="cpu"),
        FitOptions(lr=0.05, batch_size=8, epochs=3, weight_decay=1e-2, seed=1, device="cpu"),
        FitOptions(lr=0.02, batch_size=8, epochs=1, momentum=0.9, seed=2, device="cpu"),
        FitOptions(lr=0.1, batch_size=8, epochs=3, replacement=True, seed=3, device="cpu"),
    ]
    finished = []
    many = fit_many(factory, (x, y), runs, batched=True, on_result=lambda k, r: finished.append(k))
    ones = [fit(factory(torch.Generator().manual_seed(o.seed)), (x, y), o) for o in runs]
    _compare(many, ones, rtol=RTOL64, atol=1e-12)
    assert [len(r.epochs) for r in many] == [3, 4, 2, 4]
    assert finished[0] == 2 and sorted(finished) == [0, 1, 2, 3]  # the shortest run leaves first


def test_runs_must_share_the_batch_size():
    x, y = _data()
    runs = [FitOptions(lr=0.1, batch_size=8), FitOptions(lr=0.1, batch_size=16)]
    with pytest.raises(UserError, match="share batch_size"):
        fit_many(_factory(), (x, y), runs)
