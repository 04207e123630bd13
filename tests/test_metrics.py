"""Restoration metrics: PSNR and SSIM against their definitions and skimage, identity and landmark
figures on real portraits with dlib, the NaN policy, and the flow-warping temporal error."""

import math

import cv2
import numpy as np
import pytest

from idgen.media.degrade import degrade, draw_params
from idgen.errors import IdgenError
from idgen.image_io import load_image
from idgen.media.metrics import identity_similarity, landmark_distance, psnr, ssim, temporal_consistency

from conftest import SHARED


def face(name="portrait_glasses.jpg", size=320):
    return cv2.resize(load_image(SHARED / "faces" / name), (size, size), interpolation=cv2.INTER_AREA)


def test_psnr_is_inf_for_identical_images_and_follows_the_formula():
    image = face(size=128)
    assert psnr(image, image) == math.inf
    grey_card = np.full((256, 256, 3), 128, np.uint8)
    noisy = np.clip(np.rint(128 + np.random.default_rng(0).normal(0, 10, grey_card.shape)), 0, 255).astype(np.uint8)
    assert psnr(grey_card, noisy) == pytest.approx(20 * math.log10(255 / 10), abs=0.05)  # 28.13 dB for σ = 10
    off_by_one = image.copy()
    off_by_one[0, 0, 0] ^= 1  # one value changed by 1: MSE = 1 / (H W C)
    assert psnr(image, off_by_one) == pytest.approx(10 * math.log10(255 ** 2 * image.size))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_equals_skimage(seed):
    metrics = pytest.importorskip("skimage.metrics")
    image = face(size=96)
    degraded = degrade(image, "codeformer-light", seed=seed).image
    options = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    expected_rgb = metrics.structural_similarity(image, degraded, channel_axis=-1, **options)
    grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (image, degraded)]
    assert ssim(image, degraded) == pytest.approx(expected_rgb, abs=1e-3)
    assert ssim(image, degraded, channels="gray") == pytest.approx(metrics.structural_similarity(*grey, **options), abs=1e-3)
    assert ssim(image, image) == pytest.approx(1.0) and ssim(image, degraded) < 0.99


def test_bad_metric_input_gets_clear_errors():
    image = face(size=64)
    with pytest.raises(IdgenError, match="differ in size"):
        psnr(image, image[:32])
    with pytest.raises(IdgenError, match="uint8"):
        ssim(image, image.astype(np.float32))
    with pytest.raises(IdgenError, match="at least 11"):
        ssim(image[:8, :8], image[:8, :8])
    with pytest.raises(IdgenError, match="channels"):
        ssim(image, image, channels="lab")
    with pytest.raises(IdgenError, match="reference"):
        temporal_consistency(np.stack([image] * 3), reference=np.stack([image] * 2))
    with pytest.raises(IdgenError, match=r"\[T, H, W, 3\]"):
        temporal_consistency(image)


def test_identity_similarity_keeps_a_lightly_degraded_copy_above_another_person(dlib_analyzer):
    photo, other, older = face(), face("portrait_smile.jpg"), face("portrait_older.jpg")
    # the first gfpgan draw that is light: little blur and downsampling, colour kept
    seed = next(s for s in range(500) if (p := draw_params("gfpgan", np.random.default_rng(s))).sigma_x < 2
                and p.sigma_y < 2 and p.downsample < 2 and not p.gray)
    light = degrade(photo, "gfpgan", seed=seed).image
    same = identity_similarity(photo, light, dlib_analyzer)
    assert same > 0.95
    assert same > identity_similarity(photo, other, dlib_analyzer) and same > identity_similarity(photo, older, dlib_analyzer)
    assert identity_similarity(photo, photo, dlib_analyzer) == pytest.approx(1.0)


def test_landmark_distance(dlib_analyzer):
    photo = face()
    assert landmark_distance(photo, photo, dlib_analyzer) == 0.0
    detected = dlib_analyzer.detect(photo)[0]
    ocular = float(np.linalg.norm(detected.kps[0] - detected.kps[1]))
    shifted = np.zeros_like(photo)
    shifted[:, 8:] = photo[:, :-8]  # the face moved 8 px to the right
    assert landmark_distance(photo, shifted, dlib_analyzer) == pytest.approx(8 / ocular, rel=0.15)


def test_no_face_gives_nan_not_an_error(dlib_analyzer):
    photo, blank = face(size=160), np.full((160, 160, 3), 127, np.uint8)
    for metric in (identity_similarity, landmark_distance):
        assert math.isnan(metric(photo, blank, dlib_analyzer)) and math.isnan(metric(blank, photo, dlib_analyzer))


def test_temporal_consistency():
    image = face(size=96)
    static = np.stack([image] * 4)
    assert temporal_consistency(static) < 0.01  # ~0: Farneback leaves sub-pixel flows in flat regions
    assert temporal_consistency(static[:1]) == 0.0
    moving = np.stack([np.roll(image, 2 * t, axis=1) for t in range(4)])
    offsets = np.array([0, 25, -20, 15])[:, None, None, None]
    flicker = np.clip(moving.astype(int) + offsets, 0, 255).astype(np.uint8)
    steady_motion = temporal_consistency(moving)
    assert steady_motion < 1.0  # the flow explains the motion
    assert temporal_consistency(flicker, reference=moving) > 10 * max(steady_motion, 0.5)
    static_flicker = np.clip(static.astype(int) + offsets, 0, 255).astype(np.uint8)
    assert temporal_consistency(static_flicker, reference=static) > 10.0
