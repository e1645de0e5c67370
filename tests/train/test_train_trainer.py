"""The clean SGD trainer against a slow, obvious SGD loop; determinism, divergence, inputs."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.theory.temperature import temperature
from sgdtemp.train.models import build_model
from sgdtemp.train.trainer import DEFAULT_DIVERGENCE_FACTOR, Progress, evaluate, fit

RTOL64 = 1e-10  # float64: fit and the oracle differ only by summation order


def _data(n=96, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g, dtype=dtype)
    y = (x.flatten(1)[:, :8].sum(1) > x.flatten(1)[:, 8:].sum(1)).long() + 2 * (
        x[:, 0, 0, 0] > 0.5
    ).long()
    return x, y


def _model(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return build_model("mlp", in_shape=(1, 4, 4), n_classes=4, width=12, generator=g).to(dtype)


def _oracle(model, x, y, *, lr, batch_size, epochs, momentum, weight_decay, seed, replacement):
    """SGD written out by hand: same data order, same update, float64."""
    g = torch.Generator().manual_seed(seed)
    params = list(model.parameters())
    bufs = [None] * len(params)
    n = len(y)
    steps = n // batch_size
    for _ in range(epochs):
        if replacement:
            order = torch.randint(n, (steps, batch_size), generator=g)
        else:
            order = torch.randperm(n, generator=g)[: steps * batch_size].view(steps, batch_size)
        for idx in order:
            loss = F.cross_entropy(model(x[idx]), y[idx])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for i, (p, gr) in enumerate(zip(params, grads)):
                    d = gr + weight_decay * p
                    bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + d
                    p -= lr * (bufs[i] if momentum else d)
    return model


@pytest.mark.parametrize(
    ("momentum", "weight_decay", "replacement"),
    [(0.0, 0.0, False), (0.9, 1e-2, False), (0.0, 0.0, True)],
)
def test_fit_equals_hand_written_sgd(momentum, weight_decay, replacement):
    x, y = _data(dtype=torch.float64)
    kw = dict(lr=0.3, batch_size=10, epochs=3, momentum=momentum, weight_decay=weight_decay)
    result = fit(
        _model(dtype=torch.float64), (x, y), seed=4, device="cpu", replacement=replacement, **kw
    )
    ref = _oracle(_model(dtype=torch.float64), x, y, seed=4, replacement=replacement, **kw)
    assert result.status == "ok"
    assert result.steps == 3 * (96 // 10)  # the last partial minibatch is skipped
    for name, p in ref.named_parameters():
        torch.testing.assert_close(result.state[name], p.detach(), rtol=RTOL64, atol=1e-12)
    # metrics: a full pass of the final model
    full = F.cross_entropy(ref(x), y).item()
    acc = (ref(x).argmax(1) == y).double().mean().item()
    assert result.final["train"]["loss"] == pytest.approx(full, rel=RTOL64)
    assert result.final["train"]["acc"] == pytest.approx(acc)


def test_training_learns():
    x, y = _data(n=400)
    result = fit(_model(), (x, y), lr=0.5, batch_size=16, epochs=15, seed=0, device="cpu")
    first, last = result.epochs[0]["train"], result.final["train"]
    assert last["loss"] < 0.6 * first["loss"]
    assert last["acc"] > 0.7  # chance is about 0.25


def test_same_seed_is_bit_identical_other_seed_is_not():
    x, y = _data()
    kw = dict(lr=0.2, batch_size=8, epochs=2, momentum=0.5, device="cpu")
    a = fit(_model(), (x, y), seed=1, **kw)
    b = fit(_model(), (x, y), seed=1, **kw)
    c = fit(_model(), (x, y), seed=2, **kw)
    assert a.epochs == b.epochs
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert not torch.equal(a.state["1.weight"], c.state["1.weight"])


def test_cnn_training_is_bit_identical():
    x = torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(48) % 3

    def run():
        m = build_model(
            "cnn",
            in_shape=(1, 8, 8),
            n_classes=3,
            width=4,
            generator=torch.Generator().manual_seed(0),
        )
        return fit(m, (x, y), lr=0.1, batch_size=8, epochs=2, seed=0, device="cpu")

    a, b = run(), run()
    assert a.epochs == b.epochs
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_generator_and_seed_give_the_same_order():
    x, y = _data()
    a = fit(_model(), (x, y), lr=0.2, batch_size=8, epochs=1, seed=3, device="cpu")
    b = fit(
        _model(),
        (x, y),
        lr=0.2,
        batch_size=8,
        epochs=1,
        device="cpu",
        generator=torch.Generator().manual_seed(3),
    )
    assert a.epochs == b.epochs
    assert a.seed == 3 and b.seed is None


def test_records_layout_and_epoch_zero():
    x, y = _data()
    model = _model()
    initial = evaluate(model, x, y)
    evals = {"heldout": (x[:20], y[:20]), "corrupt:noise:3": _data(n=30, seed=9)}
    seen = []
    result = fit(
        model,
        (x, y),
        lr=0.1,
        batch_size=8,
        epochs=2,
        eval_sets=evals,
        seed=0,
        device="cpu",
        callback=seen.append,
    )
    assert [r["epoch"] for r in result.epochs] == [0, 1, 2]
    assert [r["step"] for r in result.epochs] == [0, 12, 24]
    assert result.epochs[0]["train"] == initial
    assert set(result.epochs[1]) == {"epoch", "step", "train", "heldout", "corrupt"}
    assert set(result.epochs[1]["corrupt"]) == {"noise:3"}
    assert seen == [Progress(0, e, 2, r["step"], r) for e, r in enumerate(result.epochs)]
    assert result.temperature == temperature(0.1, 8, 0.0)
    assert result.train_seconds <= result.seconds
    assert not model.training or model.training  # mode restored by evaluate
    assert model.training


def test_evaluate_restores_mode_and_matches_direct_computation():
    x, y = _data()
    model = _model().eval()
    out = evaluate(model, x, y, batch_size=7)
    assert not model.training
    with torch.no_grad():
        logits = model(x)
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert out["acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_float64_model_trains_in_float64():
    x, y = _data()  # float32 data, cast to the model's dtype
    result = fit(_model(dtype=torch.float64), (x, y), lr=0.1, batch_size=8, epochs=1, device="cpu")
    assert all(v.dtype == torch.float64 for v in result.state.values())


def test_huge_learning_rate_diverges():
    x, y = _data()
    result = fit(_model(), (x * 100, y), lr=1e4, batch_size=8, epochs=5, seed=0, device="cpu")
    assert result.status == "diverged"
    assert "step" in result.reason
    assert result.steps < 5 * 12
    assert result.divergence_bound == DEFAULT_DIVERGENCE_FACTOR * max(
        result.epochs[0]["train"]["loss"], 1.0
    )


def test_divergence_bound_is_respected():
    x, y = _data()
    result = fit(
        _model(), (x, y), lr=0.1, batch_size=8, epochs=3, divergence_bound=0.5, device="cpu"
    )
    assert result.status == "diverged"
    assert "exceeded the divergence bound 0.5" in result.reason
    assert result.steps == 12  # checked at the end of the first epoch (12 steps < 16)


def test_non_finite_initial_loss_stops_before_training():
    x, y = _data()
    x = x.clone()
    x[0, 0, 0, 0] = math.nan
    result = fit(_model(), (x, y), lr=0.1, batch_size=8, epochs=3, device="cpu")
    assert result.status == "diverged"
    assert result.steps == 0
    assert len(result.epochs) == 1


def test_batchnorm_is_flagged():
    x, y = _data()
    with pytest.warns(UserWarning):
        model = build_model("mlp", in_shape=(1, 4, 4), n_classes=4, norm="batch")
    result = fit(model, (x, y), lr=0.1, batch_size=8, epochs=1, device="cpu")
    assert result.confounds_temperature
    assert result.to_dict()["confounders"] == ["BatchNorm1d"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lr=0.0), "lr"),
        (dict(lr=-1.0), "lr"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=97), "larger than the training set"),
        (dict(momentum=1.0), "momentum"),
        (dict(epochs=-1), "epochs"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(seed=1, generator=torch.Generator()), "either seed or generator"),
        (dict(eval_sets={"train": _data()}), "reserved"),
        (dict(eval_sets={"bad": (torch.rand(3, 2), torch.zeros(3, dtype=torch.long))}), "differ"),
        (
            dict(eval_sets={"empty": (torch.rand(0, 1, 4, 4), torch.zeros(0, dtype=torch.long))}),
            "empty",
        ),
        (dict(device="tpu"), "device"),
        (dict(divergence_bound=0.0), "divergence_bound"),
    ],
)
def test_bad_input_raises_before_training(kwargs, match):
    x, y = _data()
    model = _model()
    before = [p.clone() for p in model.parameters()]
    options = dict(lr=0.1, batch_size=8, epochs=1, device="cpu") | kwargs
    with pytest.raises(UserError, match=match):
        fit(model, (x, y), **options)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_bad_data_raises():
    x, y = _data()
    with pytest.raises(UserError, match="int64"):
        fit(_model(), (x, y.float()), lr=0.1, batch_size=8, epochs=1, device="cpu")
    with pytest.raises(UserError, match=r"\(N,\)"):
        fit(_model(), (x, y[:5]), lr=0.1, batch_size=8, epochs=1, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_without_cuda_is_a_user_error():
    x, y = _data()
    with pytest.raises(UserError, match="CUDA is not available"):
        fit(_model(), (x, y), lr=0.1, batch_size=8, epochs=1, device="cuda")


def test_image_dataset_input():
    data = pytest.importorskip("sgdtemp.data")
    x, y = _data()
    train = data.ImageDataset("toy:train", x, y, 4)
    result = fit(
        _model(),
        train,
        lr=0.1,
        batch_size=8,
        epochs=1,
        device="auto",
        eval_sets={"test": data.ImageDataset("toy:test", x[:10], y[:10], 4)},
    )
    assert result.status == "ok" and "test" in result.final


def test_works_with_any_module():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(16, 4))

        def forward(self, x):
            return x.flatten(1) @ self.w

    x, y = _data()
    result = fit(Tiny(), (x, y), lr=0.5, batch_size=8, epochs=2, device="cpu")
    assert result.final["train"]["loss"] < math.log(4)


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-2)])
def test_sgd_update_is_torch_optim_sgd_bit_for_bit(momentum, weight_decay):
    from sgdtemp.train.trainer import SGD

    g = torch.Generator().manual_seed(0)
    ours = [torch.randn(5, 3, generator=g), torch.randn(3, generator=g)]
    ref = [p.clone().requires_grad_() for p in ours]
    opt = torch.optim.SGD(ref, lr=0.3, momentum=momentum, weight_decay=weight_decay)
    sgd = SGD(ours, lr=0.3, momentum=momentum, weight_decay=weight_decay)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        for p, gr in zip(ref, grads):
            p.grad = gr.clone()
        opt.step()
        sgd.step(grads)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b.detach())
