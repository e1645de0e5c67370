r"""A seeded corruption suite for domain shift, after CIFAR-10-C.

D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019 (code: ``hendrycks/robustness``,
``ImageNet-C/create_c/make_cifar_c.py``). That script needs OpenCV, scikit-image and
ImageMagick and draws from the global ``np.random`` one image at a time; this module
reimplements the corruptions with NumPy, SciPy and Pillow, vectorized over the batch, on
``(N, C, H, W)`` float images in ``[0, 1]`` with ``C`` = 1 (grayscale) or 3 (RGB) and any size,
drawing every random number from ``numpy.random.default_rng(seed)``. The idea of applying the suite
to MNIST-sized images follows MNIST-C (N. Mu and J. Gilmer, 2019).

Parameters per severity 1..5. Lengths given in CIFAR pixels are multiplied by
``s = min(H, W) / 32`` (0.875 for 28x28 images); ``size = min(H, W)``. "same" means the
constants of ``make_cifar_c``.

==============  ==========================================================  ===================
corruption      parameter for severity 1, 2, 3, 4, 5                         vs make_cifar_c
==============  ==========================================================  ===================
gaussian_noise  x + N(0, c^2), c = .04, .06, .08, .09, .10                   same
shot_noise      Poisson(x c) / c, c = 500, 250, 100, 75, 50                  same
impulse_noise   salt-and-pepper on a fraction .01, .02, .03, .05, .07         same
speckle_noise   x + x N(0, c^2), c = .06, .10, .12, .16, .20                 same
gaussian_blur   sigma .4, .6, .7, .8, 1 (x s px), edges repeated             same
defocus_blur    disk (radius, alias sigma) (.3, .4), (.4, .5), (.5, .6),     area-sampled disk
                (1, .2), (1.5, .1) (x s px), edges mirrored                  [1]
zoom_blur       mean of x and centre zooms arange(1, e, .01),                same
                e = 1.06, 1.11, 1.16, 1.21, 1.26
motion_blur     (radius, sigma) (6, 1), (6, 1.5), (6, 2), (8, 2.5), (9, 3)   sigma at 4, 5 [2]
                (x s px), angle ~ U(-45, 45) degrees
contrast        (x - mean) c + mean, c = .75, .5, .4, .3, .15                 same
brightness      HSV value + .05, .1, .15, .2, .3                              same
pixelate        Pillow BOX down to int(c H) x int(c W) and back,             same
                c = .95, .9, .85, .75, .65
jpeg            Pillow JPEG quality 80, 65, 58, 50, 40                        same
elastic         (alpha, sigma, affine) x size: (.15, .1, .02), (.3, .1, .03),  own table [3]
                (.45, .1, .04), (.6, .1, .05), (.75, .1, .06)
fog             (strength, decay) (.2, 3), (.5, 3), (.75, 2.5), (1, 2),      same
                (1.5, 1.75); diamond-square plasma of side 2^k >= H, W
==============  ==========================================================  ===================

[1] CIFAR-C's binary disk changes in jumps (radius 1 is a 5-pixel cross, radius 0.875 a single
pixel), so rescaled radii would make severity 4 milder than 3 on 28x28 images. Here each pixel
is weighted by the fraction of its area inside the circle, which equals the binary disk below
radius 0.5 and grows smoothly with the radius.

[2] ImageMagick's ``MotionBlurImage`` (a one-sided line of ``2 ceil(radius) + 1`` taps with
Gaussian weights ``exp(-i^2 / 2 sigma^2)`` at integer offsets ``(ceil(i cos a - .5),
ceil(i sin a - .5))``, edge pixels repeated) is reproduced. Its radius only truncates the
kernel, so CIFAR-C's severities 3 (6, 2) and 4 (8, 2) blur almost equally; sigma is raised to
2.5 and 3 at severities 4 and 5 so that blur grows with severity.

[3] CIFAR-C's elastic table is not ordered by strength: its random affine shrinks from
severity 1 to 5 and its smoothed field moves pixels by about 0.04 px at severity 2. Here both
parts grow: a random affine moves three anchor points by up to ``affine`` px, and a
Gaussian-smoothed (``sigma``) uniform field scaled by ``alpha`` moves pixels by about 0.25, 0.5,
0.75, 1 and 1.25 px (RMS, at 32 px). The composed warp is sampled once, bilinearly, with
mirrored edges.

On tiny images (8x8 digits) some neighbouring severities coincide (pixelate rounds to the same
size, the disk stays one pixel).

Pixelate, JPEG and the blurs, contrast and brightness are deterministic; the others depend on
``seed``. One image's result depends on the whole batch's draws, so corrupting a slice differs
from slicing the corrupted batch.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import scipy.ndimage
import torch
from PIL import Image

from sgdtemp.errors import UserError

__all__ = ["Corruption", "CORRUPTIONS", "SEVERITIES", "corrupt"]

SEVERITIES = (1, 2, 3, 4, 5)
Array = npt.NDArray[np.floating[Any]]
_DENSE_LIMIT = 4096  # largest H*W for which a fixed linear operator is applied as one matrix


@dataclass(frozen=True)
class Corruption:
    """One corruption: a function of ``(x (N, C, H, W), parameter, rng)`` and its parameters.

    Attributes:
        name: registry key.
        apply: the vectorized corruption; it may return values outside ``[0, 1]``
            (:func:`corrupt` clips).
        params: the parameter for severities 1..5.
        stochastic: whether the result depends on the random generator.
    """

    name: str
    apply: Callable[[Array, Any, np.random.Generator], Array]
    params: tuple[Any, ...]
    stochastic: bool


def _length_scale(x: Array) -> float:
    """Image size relative to CIFAR's 32 pixels, for parameters given in pixels."""
    return min(x.shape[-2:]) / 32.0


