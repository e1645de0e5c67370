"""The corruption suite: contract over the registry, then oracles for single corruptions."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.ndimage
import torch
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image

from sgdtemp.data import CORRUPTIONS, SEVERITIES, corrupt
from sgdtemp.errors import UserError

NAMES = list(CORRUPTIONS)
STOCHASTIC = [name for name, c in CORRUPTIONS.items() if c.stochastic]
REQUIRED = {
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
    "defocus_blur", "zoom_blur", "motion_blur", "contrast", "brightness", "pixelate", "jpeg",
    "elastic", "fog",
}  # fmt: skip
STAT_RTOL = 0.03  # relative tolerance of moment checks on ~50k draws (std error ~0.6 %)


def synthetic_rgb(n: int = 32, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth random colour fields with flat rectangles on top: edges and texture."""
    rng = np.random.default_rng(seed)
    x = scipy.ndimage.gaussian_filter(rng.random((n, 3, size, size)), (0, 0, 1.5, 1.5))
    x = (x - x.min()) / (x.max() - x.min()) * 0.5 + 0.1
    for image in x:
        for _ in range(3):
            r0, c0 = rng.integers(0, size - 8, 2)
            h, w = rng.integers(4, size // 2, 2)
            image[:, r0 : r0 + h, c0 : c0 + w] = rng.random((3, 1, 1)) * 0.8 + 0.1
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def rgb_batch() -> np.ndarray:
    return synthetic_rgb()


def test_registry_covers_the_suite() -> None:
    assert REQUIRED <= set(CORRUPTIONS)
    for name, entry in CORRUPTIONS.items():
        assert entry.name == name and len(entry.params) == len(SEVERITIES)


# ---------------------------------------------------------------- contract over the registry

SHAPES = {"gray28": (4, 1, 28, 28), "rgb32": (3, 3, 32, 32), "rgb_odd": (2, 3, 20, 27)}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_range(name: str, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).random(shape)
    for dtype in (np.float32, np.float64):
        clean = x.astype(dtype)
        before = clean.copy()
        out = corrupt(clean, name, 5, seed=0)
        assert isinstance(out, np.ndarray) and out.shape == shape and out.dtype == dtype
        assert out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_array_equal(clean, before)  # input untouched


@pytest.mark.parametrize("name", NAMES)
def test_tensor_in_tensor_out(name: str) -> None:
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.float16):
        clean = x.to(dtype)
        out = corrupt(clean, name, 2, seed=0)
        assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == clean.shape
        assert out.device == clean.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    np.testing.assert_allclose(
        corrupt(x, name, 2, seed=0).numpy(), corrupt(x.numpy(), name, 2, seed=0), atol=0
    )


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result(name: str, rgb_batch: np.ndarray) -> None:
    a = corrupt(rgb_batch, name, 3, seed=11)
    b = corrupt(rgb_batch, name, 3, seed=11)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_seed_matters_only_for_stochastic(name: str, rgb_batch: np.ndarray) -> None:
    a = corrupt(rgb_batch, name, 3, seed=1)
    b = corrupt(rgb_batch, name, 3, seed=2)
    assert (not np.array_equal(a, b)) == (name in STOCHASTIC)


def _mean_squared_change(x: np.ndarray, name: str) -> list[float]:
    return [float(((corrupt(x, name, s, seed=0) - x) ** 2).mean()) for s in SEVERITIES]


@pytest.mark.parametrize("name", NAMES)
def test_distortion_grows_with_severity_fashion_mnist(name: str, fashion_test_batch) -> None:
    msd = _mean_squared_change(fashion_test_batch, name)
    assert all(a < b for a, b in zip(msd, msd[1:])), msd


@pytest.mark.parametrize("name", NAMES)
def test_distortion_grows_with_severity_rgb(name: str, rgb_batch: np.ndarray) -> None:
    msd = _mean_squared_change(rgb_batch, name)
    assert all(a < b for a, b in zip(msd, msd[1:])), msd


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "zoom_blur", "motion_blur",
                                  "pixelate", "contrast"])  # fmt: skip
def test_averaging_filters_keep_a_constant_image(name: str) -> None:
    x = np.full((2, 3, 30, 30), 0.37, dtype=np.float64)
    np.testing.assert_allclose(corrupt(x, name, 5, seed=0), x, atol=1e-12)


