"""Face swap masks by parsed region (`keep`, occlusion) and the `enhance_crops` post-pass.

A fake parser stands in for BiSeNet (tested in its own file): a fixed, synthetic label map of the
64 px crop of the tiny pipeline, laid over the real dlib face of `portrait_glasses.jpg`.
"""

import functools

import cv2
import numpy as np
import pytest

from idgen.errors import IdgenError
from idgen.face import align_face
from idgen.face.parsing import LABELS, label_mask
from idgen.media.video import read_frames
from idgen.pipelines import FaceSwapper
from idgen.pipelines.pipeline_face_swap import _face_in_crop

from conftest import dlib_faces
from test_face_swap import GEN, SOURCE_A, _photo, _swapper
from test_pva import sd15_pipeline
from test_video import make_video
from test_video_batching import two_face_frames

SIZE = 64  # the tiny pipeline's crop
PARSED = ("skin", "nose", "mouth")


def _box(rows, cols):
    box = np.zeros((SIZE, SIZE), bool)
    box[rows[0]:rows[1], cols[0]:cols[1]] = True
    return box


#: Where each synthetic part lies in the crop (the landmark hull spans rows 26-56, columns 11-47).
HAIR = _box((4, 20), (12, 52))
GLASSES = _box((28, 33), (16, 44))
NOSE = _box((34, 40), (28, 34))
MOUTH = _box((45, 49), (23, 35))
HAND = _box((40, 50), (37, 43))  # background inside the face: a hand over the cheek


def synthetic_labels() -> np.ndarray:
    """Skin ellipse in the middle, hair above, a glasses band, nose, mouth, and a background hand."""
    labels = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(labels, (30, 40), (17, 17), 0, 0, 360, LABELS["skin"], -1)
    labels = labels.astype(np.int64)  # FaceParser.parse's dtype
    for part, name in ((HAIR, "hair"), (GLASSES, "eye_g"), (NOSE, "nose"), (MOUTH, "mouth"), (HAND, "background")):
        labels[part] = LABELS[name]
    return labels


class FakeParser:
    """`FaceParser`'s interface over `synthetic_labels`, counting its calls."""

    mask = staticmethod(label_mask)

    def __init__(self):
        self.calls = 0

    def parse(self, crop):
        assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
        self.calls += 1
        return synthetic_labels()


class FakeOccluder:
    """`OcclusionModel`'s interface: the hand (1 = occluded; a float mask, as the model's)."""

    def occlusion_mask(self, crop):
        return HAND.astype(np.float32) * 0.9 + 0.05


def _parsing_swapper(**components):
    base = _swapper()
    return FaceSwapper(base.pipe, base.face_analyzer, **components)


@functools.lru_cache(maxsize=None)
def _aligned():
    photo = _photo()
    (face,) = dlib_faces().get(photo, select="all")
    aligned = align_face(photo, face.kps, size=SIZE, mode="ffhq")
    return photo, aligned, _face_in_crop(face, aligned.matrix, SIZE)


def _to_photo(crop_mask) -> np.ndarray:
    """`[H, W]` bool: the photo pixels the crop mask reaches through the paste-back's warp."""
    photo, aligned, _ = _aligned()
    return cv2.warpAffine(np.asarray(crop_mask, np.float32), aligned.inverse, photo.shape[1::-1]) > 0


def _inside(crop_mask) -> np.ndarray:
    """`[H, W]` bool: photo pixels wholly inside the crop mask (all bilinear neighbours in it)."""
    photo, aligned, _ = _aligned()
    return cv2.warpAffine(np.asarray(crop_mask, np.float32), aligned.inverse, photo.shape[1::-1]) > 0.999


def _changed(image) -> np.ndarray:
    return np.any(image != _photo(), axis=-1)


@functools.lru_cache(maxsize=None)
def _plain():
    """The default swap without a parser (geometric face mask)."""
    return _swapper()(_photo(), [SOURCE_A], **GEN).image


# -- masks in crop space --------------------------------------------------------------------------


