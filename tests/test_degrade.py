"""The degradation kit: reproducible draws inside the published ranges, the blind model's
operations, colorization and inpainting inputs, clips sharing one draw, and clear errors."""

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from idgen.media.degrade import (MASK_FILL, PRESETS, BlindParams, DegradationPreset, apply_blind, apply_mask, degrade, draw_params,
                           gaussian_kernel, grayscale, jitter_params, random_box_mask, random_brush_mask)
from idgen.errors import IdgenError
from idgen.image_io import load_image
from idgen.media.metrics import psnr

from conftest import SHARED


def face(name="portrait_glasses.jpg", size=128):
    return cv2.resize(load_image(SHARED / "faces" / name), (size, size), interpolation=cv2.INTER_AREA)


def test_same_seed_is_bit_identical_other_seeds_differ():
    image = face()
    for tasks in (("bfr",), ("bfr", "colorize", "inpaint")):
        a, b, c = (degrade(image, seed=s, tasks=tasks) for s in (1, 1, 2))
        np.testing.assert_array_equal(a.image, b.image)
        if "inpaint" in tasks:
            np.testing.assert_array_equal(a.mask, b.mask)
        assert a.params == b.params and a.image.shape == image.shape and a.image.dtype == np.uint8
        assert np.any(a.image != c.image) and a.params != c.params
    # a seed and the generator it makes are the same randomness
    np.testing.assert_array_equal(degrade(image, "codeformer", seed=9).image,
                                  degrade(image, "codeformer", rng=np.random.default_rng(9)).image)


def test_presets_carry_the_published_ranges():
    published = {  # train_gfpgan_v1.yml; CodeFormer_stage2.yml / stage3 *_large; CodeFormer_stage3.yml small
        "gfpgan": ((0.1, 10), (0.8, 8), (0, 20), (60, 100)),
        "codeformer": ((1, 15), (4, 30), (0, 20), (30, 80)),
        "codeformer-light": ((0.1, 10), (1, 12), (0, 15), (60, 100)),
    }
    for name, ranges in published.items():
        p = PRESETS[name]
        assert (p.blur_sigma, p.downsample, p.noise, p.jpeg_quality) == ranges and p.kernel_size == 41
    gfpgan = PRESETS["gfpgan"]
    jitter = (gfpgan.color_jitter_prob, gfpgan.color_jitter_shift, gfpgan.gray_prob, gfpgan.photometric_prob)
    assert jitter == (0.3, 20, 0.01, 0.3)


@pytest.mark.parametrize("name", list(PRESETS))
def test_drawn_parameters_lie_in_the_preset_ranges(name):
    preset, rng = PRESETS[name], np.random.default_rng(0)
    draws = [draw_params(name, rng) for _ in range(2000)]
    for key, (lo, hi) in (("sigma_x", preset.blur_sigma), ("sigma_y", preset.blur_sigma), ("downsample", preset.downsample),
                          ("noise", preset.noise), ("jpeg_quality", preset.jpeg_quality)):
        values = np.array([getattr(d, key) for d in draws])
        assert lo <= values.min() and values.max() <= hi, key
        assert values.max() - values.min() > 0.9 * (hi - lo), f"{key} does not cover its range"
    qualities = [d.jpeg_quality for d in draws]  # basicsr's int(uniform(lo, hi)): lo ... hi - 1
    assert all(isinstance(q, int) for q in qualities)
    assert (min(qualities), max(qualities)) == (preset.jpeg_quality[0], preset.jpeg_quality[1] - 1)
    iso = [d for d in draws if d.kernel == "iso"]
    assert all(d.sigma_x == d.sigma_y and d.angle == 0 for d in iso)
    assert all(-math.pi <= d.angle <= math.pi for d in draws)
    assert len(iso) / len(draws) == pytest.approx(0.5, abs=0.05)
    for prob, drawn in ((preset.color_jitter_prob, [d.color_shift is not None for d in draws]),
                        (preset.photometric_prob, [d.photometric is not None for d in draws]),
                        (preset.gray_prob, [d.gray for d in draws])):
        assert np.mean(drawn) == pytest.approx(prob, abs=0.035)
    shifts = np.array([d.color_shift for d in draws if d.color_shift is not None])
    assert shifts.size == 0 or np.abs(shifts).max() <= preset.color_jitter_shift
    for d in draws:
        for op, factor in d.photometric or ():
            lo, hi = getattr(preset, op)
            assert lo <= factor <= hi


