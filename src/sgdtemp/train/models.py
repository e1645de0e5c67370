r"""Image classifiers for temperature studies: an MLP, a small CNN and a residual network.

Every model maps images ``(N, C, H, W)`` to logits ``(N, n_classes)`` and is built by name from
:data:`MODELS` through :func:`build_model`. The defaults keep SGD *clean*: no BatchNorm (none in
the MLP and the CNN, GroupNorm in the residual network), no dropout. ``norm="batch"`` variants
exist for comparison, but BatchNorm makes the loss of a minibatch and hence the gradient noise
depend on the batch size $B$ through the batch statistics, so runs at equal $T = \eta/B$ are no
longer comparable (theory.md §2.4); building one warns with :class:`TemperatureConfoundWarning`
and :func:`temperature_confounders` flags it in the trainer's record.

Initialisation is PyTorch's default (uniform $\pm 1/\sqrt{\text{fan-in}}$ for weights and biases
of linear and convolution layers, ones and zeros for norm layers), drawn from the ``generator``
passed to :func:`build_model` (or the global generator when none is given, exactly as
``nn.Module`` constructors do). The modules are first created on the ``meta`` device, so building
a model draws no random numbers other than these.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from sgdtemp.errors import UserError

__all__ = [
    "MODELS",
    "NORMS",
    "PER_CHANNEL",
    "TemperatureConfoundWarning",
    "build_model",
    "init_parameters",
    "temperature_confounders",
    "mlp",
    "cnn",
    "resnet",
]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the ``channels_last`` layout (oneDNN's fastest), except inside ``vmap``.

    Inside ``vmap`` (stacked models, :mod:`sgdtemp.train.stacked`) layouts cannot be queried, and
    the grouped convolution picks its own.
    """
    if torch._C._functorch.is_batchedtensor(x):
        return x
    return x.contiguous(memory_format=torch.channels_last)


class TemperatureConfoundWarning(UserWarning):
    """A model part (BatchNorm) makes the loss depend on the batch size, confounding $T$."""


# ---------------------------------------------------------------- norm layers


def _group_norm(channels: int, groups: int) -> nn.Module:
    return nn.GroupNorm(math.gcd(channels, groups), channels)


# norm name -> (2-D feature maps, flat features) factory taking (channels, groups)
NORMS: dict[str, tuple[Callable[[int, int], nn.Module], Callable[[int, int], nn.Module]]] = {
    "none": (lambda c, g: nn.Identity(), lambda c, g: nn.Identity()),
    "group": (_group_norm, _group_norm),
    "batch": (lambda c, g: nn.BatchNorm2d(c), lambda c, g: nn.BatchNorm1d(c)),
}

# norms that make the loss of a minibatch depend on the other examples in it
_CONFOUNDING_MODULES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)


def _check_norm(norm: str, allowed: Sequence[str]) -> None:
    if norm not in allowed:
        raise UserError(f"norm {norm!r} is not available here; choose one of {', '.join(allowed)}")


# ---------------------------------------------------------------- models

#: The MLP's hidden activations.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
}


def mlp(
    in_shape: Sequence[int],
    n_classes: int,
    *,
    width: int = 256,
    depth: int = 1,
    norm: str = "none",
    activation: str = "relu",
) -> nn.Sequential:
    """Multi-layer perceptron ``C*H*W -> width (x depth) -> n_classes`` with ReLU.

    Args:
        in_shape: input shape ``(C, H, W)`` (any shape; it is flattened).
        n_classes: number of outputs.
        width: hidden units per layer.
        depth: number of hidden layers (0 gives multinomial logistic regression).
        norm: ``"none"`` (default) or ``"batch"`` (BatchNorm1d after each hidden layer).
        activation: ``"relu"`` (default), ``"softplus"`` (log(1 + e^z): the smooth ReLU, for
            measurements that need a twice-differentiable loss, e.g. descents to minima and
            quadratic forms at them) or ``"tanh"``.

    Returns:
        ``nn.Sequential(Flatten, Linear, ReLU, ..., Linear)``; logits ``(N, n_classes)``.

    Example:
        >>> model = mlp((1, 28, 28), 10)
        >>> [tuple(p.shape) for p in model.parameters()]
        [(256, 784), (256,), (10, 256), (10,)]
    """
    _check_norm(norm, ("none", "batch"))
    if activation not in ACTIVATIONS:
        raise UserError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    sizes = [math.prod(in_shape)] + [width] * depth
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(fan_in, fan_out))
        if norm != "none":
            layers.append(NORMS[norm][1](fan_out, 1))
        layers.append(ACTIVATIONS[activation]())
    layers.append(nn.Linear(sizes[-1], n_classes))
    return nn.Sequential(*layers)


