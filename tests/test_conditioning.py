"""Keypoint images (official InstantID geometry), keypoint rescaling, masks, alignment round trip."""

import math

import cv2
import numpy as np
import pytest
import PIL.Image

from idgen.conditioning import draw_kps, draw_kps_many, face_mask, fit_kps, output_size_for, resize_kps
from idgen.face import Face, align_face, paste_back, similarity_transform, template_for, transform_points

KPS = np.array([[210.3, 180.7], [300.1, 176.2], [258.9, 240.4], [222.5, 300.8], [292.6, 297.1]])


def official_draw_kps(image_pil, kps, color_list=((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))):
    """Re-derivation of InstantX/InstantID's `draw_kps` (pipeline_stable_diffusion_xl_instantid.py)."""
    stickwidth = 4
    limb_seq = np.array([[0, 2], [1, 2], [3, 2], [4, 2]])
    kps = np.array(kps)
    w, h = image_pil.size
    out_img = np.zeros([h, w, 3])
    for index in limb_seq:
        color = color_list[index[0]]
        x = kps[index][:, 0]
        y = kps[index][:, 1]
        length = ((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        polygon = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), stickwidth), int(angle), 0, 360, 1)
        out_img = cv2.fillConvexPoly(out_img.copy(), polygon, color)
    out_img = (out_img * 0.6).astype(np.uint8)
    for idx_kp, kp in enumerate(kps):
        x, y = kp
        out_img = cv2.circle(out_img.copy(), (int(x), int(y)), 10, color_list[idx_kp], -1)
    return PIL.Image.fromarray(out_img.astype(np.uint8))


def test_draw_kps_matches_official_pixel_for_pixel():
    canvas = PIL.Image.new("RGB", (512, 448))
    ours = np.asarray(draw_kps(canvas, KPS))
    np.testing.assert_array_equal(ours, np.asarray(official_draw_kps(canvas, KPS)))
    np.testing.assert_array_equal(np.asarray(draw_kps((512, 448), KPS)), ours)
    assert tuple(ours[int(KPS[2, 1]), int(KPS[2, 0])]) == (0, 0, 255)  # nose dot is blue
    assert ours[0, 0].sum() == 0  # black background


def test_draw_kps_many_combines_faces():
    other = KPS + np.array([150.0, 60.0])
    both = np.asarray(draw_kps_many((512, 448), [KPS, other]))
    np.testing.assert_array_equal(both, np.maximum(np.asarray(draw_kps((512, 448), KPS)), np.asarray(draw_kps((512, 448), other))))


def test_resize_kps():
    out = resize_kps(KPS, (512, 448), (1024, 224))
    np.testing.assert_allclose(out, KPS * np.array([2.0, 0.5]), rtol=1e-6)


def test_fit_kps_keeps_proportions_and_centres():
    out = fit_kps(KPS, (512, 448), (1024, 224))  # scale min(2, 0.5) = 0.5, centred horizontally
    np.testing.assert_allclose(out, KPS * 0.5 + [(1024 - 256) / 2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(fit_kps(KPS, (512, 448), (256, 224)), resize_kps(KPS, (512, 448), (256, 224)), rtol=1e-6)


def test_output_size_follows_the_official_demo_rule():
    # SDXL size: long side 1280, short side by the aspect ratio, multiples of 64
    assert output_size_for((768, 1024), min_side=1024, max_side=1280, base=64) == (960, 1280)
    assert output_size_for((1000, 891), min_side=1024, max_side=1280, base=64) == (1280, 1088)
    assert output_size_for((512, 512), min_side=1024, max_side=1280, base=64) == (1280, 1280)
    assert output_size_for((20, 2000), min_side=1024, max_side=1280, base=64) == (64, 1280)  # never below base


def _face_with_landmarks():
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    landmarks = np.stack([256 + 80 * np.cos(t), 240 + 100 * np.sin(t)], 1)
    return Face(bbox=[176, 140, 336, 340], score=1.0, kps=KPS, image_size=(512, 448), landmarks=landmarks)


def test_face_mask_hull_dilate_erode_feather():
    face = _face_with_landmarks()
    hard = face_mask((512, 448), face)
    assert hard.shape == (448, 512) and hard[240, 256] == 1.0 and hard[10, 10] == 0.0
    assert face_mask((512, 448), face, dilate=10).sum() > hard.sum() > face_mask((512, 448), face, erode=10).sum()
    soft = face_mask((512, 448), face, feather=12)
    assert soft[240, 256] == 1.0 and soft[10, 10] == 0.0
    edge = soft[240, 330:345]
    assert ((edge > 0) & (edge < 1)).any(), "feathered edge has intermediate values"
    assert face_mask((512, 448), face, region="face_hair").sum() > hard.sum()
    keypoints_only = Face(bbox=[176, 140, 336, 340], score=1.0, kps=KPS, image_size=(512, 448))
    assert face_mask((512, 448), keypoints_only)[240, 256] == 1.0


def test_similarity_transform_recovers_a_known_transform():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = KPS @ rot.T + shift
    matrix = similarity_transform(KPS, dst)
    np.testing.assert_allclose(transform_points(KPS, matrix), dst, atol=1e-6)


def test_align_lands_keypoints_on_template_and_paste_back_keeps_outside_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (448, 512, 3), dtype=np.uint8)
    for size in (112, 224, 512):
        aligned = align_face(image, KPS, size=size)
        assert aligned.image.shape == (size, size, 3)
        assert np.abs(transform_points(KPS, aligned.matrix) - template_for(size)).max() < 0.05 * size
        np.testing.assert_allclose(transform_points(transform_points(KPS, aligned.matrix), aligned.inverse), KPS, atol=1e-6)
    aligned = align_face(image, KPS, size=224)
    edited = np.full_like(aligned.image, 255)
    pasted = paste_back(image, edited, aligned.inverse, feather=6)
    region = cv2.warpAffine(np.ones((224, 224), np.float32), aligned.inverse, (512, 448)) > 0
    np.testing.assert_array_equal(pasted[~region], image[~region])
    assert (pasted[int(KPS[2, 1]), int(KPS[2, 0])] == 255).all()


def test_face_mask_custom_region_and_excluded_occluders():
    from idgen.conditioning import face_mask
    from idgen.errors import IdgenError

    user = np.zeros((40, 60), np.uint8)
    user[10:30, 20:40] = 255
    custom = face_mask((60, 40), region="custom", user_mask=user, dilate=2)
    assert custom[9, 30] == 1.0 and custom[5, 30] == 0.0  # grown by 2 px, not more
    keep = np.zeros((40, 60), np.uint8)
    keep[20:, :] = 255
    cut = face_mask((60, 40), region="custom", user_mask=user, exclude=keep, feather=4)
    assert cut[20:].max() == 0.0 and cut[15, 30] == 1.0
    with pytest.raises(IdgenError, match="user_mask"):
        face_mask((60, 40), region="custom")
    with pytest.raises(IdgenError, match="60x40"):
        face_mask((60, 40), region="custom", user_mask=np.zeros((10, 10)))