def test_kernels_sum_to_one_and_have_the_drawn_covariance():
    sx, sy, angle = 4.0, 1.5, math.pi / 6
    kernel = gaussian_kernel(41, sx, sy, angle).astype(np.float64)
    assert kernel.shape == (41, 41) and kernel.sum() == pytest.approx(1.0, abs=1e-5)
    y, x = np.mgrid[-20:21, -20:21]
    covariance = np.array([[(kernel * x * x).sum(), (kernel * x * y).sum()], [(kernel * x * y).sum(), (kernel * y * y).sum()]])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    np.testing.assert_allclose(covariance, rotation @ np.diag([sx ** 2, sy ** 2]) @ rotation.T, atol=0.05)
    iso = gaussian_kernel(41, 3.0, 3.0, 0.0)
    np.testing.assert_allclose(iso, iso.T, atol=1e-8)
    for params in PRESETS.values():  # every drawn kernel of every preset is normalised
        d = draw_params(params, np.random.default_rng(1))
        assert gaussian_kernel(d.kernel_size, d.sigma_x, d.sigma_y, d.angle).sum() == pytest.approx(1.0, abs=1e-5)


def test_heavier_preset_lowers_psnr_on_average():
    image = face()
    mean_psnr = {name: np.mean([psnr(image, degrade(image, name, seed=s).image) for s in range(16)]) for name in PRESETS}
    assert mean_psnr["codeformer"] < mean_psnr["codeformer-light"] - 1.0
    assert mean_psnr["codeformer"] < mean_psnr["gfpgan"] - 1.0


def test_blind_operations():
    image = face()
    clean = BlindParams(kernel="iso", sigma_x=0.1, sigma_y=0.1, angle=0.0, downsample=1.0, noise=0.0, jpeg_quality=100)
    near = apply_blind(image, clean, 0)  # ~identity: only JPEG at q=100 and rounding
    assert psnr(image, near) > 40
    blurred = apply_blind(image, replace(clean, sigma_x=3.0, sigma_y=3.0), 0)
    sharpness = [cv2.Laplacian(x, cv2.CV_64F).var() for x in (image, blurred)]
    assert psnr(image, blurred) < psnr(image, near) and sharpness[1] < 0.5 * sharpness[0]
    noisy = [apply_blind(image, replace(clean, noise=15.0), s) for s in (0, 1)]
    assert np.any(noisy[0] != noisy[1])  # the noise is drawn from the generator
    grey_card = np.full((128, 128, 3), 128, np.uint8)  # no clipping; JPEG at q=100 keeps the luminance at full resolution
    luma_noise = [cv2.cvtColor(apply_blind(grey_card, replace(clean, noise=n), 0), cv2.COLOR_RGB2GRAY).std() for n in (0.0, 15.0)]
    assert luma_noise[0] < 0.5 and luma_noise[1] == pytest.approx(15.0 * np.linalg.norm([0.299, 0.587, 0.114]), rel=0.1)
    grey = apply_blind(image, replace(clean, gray=True), 0)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    shifted = apply_blind(image, replace(clean, color_shift=(20.0, 0.0, -20.0)), 0).astype(float)
    assert (shifted - near)[..., 0].mean() > 15 and (shifted - near)[..., 2].mean() < -15
    neutral = (("hue", 0.0), ("saturation", 1.0), ("brightness", 1.0), ("contrast", 1.0))
    assert np.abs(apply_blind(image, replace(clean, photometric=neutral), 0).astype(int) - near).max() <= 1
    desaturated = apply_blind(image, replace(clean, photometric=(("saturation", 0.0),)), 0).astype(int)
    assert np.abs(desaturated[..., 0] - desaturated[..., 2]).max() <= 1
    darker = apply_blind(image, replace(clean, photometric=(("brightness", 0.5),)), 0)
    assert darker.mean() == pytest.approx(near.mean() / 2, rel=0.02)