def test_bad_arguments() -> None:
    x = np.zeros((1, 1, 8, 8), dtype=np.float32)
    with pytest.raises(UserError, match="choose one of gaussian_noise"):
        corrupt(x, "snow", 1, seed=0)
    for severity in (0, 6, True, 2.5):
        with pytest.raises(UserError, match="severity must be one of 1, 2, 3, 4, 5"):
            corrupt(x, "fog", severity, seed=0)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="C 1 or 3"):
        corrupt(np.zeros((1, 2, 8, 8)), "fog", 1, seed=0)
    with pytest.raises(UserError, match="floating-point"):
        corrupt(np.zeros((1, 1, 8, 8), dtype=np.uint8), "fog", 1, seed=0)
    with pytest.raises(UserError, match="floating-point"):
        corrupt(torch.zeros(1, 1, 8, 8, dtype=torch.int64), "fog", 1, seed=0)


# ---------------------------------------------------------------- oracles


def test_gaussian_noise_statistics() -> None:
    x = np.full((64, 1, 28, 28), 0.5)
    for severity, c in zip(SEVERITIES, CORRUPTIONS["gaussian_noise"].params):
        residual = corrupt(x, "gaussian_noise", severity, seed=severity) - x
        assert abs(residual.mean()) < 3 * c / np.sqrt(residual.size)
        assert residual.std() == pytest.approx(c, rel=STAT_RTOL)


def test_shot_noise_is_poisson() -> None:
    x = np.full((64, 1, 28, 28), 0.5)
    for severity, photons in zip(SEVERITIES, CORRUPTIONS["shot_noise"].params):
        out = corrupt(x, "shot_noise", severity, seed=severity)
        assert out.mean() == pytest.approx(0.5, rel=STAT_RTOL / 5)
        assert out.var() == pytest.approx(0.5 / photons, rel=STAT_RTOL)  # Var = x / c


def test_impulse_noise_fractions() -> None:
    x = np.full((64, 3, 28, 28), 0.5)
    amount = CORRUPTIONS["impulse_noise"].params[4]
    out = corrupt(x, "impulse_noise", 5, seed=0)
    assert (out == 1.0).mean() == pytest.approx(amount / 2, rel=STAT_RTOL * 2)
    assert (out == 0.0).mean() == pytest.approx(amount / 2, rel=STAT_RTOL * 2)
    assert ((out == 0.5) | (out == 0.0) | (out == 1.0)).all()


def test_speckle_noise_scales_with_the_pixel() -> None:
    x = np.full((64, 1, 28, 28), 0.25)
    c = CORRUPTIONS["speckle_noise"].params[2]
    residual = corrupt(x, "speckle_noise", 3, seed=0) - x
    assert residual.std() == pytest.approx(0.25 * c, rel=STAT_RTOL)


def test_contrast_closed_form(rgb_batch: np.ndarray) -> None:
    for severity, c in zip(SEVERITIES, CORRUPTIONS["contrast"].params):
        mean = rgb_batch.mean(axis=(2, 3), keepdims=True)
        expected = np.clip((rgb_batch - mean) * c + mean, 0, 1)
        np.testing.assert_allclose(
            corrupt(rgb_batch, "contrast", severity, seed=0), expected, atol=1e-6
        )


def test_brightness_matches_an_hsv_round_trip(rgb_batch: np.ndarray) -> None:
    x = rgb_batch.astype(np.float64)
    x[0, :, :4, :4] = 0.0  # black pixels turn grey
    for severity, c in zip(SEVERITIES, CORRUPTIONS["brightness"].params):
        hsv = rgb_to_hsv(x.transpose(0, 2, 3, 1))
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        expected = hsv_to_rgb(hsv).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(corrupt(x, "brightness", severity, seed=0), expected, atol=1e-12)
    gray = x[:, :1]
    np.testing.assert_allclose(corrupt(gray, "brightness", 2, seed=0), np.minimum(gray + 0.1, 1))


def _pil_pixelate(image: np.ndarray, c: float) -> np.ndarray:
    h, w = image.shape
    small = Image.fromarray(image.astype(np.float32)).resize(
        (int(w * c), int(h * c)), Image.Resampling.BOX
    )
    return np.asarray(small.resize((w, h), Image.Resampling.BOX), dtype=np.float64)


def test_pixelate_matches_pillow_per_image(rgb_batch: np.ndarray) -> None:
    x = rgb_batch[:4, :, :, :30].astype(np.float64)  # non-square
    for severity, c in zip(SEVERITIES, CORRUPTIONS["pixelate"].params):
        expected = np.stack([[_pil_pixelate(ch, c) for ch in image] for image in x])
        np.testing.assert_allclose(corrupt(x, "pixelate", severity, seed=0), expected, atol=1e-6)