# ---------------------------------------------------------------- noise


def _gaussian_noise(x: Array, c: float, rng: np.random.Generator) -> Array:
    return x + c * rng.standard_normal(x.shape, dtype=np.float32).astype(x.dtype)


def _shot_noise(x: Array, c: float, rng: np.random.Generator) -> Array:
    return (rng.poisson(x.astype(np.float64) * c) / c).astype(x.dtype)


def _impulse_noise(x: Array, c: float, rng: np.random.Generator) -> Array:
    flipped = rng.random(x.shape, dtype=np.float32) <= c
    salted = rng.random(x.shape, dtype=np.float32) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out


def _speckle_noise(x: Array, c: float, rng: np.random.Generator) -> Array:
    return x + x * (c * rng.standard_normal(x.shape, dtype=np.float32)).astype(x.dtype)


# ---------------------------------------------------------------- fixed linear filters


def _gaussian_blur(x: Array, c: float, rng: np.random.Generator) -> Array:
    sigma = c * _length_scale(x)
    return scipy.ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest")


def _disk_kernel(radius: float, alias_sigma: float) -> npt.NDArray[np.float64]:
    """Area-sampled disk of ``radius`` px, blurred by a 3x3 Gaussian of ``alias_sigma`` px."""
    half = math.ceil(radius + 0.5) + 1
    sub = 16  # subsamples per pixel side
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    coords = np.arange(-half, half + 1)
    fine = (coords[:, None] + offsets[None, :]).ravel()  # (K * sub,)
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2) <= radius**2
    k = len(coords)
    disk = inside.reshape(k, sub, k, sub).mean(axis=(1, 3))
    if disk.sum() == 0:  # radius far below a pixel
        disk[half, half] = 1.0
    disk /= disk.sum()
    if alias_sigma > 0:
        g = np.exp(-(np.arange(-1, 2) ** 2) / (2.0 * alias_sigma**2))
        disk = scipy.ndimage.convolve(disk, np.outer(g, g) / g.sum() ** 2, mode="constant")
    keep = np.argwhere(disk > 1e-12 * disk.max())
    (r0, c0), (r1, c1) = keep.min(axis=0), keep.max(axis=0)
    r = max(half - r0, r1 - half, half - c0, c1 - half)  # symmetric crop around the centre
    disk = disk[half - r : half + r + 1, half - r : half + r + 1]
    return disk / disk.sum()


def _defocus_blur(x: Array, c: tuple[float, float], rng: np.random.Generator) -> Array:
    s = _length_scale(x)
    kernel = _disk_kernel(c[0] * s, c[1] * s).astype(x.dtype)
    return scipy.ndimage.correlate(x, kernel[None, None], mode="mirror")