class CNN(nn.Module):
    """The reference CNN: a 2x2 patch stem, two 3x3 convolution blocks with max pooling, linear.

    Layout for a ``(N, C, 28, 28)`` input at ``width = w`` (shapes without the batch axis)::

        conv 2x2 stride 2 C->w,      ReLU    (w, 14, 14)   patch stem
        conv 3x3 w->2w,   maxpool 2, ReLU    (2w, 7, 7)
        conv 3x3 2w->4w,  maxpool 2, ReLU    (4w, 3, 3)
        flatten, linear 36w -> n_classes

    Why this shape (measured with ``torch.profiler`` on a 2-core CPU, see
    ``benchmarks/bench_train.py``): a 3x3 convolution with one input channel at full 28x28
    resolution does little arithmetic but writes the largest feature map, and the memory-bound
    ReLU, pooling and their backward passes on it cost more than the convolutions that follow;
    the patch stem removes that map, so nearly all the time goes to the two 3x3 convolutions,
    which run close to matmul speed. ReLU comes after max pooling (the two commute: the same
    function and gradients, on a 4x smaller tensor). Weights and feature maps are kept
    ``channels_last``, the layout oneDNN convolutions run fastest in on CPUs
    (:func:`build_model` converts the weights, the model its input).
    """

    def __init__(self, in_shape: Sequence[int], n_classes: int, width: int, norm: str) -> None:
        super().__init__()
        channels, height, width_px = in_shape
        make_norm = NORMS[norm][0]

        def normed(conv: nn.Conv2d) -> list[nn.Module]:
            return [conv] if norm == "none" else [conv, make_norm(conv.out_channels, 8)]

        layers = [*normed(nn.Conv2d(channels, width, 2, stride=2)), nn.ReLU()]
        height, width_px = height // 2, width_px // 2
        for c_in, c_out in ((width, 2 * width), (2 * width, 4 * width)):
            layers += [*normed(nn.Conv2d(c_in, c_out, 3, padding=1)), nn.MaxPool2d(2), nn.ReLU()]
            height, width_px = height // 2, width_px // 2
        if height < 1 or width_px < 1:
            raise UserError(f"cnn needs images of at least 8x8 pixels, got {tuple(in_shape)}")
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(4 * width * height * width_px, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` of images ``(N, C, H, W)``."""
        x = _channels_last(x)
        return self.head(self.features(x).flatten(1))


def cnn(in_shape: Sequence[int], n_classes: int, *, width: int = 32, norm: str = "none") -> CNN:
    """The reference CNN (see :class:`CNN`): stem of ``width``, blocks of ``2 width, 4 width``.

    Args:
        in_shape: input shape ``(C, H, W)``, at least 8x8 pixels.
        n_classes: number of outputs.
        width: channels of the stem convolution.
        norm: ``"none"`` (default), ``"group"`` (GroupNorm, 8 groups) or ``"batch"``.

    Example:
        >>> model = cnn((1, 28, 28), 10)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    _check_norm(norm, tuple(NORMS))
    return CNN(in_shape, n_classes, width, norm)


class _Block(nn.Module):
    """Residual block: conv-norm-ReLU-conv-norm plus a (1x1 conv, norm) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, groups: int) -> None:
        super().__init__()
        make_norm = NORMS[norm][0]
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm == "none")
        self.norm1 = make_norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm == "none")
        self.norm2 = make_norm(c_out, groups)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=norm == "none"),
                make_norm(c_out, groups),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps ``(N, c_out, H/stride, W/stride)``."""
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style residual network: a 3x3 stem, three stages, global average pooling, linear.

    Stage ``i`` has ``width * 2**i`` channels and ``blocks`` residual blocks; stages 2 and 3
    halve the resolution. ``blocks=1`` is a ResNet-8, ``blocks=3`` the classic ResNet-20 layout.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_classes: int,
        width: int,
        blocks: int,
        norm: str,
        groups: int,
    ) -> None:
        super().__init__()
        make_norm = NORMS[norm][0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_shape[0], width, 3, padding=1, bias=norm == "none"),
            make_norm(width, groups),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        c_in = width
        for stage in range(3):
            c_out = width * 2**stage
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                stages.append(_Block(c_in, c_out, stride, norm, groups))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` of images ``(N, C, H, W)``."""
        x = _channels_last(x)
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


def resnet(
    in_shape: Sequence[int],
    n_classes: int,
    *,
    width: int = 16,
    blocks: int = 1,
    norm: str = "group",
    groups: int = 8,
) -> ResNet:
    """A residual network for CIFAR-size images, without BatchNorm by default (see :class:`ResNet`).

    Args:
        in_shape: input shape ``(C, H, W)``.
        n_classes: number of outputs.
        width: channels of the first stage (then ``2 width``, ``4 width``).
        blocks: residual blocks per stage.
        norm: ``"group"`` (default, GroupNorm), ``"none"`` or ``"batch"``.
        groups: GroupNorm groups (the greatest common divisor with the channels is used).

    Example:
        >>> model = resnet((3, 32, 32), 10)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    _check_norm(norm, tuple(NORMS))
    return ResNet(in_shape, n_classes, width, blocks, norm, groups)


# Containers whose ``forward`` applies only per-channel operations (ReLU, pooling, sums, means over
# pixels, flattening) between the calls of its layers: K copies side by side along the channel axis
# run as one net (sgdtemp.train.stacked_conv).
PER_CHANNEL: tuple[type[nn.Module], ...] = (CNN, _Block, ResNet)

# name -> builder(in_shape, n_classes, **kwargs)
MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "cnn": cnn, "resnet": resnet}
# models whose convolution weights are stored channels_last (after the default initialisation,
# which fills tensors in memory order, so the weights equal those of a default construction)
_CHANNELS_LAST = frozenset({"cnn", "resnet"})
# integer model options -> their least value
_INT_OPTIONS = {"width": 1, "depth": 0, "blocks": 1, "groups": 1}