def _pil_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_matches_pillow_per_image(channels: int, request, rgb_batch) -> None:
    x = request.getfixturevalue("fashion_test_batch")[:40] if channels == 1 else rgb_batch[:8]
    pixels = np.rint(x * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    if channels == 1:
        pixels = pixels[..., 0]
    for severity, quality in zip(SEVERITIES, CORRUPTIONS["jpeg"].params):
        expected = np.stack([_pil_jpeg(p, quality) for p in pixels]).reshape(
            len(x), x.shape[2], x.shape[3], channels
        )
        got = np.rint(corrupt(x, "jpeg", severity, seed=0) * 255).astype(np.uint8)
        np.testing.assert_array_equal(got, expected.transpose(0, 3, 1, 2))


def _clipped_zoom(image: np.ndarray, zoom: float) -> np.ndarray:
    """CIFAR-C's clipped_zoom on an (H, W) image, written with scipy.ndimage.zoom."""
    h = image.shape[0]
    ch = int(np.ceil(h / zoom))
    top = (h - ch) // 2
    out = scipy.ndimage.zoom(image[top : top + ch, top : top + ch], (zoom, zoom), order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim : trim + h, trim : trim + h]


def test_zoom_blur_matches_the_cifar_c_recipe(fashion_test_batch) -> None:
    x = fashion_test_batch[:3].astype(np.float64)
    for severity, end in zip(SEVERITIES, CORRUPTIONS["zoom_blur"].params):
        zooms = np.arange(1, end, 0.01)
        expected = np.stack(
            [
                (img[0] + sum(_clipped_zoom(img[0], z) for z in zooms)) / (len(zooms) + 1)
                for img in x
            ]
        )[:, None]
        np.testing.assert_allclose(corrupt(x, "zoom_blur", severity, seed=0), expected, atol=1e-9)


def test_motion_blur_matches_a_pixel_loop() -> None:
    """The ImageMagick formula evaluated pixel by pixel, same angles (first draws of the rng)."""
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 12, 12))
    severity = 4
    radius, sigma = (v * 12 / 32 for v in CORRUPTIONS["motion_blur"].params[severity - 1])
    width = 2 * int(np.ceil(radius)) + 1
    kernel = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    kernel /= kernel.sum()
    angles = np.deg2rad(np.random.default_rng(5).uniform(-45, 45, size=3))
    expected = np.zeros_like(x)
    for n, angle in enumerate(angles):
        for row in range(12):
            for col in range(12):
                for i, k in enumerate(kernel):
                    dc = int(np.ceil(i * np.cos(angle) - 0.5))
                    dr = int(np.ceil(i * np.sin(angle) - 0.5))
                    r, c = min(max(row + dr, 0), 11), min(max(col + dc, 0), 11)
                    expected[n, 0, row, col] += k * x[n, 0, r, c]
    np.testing.assert_allclose(corrupt(x, "motion_blur", severity, seed=5), expected, atol=1e-12)


def test_defocus_blur_commutes_with_flips(rgb_batch: np.ndarray) -> None:
    out = corrupt(rgb_batch, "defocus_blur", 5, seed=0)
    flipped = corrupt(rgb_batch[..., ::-1, :].copy(), "defocus_blur", 5, seed=0)
    np.testing.assert_allclose(flipped[..., ::-1, :], out, atol=1e-6)
    transposed = corrupt(rgb_batch.swapaxes(2, 3).copy(), "defocus_blur", 5, seed=0)
    np.testing.assert_allclose(transposed.swapaxes(2, 3), out, atol=1e-6)


def test_elastic_without_displacement_is_the_identity(rgb_batch: np.ndarray) -> None:
    entry = CORRUPTIONS["elastic"]
    out = entry.apply(rgb_batch.astype(np.float64), (0.0, 0.1, 0.0), np.random.default_rng(0))
    np.testing.assert_allclose(out, rgb_batch, atol=1e-9)


def test_fog_lightens_and_keeps_the_peak_below_one(fashion_test_batch) -> None:
    out = corrupt(fashion_test_batch, "fog", 3, seed=0)
    # x + c f scaled by peak / (peak + c) never exceeds the image's own peak.
    peak = fashion_test_batch.max(axis=(1, 2, 3))
    assert (out.max(axis=(1, 2, 3)) <= peak + 1e-6).all()
    background = fashion_test_batch == 0
    assert out[background].mean() > 0.1
