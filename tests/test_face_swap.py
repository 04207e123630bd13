"""Face swap on photos (tiny PVA inpainting pipeline, real dlib faces)."""

import functools

import cv2
import numpy as np
import pytest

from idgen.color import match_color
from idgen.errors import FaceNotFoundError, IdgenError
from idgen.face import align_face
from idgen.face.types import Face
from idgen.image_io import load_image
from idgen.pipelines import FaceSwapper
from idgen.pipelines.pipeline_face_swap import _face_in_crop, assign_sources

from conftest import SHARED, dlib_faces
from test_pva import sd15_pipeline

FACES = SHARED / "faces"
SOURCE_A = np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)
SOURCE_B = np.random.default_rng(1).normal(size=(1, 512)).astype(np.float32)
GEN = dict(num_inference_steps=2)


@functools.lru_cache(maxsize=None)
def _swapper():
    return FaceSwapper(sd15_pipeline(), dlib_faces())


def _photo(name="portrait_glasses.jpg"):
    return load_image(FACES / name)


def _two_people():
    a = cv2.resize(_photo("portrait_glasses.jpg"), (400, 400))
    b = cv2.resize(_photo("portrait_smile.jpg"), (400, 400))
    return np.concatenate([a, b], axis=1)


def _paste_region(swapper, photo, face, dilate=8):
    aligned = align_face(photo, face.kps, size=swapper.crop_size, mode="ffhq")
    mask = swapper.crop_mask(_face_in_crop(face, aligned.matrix, swapper.crop_size), dilate=dilate)
    return cv2.warpAffine(mask, aligned.inverse, (photo.shape[1], photo.shape[0])) > 0


def test_pixels_outside_the_paste_region_are_identical():
    swapper, photo = _swapper(), _photo()
    out = swapper(photo, [SOURCE_A], **GEN)
    (face,) = dlib_faces().get(photo, select="all")
    region = _paste_region(swapper, photo, face)
    changed = np.any(out.image != photo, axis=-1)
    assert changed.sum() > 1000, "the face was not repainted"
    assert not (changed & ~region).any(), "pixels outside the paste region changed"
    assert out.faces[0].source == 0 and out.notes == []


def test_identity_changes_the_swap_and_seed_reproduces_it():
    swapper, photo = _swapper(), _photo()
    a = swapper(photo, [SOURCE_A], **GEN).image
    b = swapper(photo, [SOURCE_B], **GEN).image
    assert np.abs(a.astype(int) - b.astype(int)).max() > 3
    np.testing.assert_array_equal(a, swapper(photo, [SOURCE_A], **GEN).image)


def test_several_faces_by_index_and_by_reference():
    swapper, photo = _swapper(), _two_people()
    by_index = swapper(photo, [SOURCE_A], mapping="index", **GEN)
    assert [f.source for f in by_index.faces] == [0, None]
    right = np.zeros(photo.shape[:2], bool)
    right[:, 400:] = True
    assert not np.any(by_index.image[right] != photo[right]), "the face without a source was touched"
    assert "left as is" in by_index.notes[0]

    analyzer = dlib_faces()
    refs = [analyzer.get(_photo(n), select="largest").embedding for n in ("portrait_smile.jpg", "portrait_glasses.jpg")]
    by_reference = swapper(photo, [SOURCE_A, SOURCE_B], mapping="reference", reference_embeds=refs, **GEN)
    assert [f.source for f in by_reference.faces] == [1, 0]  # left face is the glasses portrait
    all_to_one = swapper(photo, [SOURCE_A], mapping="all", **GEN)
    assert [f.source for f in all_to_one.faces] == [0, 0]


def test_small_faces_are_skipped_with_a_note_and_no_face_is_an_error():
    swapper, photo = _swapper(), _photo()
    out = swapper(photo, [SOURCE_A], min_face_size=10_000, **GEN)
    np.testing.assert_array_equal(out.image, photo)
    assert out.faces[0].source is None and "skipped" in out.notes[0]
    with pytest.raises(FaceNotFoundError, match="no face"):
        swapper(np.full((128, 128, 3), 127, np.uint8), [SOURCE_A], **GEN)


def test_occluders_in_the_exclude_mask_are_kept():
    swapper, photo = _swapper(), _photo()
    (face,) = dlib_faces().get(photo, select="all")
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    keep = np.zeros(photo.shape[:2], np.uint8)
    keep[(y1 + y2) // 2:, x1:x2] = 255  # a "hand" over the lower half of the face
    out = swapper(photo, [SOURCE_A], exclude=keep, **GEN)
    np.testing.assert_array_equal(out.image[keep > 0], photo[keep > 0])
    assert np.any(out.image[: (y1 + y2) // 2] != photo[: (y1 + y2) // 2])


def test_assign_sources_rules():
    faces = [Face(bbox=np.zeros(4, np.float32), kps=np.zeros((5, 2), np.float32), score=1.0, image_size=(8, 8),
                  embedding=np.eye(3, dtype=np.float32)[i]) for i in range(2)]
    assert assign_sources(faces, 1, "all") == [(0, None), (0, None)]
    refs = [np.array([0, 1, 0], np.float32), np.array([1, 0, 0], np.float32)]
    assert [s for s, _ in assign_sources(faces, 2, "reference", refs)] == [1, 0]
    with pytest.raises(IdgenError, match="one reference"):
        assign_sources(faces, 2, "reference", refs[:1])
    with pytest.raises(IdgenError, match="mapping"):
        assign_sources(faces, 1, "random")


def test_match_color_moves_the_statistics_to_the_reference():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
    reference = rng.integers(120, 255, (32, 32, 3), dtype=np.uint8)
    matched = match_color(image, reference)
    assert abs(matched.mean() - reference.mean()) < abs(image.mean() - reference.mean()) / 4
    np.testing.assert_allclose(match_color(reference, reference).astype(int), reference.astype(int), atol=2)


def test_the_swapper_needs_an_identity_inpainting_pipeline():
    from idgen.testing import tiny_pipeline

    with pytest.raises(IdgenError, match="identity-inpainting pipeline"):
        FaceSwapper(tiny_pipeline("sd15-inpaint"), dlib_faces())
