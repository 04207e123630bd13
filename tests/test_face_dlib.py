"""dlib backend on real photos: detection, keypoint order, embeddings, selection, errors, cache."""

import numpy as np
import pytest
from PIL import Image

from idgen.errors import FaceNotFoundError, FaceTooSmallError, IdgenError, ImageReadError, MultipleFacesError
from idgen.face import align_face, identity_distance
from idgen.image_io import load_image

PORTRAITS = ["portrait_glasses.jpg", "portrait_smile.jpg", "portrait_older.jpg", "portrait_small.png"]


def _check_geometry(face):
    x1, y1, x2, y2 = face.bbox
    kps = face.kps
    margin = 0.15 * (x2 - x1)
    assert np.all(kps[:, 0] >= x1 - margin) and np.all(kps[:, 0] <= x2 + margin)
    assert np.all(kps[:, 1] >= y1 - margin) and np.all(kps[:, 1] <= y2 + margin)
    assert kps[0, 0] < kps[1, 0], "eye on the image's left comes first"
    assert kps[3, 0] < kps[4, 0], "mouth corner on the image's left comes first"
    eyes_y, nose_y, mouth_y = kps[:2, 1].mean(), kps[2, 1], kps[3:, 1].mean()
    assert eyes_y < nose_y < mouth_y


@pytest.mark.parametrize("name", PORTRAITS + ["pose_fullbody_a.jpg", "pose_fullbody_b.jpg"])
def test_finds_one_face_with_ordered_keypoints(dlib_analyzer, faces_dir, name):
    face = dlib_analyzer.get(faces_dir / name, select="one")
    _check_geometry(face)
    assert face.image_size == Image.open(faces_dir / name).size
    assert face.landmarks.shape == (68, 2) and face.embedding.shape == (128,)
    assert face.embedding_model == "dlib_resnet_v1" and face.embedding_dim == 128


def test_astronaut_from_skimage(dlib_analyzer):
    skimage_data = pytest.importorskip("skimage.data")
    face = dlib_analyzer.get(skimage_data.astronaut(), select="one")
    _check_geometry(face)


def test_group_photo_selection(dlib_analyzer):
    import importlib.util
    from pathlib import Path

    t1 = Path(importlib.util.find_spec("insightface").submodule_search_locations[0]) / "data/images/t1.jpg"
    faces = dlib_analyzer.get(t1, select="all")
    assert len(faces) >= 4
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True), "documented order: largest first"
    assert dlib_analyzer.get(t1, select="largest").area == areas[0]
    assert np.array_equal(dlib_analyzer.get(t1, select=2).bbox, faces[2].bbox)
    picked = dlib_analyzer.get(t1, select="reference", reference=faces[3])
    assert np.array_equal(picked.bbox, faces[3].bbox)
    with pytest.raises(MultipleFacesError, match="faces were detected"):
        dlib_analyzer.get(t1, select="one")
    with pytest.raises(IdgenError, match="out of range"):
        dlib_analyzer.get(t1, select=99)


def test_same_person_closer_than_different_people(dlib_analyzer, faces_dir):
    image = load_image(faces_dir / "portrait_smile.jpg")
    resized = np.asarray(Image.fromarray(image).resize((image.shape[1] // 2, image.shape[0] // 2)))
    a = dlib_analyzer.get(image).embedding
    b = dlib_analyzer.get(resized).embedding
    others = [dlib_analyzer.get(faces_dir / n).embedding for n in ("portrait_glasses.jpg", "portrait_older.jpg")]
    assert identity_distance(a, b) < 0.1
    assert min(np.linalg.norm(a - o) for o in others) > 0.6


def test_alignment_lands_eyes_on_template(dlib_analyzer, faces_dir):
    from idgen.face import template_for

    image = load_image(faces_dir / "portrait_older.jpg")
    face = dlib_analyzer.get(image)
    for size in (112, 224, 512):
        aligned = align_face(image, face.kps, size=size)
        realigned = dlib_analyzer.get(aligned.image, min_size=10) if size >= 224 else None
        if realigned is not None:  # detect again in the crop: eyes near the template eyes
            assert np.abs(realigned.kps[:2] - template_for(size)[:2]).max() < 0.04 * size


def test_no_face_and_too_small(dlib_analyzer):
    with pytest.raises(FaceNotFoundError):
        dlib_analyzer.get(np.full((256, 256, 3), 127, np.uint8))
    with pytest.raises(FaceTooSmallError, match="below the minimum"):
        dlib_analyzer.get(load_image(__import__("skimage.data", fromlist=["astronaut"]).astronaut()), min_size=400)


def test_unreadable_files(dlib_analyzer, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    for path in (empty, corrupt, tmp_path / "missing.png"):
        with pytest.raises(ImageReadError):
            dlib_analyzer.get(path)


def test_cache_runs_the_detector_once(faces_dir):
    from idgen.face.backends.dlib import DlibFaceAnalyzer

    dlib_analyzer = DlibFaceAnalyzer()
    calls = []
    original = dlib_analyzer._detect
    dlib_analyzer._detect = lambda image: calls.append(1) or original(image)
    first = dlib_analyzer.get(faces_dir / "portrait_glasses.jpg")
    second = dlib_analyzer.get(faces_dir / "portrait_glasses.jpg")
    assert len(calls) == 1
    np.testing.assert_array_equal(first.embedding, second.embedding)
    second.kps[:] = 0  # callers get copies: mutating a result does not poison the cache
    assert dlib_analyzer.get(faces_dir / "portrait_glasses.jpg").kps.any()


def test_align_face_reads_paths_and_refuses_bad_input(faces_dir, dlib_analyzer, tmp_path):
    path = faces_dir / "portrait_glasses.jpg"
    face = dlib_analyzer.get(path)
    np.testing.assert_array_equal(align_face(str(path), face.kps, size=224).image,
                                  align_face(load_image(path), face.kps, size=224).image)
    with pytest.raises(ImageReadError):
        align_face(str(tmp_path / "missing.jpg"), face.kps)
    with pytest.raises(IdgenError, match="5 finite"):
        align_face(path, np.zeros((3, 2)))