@functools.lru_cache(maxsize=32)
def _factors(
    kind: str, h: int, w: int, param: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Row and column operators ``(Z, H, H)``, ``(Z, W, W)`` of a separable filter family."""
    rows, cols = _FACTOR_BUILDERS[kind](h, w, param)
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


@functools.lru_cache(maxsize=8)
def _dense_operator(kind: str, h: int, w: int, param: float, dtype: str) -> Array:
    """``(mean_k kron(A_k, B_k))^T`` in ``dtype``, which right-multiplies flattened images."""
    rows, cols = _factors(kind, h, w, param)
    terms = rows.shape[0]
    # sum_k A_k[i, k] B_k[j, l], laid out as kron's [(i, j), (k, l)].
    total = rows.reshape(terms, h * h).T @ cols.reshape(terms, w * w)
    total = total.reshape(h, h, w, w).transpose(0, 2, 1, 3).reshape(h * w, h * w) / terms
    operator = np.ascontiguousarray(total.T, dtype=dtype)
    operator.setflags(write=False)
    return operator


def _separable_mean(x: Array, kind: str, param: float) -> Array:
    """``mean_k(A_k x B_k^T)`` for each image and channel of ``x`` ``(N, C, H, W)``.

    Small images use one cached ``(HW, HW)`` matrix, so the cost does not grow with the number
    of terms; larger ones apply the factors one by one.
    """
    n, ch, h, w = x.shape
    if h * w <= _DENSE_LIMIT:
        operator = _dense_operator(kind, h, w, param, x.dtype.str)
        return (x.reshape(n * ch, h * w) @ operator).reshape(x.shape)
    rows, cols = _factors(kind, h, w, param)
    out = np.zeros_like(x)
    for a, b in zip(rows, cols, strict=True):
        out += a.astype(x.dtype) @ x @ b.T.astype(x.dtype)
    return out / rows.shape[0]


def _zoom_matrix(n: int, zoom: float) -> npt.NDArray[np.float64]:
    """``(n, n)`` operator of CIFAR-C's ``clipped_zoom`` along one axis.

    It crops the centre, enlarges it by ``zoom`` with ``scipy.ndimage.zoom`` (order 1) and trims
    the result back to ``n`` pixels.
    """
    crop = math.ceil(n / zoom)
    top = (n - crop) // 2
    out_len = int(round(crop * zoom))
    trim = (out_len - n) // 2
    step = (crop - 1) / (out_len - 1) if out_len > 1 else 0.0
    src = top + (np.arange(n) + trim) * step
    lo = np.clip(np.floor(src).astype(np.int64), 0, n - 1)
    hi = np.clip(lo + 1, 0, n - 1)
    frac = src - lo
    matrix = np.zeros((n, n))
    rows = np.arange(n)
    np.add.at(matrix, (rows, lo), 1.0 - frac)
    np.add.at(matrix, (rows, hi), frac)
    return matrix


def _zoom_factors(
    h: int, w: int, end: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    zooms = np.arange(1.0, end, 0.01)  # as make_cifar_c: 7, 12, 16, 21 or 26 factors
    rows = np.stack([np.eye(h)] + [_zoom_matrix(h, z) for z in zooms])  # x itself, then zooms
    cols = np.stack([np.eye(w)] + [_zoom_matrix(w, z) for z in zooms])
    return rows, cols


def _zoom_blur(x: Array, end: float, rng: np.random.Generator) -> Array:
    return _separable_mean(x, "zoom", end)


def _pil_box_matrix(n_in: int, n_out: int) -> npt.NDArray[np.float64]:
    """``(n_out, n_in)`` matrix of Pillow's BOX resize along one axis (exact, from Pillow)."""
    identity = Image.fromarray(np.eye(n_in, dtype=np.float32))  # mode "F"
    resized = identity.resize((n_out, n_in), Image.Resampling.BOX)  # rows: resized unit rows
    return np.asarray(resized, dtype=np.float64).T


def _pixelate_factors(
    h: int, w: int, c: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    small_h, small_w = max(int(h * c), 1), max(int(w * c), 1)
    rows = _pil_box_matrix(small_h, h) @ _pil_box_matrix(h, small_h)
    cols = _pil_box_matrix(small_w, w) @ _pil_box_matrix(w, small_w)
    return rows[None], cols[None]


def _pixelate(x: Array, c: float, rng: np.random.Generator) -> Array:
    return _separable_mean(x, "pixelate", c)


_FACTOR_BUILDERS: dict[
    str,
    Callable[[int, int, float], tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
] = {"zoom": _zoom_factors, "pixelate": _pixelate_factors}


def _contrast(x: Array, c: float, rng: np.random.Generator) -> Array:
    means = x.mean(axis=(2, 3), keepdims=True)
    return (x - means) * c + means


def _brightness(x: Array, c: float, rng: np.random.Generator) -> Array:
    # Raising HSV value V with hue and saturation fixed scales RGB by V'/V (black turns grey).
    if x.shape[1] == 1:
        return np.minimum(x + c, 1.0)
    value = x.max(axis=1, keepdims=True)
    raised = np.minimum(value + c, 1.0)
    ratio = np.divide(raised, value, out=np.zeros_like(value), where=value > 0)
    return np.where(value > 0, x * ratio, raised)


def _jpeg_roundtrip(image: npt.NDArray[np.uint8], quality: int) -> npt.NDArray[np.uint8]:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded)


def _jpeg_gray_mosaic(pixels: npt.NDArray[np.uint8], quality: int) -> npt.NDArray[np.uint8]:
    """JPEG of each ``(H, W)`` image, all encoded at once as tiles of one large image.

    Each image is padded to a multiple of 8 pixels by repeating its last row and column, as the
    encoder does for a single image; grayscale JPEG codes 8x8 blocks independently and decodes
    them without cross-block filtering, so the result equals encoding the images one by one.
    """
    n, h, w = pixels.shape
    th, tw = -(-h // 8) * 8, -(-w // 8) * 8
    per_row = max(1, min(n, 65_000 // tw, math.ceil(math.sqrt(n))))  # JPEG sides <= 65535
    rows = -(-n // per_row)
    if rows * th > 65_000:
        half = n // 2
        return np.concatenate(
            [_jpeg_gray_mosaic(pixels[:half], quality), _jpeg_gray_mosaic(pixels[half:], quality)]
        )
    tiles = np.zeros((rows * per_row, th, tw), dtype=np.uint8)
    tiles[:n] = np.pad(pixels, ((0, 0), (0, th - h), (0, tw - w)), mode="edge")
    canvas = tiles.reshape(rows, per_row, th, tw).swapaxes(1, 2).reshape(rows * th, per_row * tw)
    decoded = _jpeg_roundtrip(canvas, quality)
    tiles = decoded.reshape(rows, th, per_row, tw).swapaxes(1, 2).reshape(-1, th, tw)
    return tiles[:n, :h, :w]


def _jpeg(x: Array, quality: int, rng: np.random.Generator) -> Array:
    pixels = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    if x.shape[1] == 1:
        out = _jpeg_gray_mosaic(pixels[:, 0], quality)[:, None]
    else:
        # Colour JPEG upsamples chroma across block borders, so tiles would see their
        # neighbours: encode RGB images one at a time.
        channels_last = pixels.transpose(0, 2, 3, 1)
        out = np.stack([_jpeg_roundtrip(image, quality) for image in channels_last])
        out = out.transpose(0, 3, 1, 2)
    return out.astype(x.dtype) / np.asarray(255.0, dtype=x.dtype)


# ---------------------------------------------------------------- per-image geometry


def _motion_blur(x: Array, c: tuple[float, float], rng: np.random.Generator) -> Array:
    n, ch, h, w = x.shape
    s = _length_scale(x)
    radius, sigma = c[0] * s, c[1] * s
    taps = np.arange(2 * math.ceil(radius) + 1)
    weights = np.exp(-(taps**2) / (2.0 * sigma**2))
    weights /= weights.sum()
    angle = np.deg2rad(rng.uniform(-45.0, 45.0, size=n))
    # Offsets are integer and change with the angle in steps, so after sorting the images by
    # angle each tap is a shift that is constant over runs of consecutive images.
    order = np.argsort(angle, kind="stable")
    angle = angle[order]
    pad = int(taps[-1])
    padded = np.pad(x[order], ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    out = np.zeros_like(x)
    for i, weight in zip(taps, weights, strict=True):
        if weight < 1e-7:
            continue
        d_col = np.ceil(i * np.cos(angle) - 0.5).astype(np.int64)  # (N,), as ImageMagick
        d_row = np.ceil(i * np.sin(angle) - 0.5).astype(np.int64)
        change = np.flatnonzero((np.diff(d_col) != 0) | (np.diff(d_row) != 0)) + 1
        for start, stop in zip(np.r_[0, change], np.r_[change, n], strict=True):
            r0, c0 = pad + d_row[start], pad + d_col[start]
            out[start:stop] += weight * padded[start:stop, :, r0 : r0 + h, c0 : c0 + w]
    restored = np.empty_like(out)
    restored[order] = out
    return restored


def _elastic(x: Array, c: tuple[float, float, float], rng: np.random.Generator) -> Array:
    n, ch, h, w = x.shape
    size = min(h, w)
    alpha, sigma, affine = c[0] * size, c[1] * size, c[2] * size
    # Random affine as in CIFAR-C: three anchor points (x, y) around the centre move by up to
    # `affine` px; M maps the anchors to their moved copies, and pixel p shows the source at
    # M^{-1} p (OpenCV's warpAffine convention).
    centre = np.array([w // 2, h // 2], dtype=np.float64)
    third = size // 3
    anchors = np.stack([centre + third, centre + [third, -third], centre - third])  # (3, 2)
    moved = anchors + rng.uniform(-affine, affine, size=(n, 3, 2))
    lifted = np.concatenate([anchors, np.ones((3, 1))], axis=1)  # (3, 3)
    m_t = np.linalg.solve(lifted, moved)  # (N, 3, 2): [x y 1] @ m_t = moved
    lin, shift = m_t[:, :2, :].transpose(0, 2, 1), m_t[:, 2, :]  # (N, 2, 2), (N, 2)
    inv = np.linalg.inv(lin)
    # Smooth random displacement U(-1, 1) * alpha, applied before the affine as in CIFAR-C.
    fields = rng.random((2, n, h, w), dtype=np.float32)
    fields = scipy.ndimage.gaussian_filter(
        2 * fields - 1, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3.0
    )
    col_grid = np.arange(w, dtype=np.float32)[None, None, :]
    row_grid = np.arange(h, dtype=np.float32)[None, :, None]
    q_col = alpha * fields[0] + col_grid - shift[:, 0, None, None].astype(np.float32)
    q_row = alpha * fields[1] + row_grid - shift[:, 1, None, None].astype(np.float32)
    back = inv.astype(np.float32)[:, :, :, None, None]  # (N, 2, 2, 1, 1)
    # Bilinear sampling with mirrored edges: the image index is an exact integer coordinate.
    coords = np.empty((3, n, ch, h, w))
    coords[0] = np.arange(n * ch, dtype=np.float64).reshape(n, ch, 1, 1)
    coords[1] = (back[:, 1, 0] * q_col + back[:, 1, 1] * q_row)[:, None]
    coords[2] = (back[:, 0, 0] * q_col + back[:, 0, 1] * q_row)[:, None]
    flat = x.reshape(n * ch, h, w)
    out = scipy.ndimage.map_coordinates(
        flat, coords.reshape(3, n * ch, h, w), order=1, mode="reflect"
    )
    return out.reshape(x.shape)


def _plasma(n: int, side: int, decay: float, rng: np.random.Generator) -> Array:
    """``n`` diamond-square height maps ``(n, side, side)`` in ``[0, 1]``, ``side`` a power of 2.

    A batched port of CIFAR-C's ``plasma_fractal``.
    """
    heights = np.zeros((n, side, side))
    step, wibble = side, 100.0

    def wibbled_mean(total: Array) -> Array:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = heights[:, ::step, ::step]
        square = corners + np.roll(corners, -1, axis=1)
        square += np.roll(square, -1, axis=2)
        heights[:, half::step, half::step] = wibbled_mean(square)
        centres, corners = heights[:, half::step, half::step], heights[:, ::step, ::step]
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        heights[:, ::step, half::step] = wibbled_mean(left)
        top = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        heights[:, half::step, ::step] = wibbled_mean(top)
        step //= 2
        wibble /= decay
    heights -= heights.min(axis=(1, 2), keepdims=True)
    return heights / heights.max(axis=(1, 2), keepdims=True)


def _fog(x: Array, c: tuple[float, float], rng: np.random.Generator) -> Array:
    n, ch, h, w = x.shape
    side = max(2, 1 << (max(h, w) - 1).bit_length())
    fog = _plasma(n, side, c[1], rng)[:, None, :h, :w].astype(x.dtype)
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + c[0] * fog) * peak / (peak + c[0])


CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        Corruption("gaussian_noise", _gaussian_noise, (0.04, 0.06, 0.08, 0.09, 0.10), True),
        Corruption("shot_noise", _shot_noise, (500, 250, 100, 75, 50), True),
        Corruption("impulse_noise", _impulse_noise, (0.01, 0.02, 0.03, 0.05, 0.07), True),
        Corruption("speckle_noise", _speckle_noise, (0.06, 0.10, 0.12, 0.16, 0.20), True),
        Corruption("gaussian_blur", _gaussian_blur, (0.4, 0.6, 0.7, 0.8, 1.0), False),
        Corruption(
            "defocus_blur",
            _defocus_blur,
            ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
            False,
        ),
        Corruption("zoom_blur", _zoom_blur, (1.06, 1.11, 1.16, 1.21, 1.26), False),
        Corruption(
            "motion_blur",
            _motion_blur,
            ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.5), (9, 3.0)),
            True,
        ),
        Corruption("contrast", _contrast, (0.75, 0.5, 0.4, 0.3, 0.15), False),
        Corruption("brightness", _brightness, (0.05, 0.1, 0.15, 0.2, 0.3), False),
        Corruption("pixelate", _pixelate, (0.95, 0.9, 0.85, 0.75, 0.65), False),
        Corruption("jpeg", _jpeg, (80, 65, 58, 50, 40), False),
        Corruption(
            "elastic",
            _elastic,
            (
                (0.15, 0.1, 0.02),
                (0.3, 0.1, 0.03),
                (0.45, 0.1, 0.04),
                (0.6, 0.1, 0.05),
                (0.75, 0.1, 0.06),
            ),
            True,
        ),
        Corruption(
            "fog", _fog, ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)), True
        ),
    )
}


def check_corruption(name: str, severity: int) -> Corruption:
    """The registry entry for ``name``; raises :class:`UserError` for a bad name or severity."""
    if name not in CORRUPTIONS:
        raise UserError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise UserError(f"corruption severity must be one of 1, 2, 3, 4, 5, got {severity!r}")
    return CORRUPTIONS[name]


@overload
def corrupt(x: torch.Tensor, name: str, severity: int, *, seed: int) -> torch.Tensor: ...


@overload
def corrupt(x: Array, name: str, severity: int, *, seed: int) -> Array: ...


def corrupt(
    x: torch.Tensor | Array, name: str, severity: int, *, seed: int
) -> torch.Tensor | Array:
    """Apply one corruption at one severity to a batch of images.

    Args:
        x: images ``(N, C, H, W)`` in ``[0, 1]``, ``C`` 1 or 3, a floating NumPy array or tensor.
        name: a key of :data:`CORRUPTIONS`.
        severity: 1 (mild) to 5 (strong).
        seed: seed of ``numpy.random.default_rng`` for the random draws (ignored by the
            deterministic corruptions).

    Returns:
        The corrupted images, clipped to ``[0, 1]``, of the same type, shape, dtype (and device)
        as ``x``.

    Raises:
        UserError: for an unknown name, a severity outside 1..5, or images of the wrong shape or
            type.

    Example:
        >>> import numpy as np
        >>> x = np.full((2, 1, 28, 28), 0.5, dtype=np.float32)
        >>> y = corrupt(x, "contrast", 5, seed=0)
        >>> y.shape, y.dtype, float(y.max())
        ((2, 1, 28, 28), dtype('float32'), 0.5)
        >>> bool((corrupt(x, "gaussian_noise", 3, seed=0) != x).any())
        True
    """
    entry = check_corruption(name, severity)
    work = _as_work_array(x)
    if work.ndim != 4 or work.shape[1] not in (1, 3):
        raise UserError(f"corrupt needs images (N, C, H, W) with C 1 or 3, got {work.shape}")
    if work.size == 0:
        return x
    rng = np.random.default_rng(seed)
    out = np.clip(entry.apply(work, entry.params[severity - 1], rng), 0.0, 1.0)
    if isinstance(x, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(out)).to(device=x.device, dtype=x.dtype)
    return out.astype(x.dtype, copy=False)


def _as_work_array(x: object) -> Array:
    """``x`` as a NumPy array to compute in: float64 if it is float64, else float32."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise UserError(f"corrupt needs floating-point images in [0, 1], got {x.dtype}")
        wide = x.dtype == torch.float64
        return x.detach().to("cpu", torch.float64 if wide else torch.float32).numpy()
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
        raise UserError(
            f"corrupt needs a floating-point NumPy array or tensor, got {type(x).__name__}"
        )
    return x.astype(np.float64 if x.dtype == np.float64 else np.float32)