# ---------------------------------------------------------------- initialisation


def _init_weight_bias(module: Any, generator: torch.Generator | None) -> None:
    # PyTorch's default for Linear and Conv: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
    weight = module.weight
    fan_in = weight[0].numel()
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if module.bias is not None:
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def _init_norm(module: Any, generator: torch.Generator | None) -> None:
    del generator  # deterministic
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.reset_running_stats()
    if module.weight is not None:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# module type -> initialiser of the parameters and buffers it owns directly
_INITIALIZERS: dict[type[nn.Module], Callable[[Any, torch.Generator | None], None]] = {
    nn.Linear: _init_weight_bias,
    nn.Conv2d: _init_weight_bias,
    nn.GroupNorm: _init_norm,
    nn.BatchNorm1d: _init_norm,
    nn.BatchNorm2d: _init_norm,
}


def init_parameters(model: nn.Module, *, generator: torch.Generator | None = None) -> nn.Module:
    """(Re-)initialise every layer of ``model`` in place with PyTorch's defaults from ``generator``.

    Layers are visited in ``model.modules()`` order, so the same generator state gives the same
    weights. ``generator=None`` draws from the global generator, as ``nn.Module`` constructors do.

    Args:
        model: a module made of the layer types in ``_INITIALIZERS`` (plus parameter-free ones).
        generator: CPU generator of the initial weights.

    Returns:
        ``model``.

    Raises:
        TypeError: if a layer that owns parameters or buffers has no initialiser.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a = init_parameters(nn.Linear(3, 2), generator=g).weight
        >>> b = init_parameters(nn.Linear(3, 2), generator=g.manual_seed(0)).weight
        >>> torch.equal(a, b)
        True
    """
    for module in model.modules():
        owns = any(True for _ in module.parameters(recurse=False)) or any(
            True for _ in module.buffers(recurse=False)
        )
        if not owns:
            continue
        initialize = _INITIALIZERS.get(type(module))
        if initialize is None:
            raise TypeError(f"no initialiser for {type(module).__name__}")
        with torch.no_grad():
            initialize(module, generator)
    return model