def test_colorize_is_luminance_and_leaves_the_blind_draw_unchanged():
    image = face()
    grey = degrade(image, seed=0, tasks=("colorize",))
    assert np.array_equal(grey.image[..., 0], grey.image[..., 1]) and np.array_equal(grey.image[..., 1], grey.image[..., 2])
    np.testing.assert_array_equal(grey.image[..., 0], cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    bfr = degrade(image, seed=4).image
    both = degrade(image, seed=4, tasks=("bfr", "colorize"))
    np.testing.assert_array_equal(both.image, grayscale(bfr))
    inpainted = degrade(image, seed=4, tasks=("bfr", "inpaint"))
    outside = inpainted.mask < 0.5
    np.testing.assert_array_equal(inpainted.image[outside], bfr[outside])


def test_masks_are_binary_with_plausible_coverage():
    rng = np.random.default_rng(0)
    for make in (random_brush_mask, random_box_mask):
        masks = [make((96, 128), rng) for _ in range(40)]
        assert all(m.shape == (96, 128) and m.dtype == np.float32 and set(np.unique(m)) <= {0.0, 1.0} for m in masks)
        coverage = np.array([m.mean() for m in masks])
        assert coverage.min() > 0.005 and coverage.max() < 0.9 and 0.05 < coverage.mean() < 0.5, make.__name__
        assert len({m.tobytes() for m in masks}) == len(masks)
    image = face()
    out = degrade(image, seed=3, tasks=("inpaint",), mask_kind="brush")
    inside = out.mask > 0.5
    assert out.params["mask"] == {"kind": "brush", "coverage": pytest.approx(float(inside.mean()))}
    assert np.all(out.image[inside] == MASK_FILL) and np.array_equal(out.image[~inside], image[~inside])
    assert {degrade(image, seed=s, tasks=("inpaint",)).params["mask"]["kind"] for s in range(12)} == {"brush", "box"}
    black = apply_mask(image, out.mask, fill=0)
    assert np.all(black[inside] == 0)


def test_a_clip_shares_one_draw_and_can_jitter_per_frame():
    image = face(size=64)
    clip = np.stack([image] * 4)
    noiseless = replace(PRESETS["codeformer-light"], noise=(0.0, 0.0))
    out = degrade(clip, noiseless, seed=5, tasks=("bfr", "inpaint"))
    single = degrade(image, noiseless, seed=5, tasks=("bfr", "inpaint"))
    assert out.image.shape == clip.shape and out.params == single.params and "frames" not in out.params
    for frame in out.image:  # same parameters, same mask: identical frames of identical input
        np.testing.assert_array_equal(frame, single.image)
    noisy = degrade(clip, "gfpgan", seed=5)
    assert noisy.params["bfr"] == degrade(image, "gfpgan", seed=5).params["bfr"]
    assert noisy.params["bfr"]["noise"] > 1 and np.any(noisy.image[0] != noisy.image[1])  # a new noise sample per frame
    jittered = degrade(clip, "codeformer", seed=5, frame_jitter=0.2)
    frames = jittered.params["frames"]
    assert len(frames) == 4 and len({f["sigma_x"] for f in frames}) == 4
    preset = PRESETS["codeformer"]
    for f in frames:
        assert f["kernel"] == jittered.params["bfr"]["kernel"]
        assert preset.blur_sigma[0] <= f["sigma_x"] <= preset.blur_sigma[1]
        assert preset.downsample[0] <= f["downsample"] <= preset.downsample[1]
        assert abs(f["sigma_x"] - jittered.params["bfr"]["sigma_x"]) <= 0.2 * (preset.blur_sigma[1] - preset.blur_sigma[0]) + 1e-9
    base = draw_params("gfpgan", 0)
    assert jitter_params(base, "gfpgan", 0.0, 1) == base


def test_bad_input_gets_clear_errors():
    image = face(size=32)
    with pytest.raises(IdgenError, match="gfpgan, codeformer, codeformer-light"):
        degrade(image, "real-esrgan", seed=0)
    for bad in (image.astype(np.float32), image[..., 0], image[..., :2], np.zeros((0, 8, 8, 3), np.uint8)):
        with pytest.raises(IdgenError, match="uint8 RGB"):
            degrade(bad, seed=0)
    with pytest.raises(IdgenError, match="tasks"):
        degrade(image, seed=0, tasks=("deblur",))
    with pytest.raises(IdgenError, match="tasks"):
        degrade(image, seed=0, tasks=())
    with pytest.raises(IdgenError, match="exactly one"):
        degrade(image)
    with pytest.raises(IdgenError, match="exactly one"):
        degrade(image, seed=0, rng=np.random.default_rng(0))
    with pytest.raises(IdgenError, match="clips"):
        degrade(image, seed=0, frame_jitter=0.1)
    with pytest.raises(IdgenError, match="mask_kind"):
        degrade(image, seed=0, tasks=("inpaint",), mask_kind="circle")
    for field, value in (("blur_sigma", (0.0, 5.0)), ("downsample", (8.0, 2.0)), ("jpeg_quality", (50, 120)),
                         ("noise", (-1.0, 5.0)), ("gray_prob", 1.5), ("kernel_size", 40), ("hue", (-0.7, 0.1))):
        with pytest.raises(IdgenError, match=field if field != "kernel_size" else "kernel size"):
            DegradationPreset(**{field: value})
    with pytest.raises(IdgenError, match="sigmas"):
        BlindParams(kernel="iso", sigma_x=-1.0, sigma_y=1.0, angle=0.0, downsample=2.0, noise=0.0, jpeg_quality=90)
    with pytest.raises(IdgenError, match="seed"):
        draw_params("gfpgan", 1.5)
    with pytest.raises(IdgenError, match="mask"):
        apply_mask(image, np.zeros((16, 16), np.float32))