def test_crop_mask_of_a_parsed_region_keeps_and_occluders():
    _, aligned, face = _aligned()
    parser = FakeParser()
    swapper = _parsing_swapper(parser=parser)
    mask = swapper.crop_mask(face, aligned.image, region=PARSED, occlusion=False)
    np.testing.assert_array_equal(mask, label_mask(synthetic_labels(), PARSED, ()))
    assert parser.calls == 1 and set(np.unique(mask)) == {0.0, 1.0}
    # the comma-separated form, grown by dilate; kept glasses and the occluding hand cut out, with a margin
    grown = swapper.crop_mask(face, aligned.image, region="skin,nose,mouth", dilate=3, keep=("glasses",))
    assert grown.sum() > mask.sum() and not grown[GLASSES | HAND].any()
    margin = cv2.dilate(HAND.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not grown[margin].any()
    # a geometric region keeps its hull, minus what is kept
    hull = _swapper().crop_mask(face)
    geometric = swapper.crop_mask(face, aligned.image, keep=("glasses",), occlusion=False)
    assert not geometric[GLASSES].any() and (geometric <= hull).all() and geometric[MOUTH].all()


def test_parsed_region_or_keep_without_a_parser_is_an_error():
    swapper, photo = _swapper(), _photo()
    with pytest.raises(IdgenError, match=r"face parser \(79999_iter.pth, see `idgen doctor`\)"):
        swapper(photo, [SOURCE_A], region=PARSED, **GEN)
    with pytest.raises(IdgenError, match="keep=.*face parser"):
        swapper(photo, [SOURCE_A], keep=("glasses",), **GEN)
    with pytest.raises(IdgenError, match="face parser"):
        swapper.swap_video("missing.mp4", "out.mp4", [SOURCE_A], region=PARSED)
    with pytest.raises(IdgenError, match="unknown face-parsing class 'sunglasses'"):
        _parsing_swapper(parser=FakeParser())(photo, [SOURCE_A], keep=("sunglasses",), **GEN)
    _, aligned, face = _aligned()
    with pytest.raises(IdgenError, match="crop pixels"):
        _parsing_swapper(parser=FakeParser()).crop_mask(face, region=PARSED)
    # no parser, geometric region: the mask needs no pixels and occlusion has nothing to act on
    np.testing.assert_array_equal(swapper.crop_mask(face), swapper.crop_mask(face, aligned.image))


# -- photos ---------------------------------------------------------------------------------------


def test_a_parsed_region_repaints_only_those_classes():
    _, aligned, face = _aligned()
    parser = FakeParser()
    swapper = _parsing_swapper(parser=parser)
    out = swapper(_photo(), [SOURCE_A], region=PARSED, dilate=0, **GEN)
    assert parser.calls == 1  # region, keep and occlusion from one parse of the crop
    mask = swapper.crop_mask(face, aligned.image, region=PARSED, dilate=0)
    changed = _changed(out.image)
    assert changed[_inside(mask)].mean() > 0.5, "the parsed region was not repainted"
    assert not (changed & ~_to_photo(mask)).any(), "pixels outside the parsed region changed"
    assert not changed[_inside(HAIR | GLASSES | HAND)].any()  # classes outside the region


@pytest.mark.parametrize("region", ["face", ("skin", "glasses")])
def test_kept_classes_are_left_as_they_were(region):
    band = _to_photo(GLASSES)
    assert _changed(_plain())[band].mean() > 0.5  # without keep, the swap repaints the band
    out = _parsing_swapper(parser=FakeParser())(_photo(), [SOURCE_A], region=region, keep=("glasses",), **GEN)
    np.testing.assert_array_equal(out.image[band], _photo()[band])
    assert _changed(out.image)[_inside(NOSE | MOUTH)].mean() > 0.5


@pytest.mark.parametrize("components", [{"parser": FakeParser()}, {"occluder": FakeOccluder()}],
                         ids=["parser", "occluder"])
def test_what_occludes_the_face_is_kept_unless_occlusion_is_off(components):
    swapper, hand = _parsing_swapper(**components), _to_photo(HAND)
    out = swapper(_photo(), [SOURCE_A], **GEN)
    np.testing.assert_array_equal(out.image[hand], _photo()[hand])
    assert _changed(out.image)[_inside(MOUTH)].mean() > 0.5
    repainted = swapper(_photo(), [SOURCE_A], occlusion=False, **GEN)
    assert _changed(repainted.image)[_inside(HAND)].mean() > 0.5
    np.testing.assert_array_equal(repainted.image, _plain())  # the occlusion is all that differs


class Enhancer:
    """A stand-in post-pass: records each call's crops and returns their negatives."""

    def __init__(self):
        self.calls = []

    def __call__(self, crops):
        self.calls.append([c.copy() for c in crops])
        return [255 - c for c in crops]


def test_enhance_crops_runs_on_the_swapped_crops_inside_the_mask():
    _, _, face = _aligned()
    enhancer = Enhancer()
    out = _swapper()(_photo(), [SOURCE_A], enhance_crops=enhancer, **GEN)
    assert [len(call) for call in enhancer.calls] == [1] and enhancer.calls[0][0].shape == (SIZE, SIZE, 3)
    differs = np.any(out.image != _plain(), axis=-1)
    region = _to_photo(_swapper().crop_mask(face, dilate=8))
    assert differs[region].mean() > 0.5
    assert not (differs & ~region).any(), "the post-pass changed pixels outside the swap mask"
    # with a parser, the post-pass leaves the kept pixels alone too
    kept = _parsing_swapper(parser=FakeParser())(_photo(), [SOURCE_A], keep=("glasses",), enhance_crops=Enhancer(),
                                                 **GEN)
    band = _to_photo(GLASSES)
    np.testing.assert_array_equal(kept.image[band], _photo()[band])
    with pytest.raises(IdgenError, match="enhance_crops returned 0 crops for 1"):
        _swapper()(_photo(), [SOURCE_A], enhance_crops=lambda crops: [], **GEN)


# -- video ----------------------------------------------------------------------------------------


def test_video_with_enhance_crops_does_not_depend_on_the_batch_size(tmp_path):
    """A post-pass that treats each crop on its own (here: a fixed pattern, so that the pipeline's
    float rounding between batch sizes cannot show) gives the same frames at any batch size."""
    source = make_video(tmp_path / "two.mp4", two_face_frames(3), audio=None)
    pattern = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    parser = FakeParser()
    swapper = FaceSwapper(sd15_pipeline(), dlib_faces(), parser=parser)
    frames, calls = {}, {}
    for batch_size in (1, 3):
        sizes = []

        def enhance(crops):
            sizes.append(len(crops))
            return [pattern.copy() for _ in crops]

        parser.calls = 0
        output = tmp_path / f"out{batch_size}.mp4"
        report = swapper.swap_video(source, output, [SOURCE_A], keep=("glasses",), batch_size=batch_size,
                                    enhance_crops=enhance, progress=False, **GEN)
        assert report.faces_per_frame == [2, 2, 2] and parser.calls == 6  # one parse per crop
        frames[batch_size], calls[batch_size] = np.stack(list(read_frames(output))), sizes
    assert calls == {1: [1] * 6, 3: [3, 3]}
    np.testing.assert_array_equal(frames[1], frames[3])
    assert np.abs(frames[1].astype(int) - np.stack(two_face_frames(3))).max() > 30  # the pattern was pasted