def temperature_confounders(model: nn.Module) -> tuple[str, ...]:
    """Names of the layer types in ``model`` that make its loss depend on the batch size.

    Example:
        >>> temperature_confounders(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
        ('BatchNorm1d',)
        >>> temperature_confounders(nn.Linear(2, 2))
        ()
    """
    found = {type(m).__name__ for m in model.modules() if isinstance(m, _CONFOUNDING_MODULES)}
    return tuple(sorted(found))


def build_model(
    name: str,
    *,
    in_shape: Sequence[int],
    n_classes: int,
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` from :data:`MODELS` with seeded PyTorch-default initialisation.

    Args:
        name: ``"mlp"``, ``"cnn"`` or ``"resnet"``.
        in_shape: shape of one input ``(C, H, W)``.
        n_classes: number of outputs.
        generator: CPU generator of the initial weights (default: the global generator).
        **kwargs: model options (``width``, ``depth``, ``blocks``, ``norm``, ...; see each
            builder).

    Returns:
        The model on the CPU in ``float32``, in training mode.

    Raises:
        UserError: for an unknown name, option or shape.

    Warns:
        TemperatureConfoundWarning: for ``norm="batch"``.

    Example:
        >>> m1 = build_model("mlp", in_shape=(1, 8, 8), n_classes=10,
        ...                  generator=torch.Generator().manual_seed(3))
        >>> m2 = build_model("mlp", in_shape=(1, 8, 8), n_classes=10,
        ...                  generator=torch.Generator().manual_seed(3))
        >>> all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
        True
    """
    model = _build(name, in_shape, n_classes, kwargs, generator)
    confounders = temperature_confounders(model)
    if confounders:
        warnings.warn(
            f"model {name} with {', '.join(confounders)}: the loss and gradient noise depend on "
            "the batch size, so runs at equal temperature lr/B are not comparable",
            TemperatureConfoundWarning,
            stacklevel=2,
        )
    return model


def _materialize(model: nn.Module) -> None:
    """Give a ``meta``-device model uninitialised CPU storage, in place.

    Does what ``model.to_empty(device="cpu")`` does for plain layers, without the tensor
    machinery behind it, which imports sympy (~0.5 s and ~30 MB of resident memory).
    """
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            empty = torch.empty(p.shape, dtype=p.dtype)
            setattr(module, name, nn.Parameter(empty, requires_grad=p.requires_grad))
        for name, b in list(module.named_buffers(recurse=False)):
            module.register_buffer(name, torch.empty(b.shape, dtype=b.dtype))


def _build(
    name: str,
    in_shape: Sequence[int],
    n_classes: int,
    kwargs: dict[str, Any],
    generator: torch.Generator | None,
) -> nn.Module:
    """:func:`build_model` without the warning (used to rebuild checkpoints)."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"in_shape must be (C, H, W) with positive sizes, got {tuple(in_shape)}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise UserError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    for key, value in kwargs.items():
        least = _INT_OPTIONS.get(key)
        if least is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < least
        ):
            raise UserError(f"model option {key} must be an integer >= {least}, got {value!r}")
    try:
        with torch.device("meta"):
            model = MODELS[name](shape, n_classes, **kwargs)
    except TypeError as err:
        raise UserError(f"model {name}: bad option ({err})") from err
    _materialize(model)
    init_parameters(model, generator=generator)
    if name in _CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model.train()
