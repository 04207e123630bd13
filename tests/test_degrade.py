"""The degradation kit and the restoration metrics."""

import math

import cv2
import numpy as np
import pytest

from idgen.degrade import PRESETS, DegradationPreset, degrade, draw_params, gaussian_kernel, random_box_mask, random_brush_mask
from idgen.errors import IdgenError
from idgen.face import get_face_analyzer
from idgen.image_io import load_image
from idgen.metrics import identity_similarity, landmark_distance, psnr, ssim, temporal_consistency

from conftest import SHARED


def face(name="portrait_glasses.jpg", size=256):
    return cv2.resize(load_image(SHARED / "faces" / name), (size, size), interpolation=cv2.INTER_AREA)


def test_same_seed_same_output_and_other_seeds_differ():
    image = face()
    a, b, c = degrade(image, seed=1), degrade(image, seed=1), degrade(image, seed=2)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.params == b.params and a.image.shape == image.shape and a.image.dtype == np.uint8
    assert np.any(a.image != c.image) and a.params != c.params


@pytest.mark.parametrize("name", list(PRESETS))
def test_drawn_parameters_lie_in_the_preset_ranges(name):
    preset, rng = PRESETS[name], np.random.default_rng(0)
    draws = [draw_params(name, rng) for _ in range(500)]
    for key, (lo, hi) in (("sigma_x", preset.blur_sigma), ("sigma_y", preset.blur_sigma),
                          ("downsample", preset.downsample), ("noise", preset.noise), ("jpeg_quality", preset.jpeg_quality)):
        values = [d[key] for d in draws]
        assert lo <= min(values) and max(values) <= hi, key
        assert max(values) - min(values) > 0.5 * (hi - lo), f"{key} does not cover its range"
    aniso = np.mean([d["kernel"] == "aniso" for d in draws])
    assert 0.4 < aniso < 0.6
    assert np.mean([d["color_shift"] is not None for d in draws]) == pytest.approx(preset.color_jitter_prob, abs=0.06)


def test_kernels_sum_to_one_and_are_oriented():
    iso = gaussian_kernel(41, 3.0, 3.0, 0.0)
    aniso = gaussian_kernel(41, 6.0, 1.0, 0.0)
    assert iso.sum() == pytest.approx(1.0, abs=1e-5) and aniso.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(iso, iso.T, atol=1e-7)
    assert aniso[20, :].sum() > aniso[:, 20].sum()  # wide along x
    with pytest.raises(IdgenError, match="odd"):
        gaussian_kernel(40, 1, 1, 0)


def test_heavier_preset_degrades_more():
    image = face()
    mean_psnr = {name: np.mean([psnr(image, degrade(image, name, seed=s).image) for s in range(12)])
                 for name in ("codeformer-light", "codeformer")}
    assert mean_psnr["codeformer"] < mean_psnr["codeformer-light"]


def test_colorize_inpaint_and_clips():
    image = face(size=128)
    grey = degrade(image, seed=0, tasks=("colorize",)).image
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    out = degrade(image, seed=3, tasks=("inpaint",))
    assert out.mask is not None and set(np.unique(out.mask)) <= {0.0, 1.0} and 0.005 < out.mask.mean() < 0.6
    assert np.all(out.image[out.mask > 0.5] == 0)
    clip = np.stack([image, np.roll(image, 2, axis=1), np.roll(image, 4, axis=1)])
    degraded = degrade(clip, seed=5, tasks=("bfr", "colorize"))
    assert degraded.image.shape == clip.shape
    single = degrade(clip[0], seed=5, tasks=("bfr", "colorize"))
    assert single.params == degraded.params  # one draw for the whole clip


def test_masks_and_bad_input():
    rng = np.random.default_rng(0)
    for make in (random_brush_mask, random_box_mask):
        mask = make((96, 64), rng)
        assert mask.shape == (64, 96) and mask.max() == 1.0 and mask.dtype == np.float32
    with pytest.raises(IdgenError, match="unknown degradation preset"):
        degrade(face(), "real-esrgan", seed=0)
    with pytest.raises(IdgenError, match="uint8 RGB"):
        degrade(face().astype(np.float32), seed=0)
    with pytest.raises(IdgenError, match="tasks"):
        degrade(face(), seed=0, tasks=("deblur",))
    with pytest.raises(IdgenError, match="exactly one"):
        degrade(face())


def test_psnr_and_ssim():
    image = face()
    assert psnr(image, image) == math.inf and ssim(image, image) == pytest.approx(1.0)
    noisy = np.clip(image.astype(np.float64) + np.random.default_rng(0).normal(0, 10, image.shape), 0, 255).astype(np.uint8)
    mse = np.mean((noisy.astype(float) - image) ** 2)
    assert psnr(image, noisy) == pytest.approx(10 * math.log10(255 ** 2 / mse))
    skimage = pytest.importorskip("skimage.metrics")
    grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (image, noisy)]
    expected = skimage.structural_similarity(*grey, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                             data_range=255)
    assert ssim(image, noisy) == pytest.approx(expected, abs=1e-3)


def test_identity_and_landmark_metrics():
    analyzer = get_face_analyzer("dlib")
    a, other = face(size=400), face("portrait_smile.jpg", size=400)
    mild = DegradationPreset(blur_sigma=(0.5, 1.5), downsample=(1.0, 2.0), noise=(0.0, 5.0), jpeg_quality=(80, 100))
    light = degrade(a, mild, rng=np.random.default_rng(1)).image
    assert identity_similarity(a, light, analyzer) > identity_similarity(a, other, analyzer)
    assert landmark_distance(a, a, analyzer) == 0.0
    assert math.isnan(identity_similarity(a, np.zeros_like(a), analyzer))


def test_temporal_consistency():
    image = face(size=96)
    static = [image] * 4
    assert temporal_consistency(static) < 0.05  # ~0 (bilinear resampling of a near-zero flow)
    rng = np.random.default_rng(0)
    flicker = [np.clip(image.astype(int) + rng.integers(-30, 30), 0, 255).astype(np.uint8) for _ in range(4)]
    assert temporal_consistency(flicker, reference=static) > 5.0
