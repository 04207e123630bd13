"""The face post-pass (`--enhance`): restorer kinds, `FaceEnhancer` (only the pasted face region
changes, occluders stay, batches do not matter), the recipe's weights rule and the commands.

The restorers are the tiny random ones of `idgen.testing.restorers` (their architectures' parity
is in tests/test_restorer_*.py); the parser is a fake with a fixed label map (BiSeNet's parity is
in tests/test_face_parsing.py), so the masks here are known exactly."""

import json

import cv2
import numpy as np
import pytest
import torch

from idgen.app.cli import main
from idgen.app.enhance_options import parse_enhance
from idgen.app.options import RunOptions
from idgen.errors import IdgenError
from idgen.face.parsing import LABELS, label_mask
from idgen.image_io import load_image
from idgen.models.methods import ENHANCE_RESTORERS
from idgen.restorers.enhance import EnhanceOptions, FaceEnhancer
from idgen.restorers.kinds import RESTORERS, restorer_function
from idgen.testing.restorers import TINY_CROP_SIZE, tiny_restorer
from idgen.validation import InvalidArgumentError

S = TINY_CROP_SIZE
HAND = (slice(34, 46), slice(24, 40))  # crop rows/cols of the painted "hand" over the mouth


GREEN = (0, 255, 0)


class FakeParser:
    """A fixed parsing of every crop (a skin ellipse and a mouth) in which pure green pixels (a
    painted "hand") are background: the hand is found in the original crop, not in a restored one."""

    mask = staticmethod(label_mask)

    def __init__(self):
        labels = np.zeros((S, S), np.uint8)
        cv2.ellipse(labels, (S // 2, S // 2 + 2), (S // 4, S // 3), 0, 0, 360, LABELS["skin"], -1)
        labels = labels.astype(np.int64)
        labels[38:44, 24:40] = LABELS["mouth"]
        self.labels = labels

    def parse(self, crop):
        assert crop.shape == (S, S, 3)
        labels = self.labels.copy()
        labels[(crop == GREEN).all(-1)] = LABELS["background"]
        return labels


@pytest.fixture(scope="module")
def photo_and_faces(faces_dir, dlib_analyzer):
    photo = load_image(faces_dir / "portrait_glasses.jpg")
    return photo, dlib_analyzer.get(photo, select="all")


def enhancer(name="gfpgan", **options):
    model = tiny_restorer(name)
    kind = RESTORERS[name]
    parser = options.pop("parser", None)
    return FaceEnhancer(restorer_function(kind, model), parser=parser, options=EnhanceOptions(**options),
                        size=kind.size(model))


def footprint(photo, face, mask):
    """Where the crop `mask` (`[S, S]`) of `face` lands in the photo (bool `[H, W]`)."""
    from idgen.face import align_face

    inverse = align_face(photo, face.kps, size=S, mode="ffhq").inverse
    return cv2.warpAffine(mask.astype(np.float32), inverse, photo.shape[1::-1], flags=cv2.INTER_LINEAR) > 0


def test_the_restorer_tables_agree():
    assert tuple(RESTORERS) == ENHANCE_RESTORERS


@pytest.mark.parametrize("text, expected", [("codeformer", ("codeformer", None)), ("codeformer:0.7", ("codeformer", 0.7)),
                                            ("gfpgan", ("gfpgan", None)), ("restoreformer", ("restoreformer", None))])
def test_parse_enhance(text, expected):
    assert parse_enhance(text) == expected


@pytest.mark.parametrize("text", ["codeformr", "codeformer:1.5", "codeformer:x", "gfpgan:0.5", ""])
def test_bad_enhance_values_are_named(text):
    with pytest.raises(InvalidArgumentError, match="enhance"):
        RunOptions(enhance=text)
    with pytest.raises(InvalidArgumentError, match="enhance_blend"):
        RunOptions(enhance="gfpgan", enhance_blend=1.5)


def test_a_weight_for_a_restorer_without_one_is_refused():
    with pytest.raises(IdgenError, match="gfpgan has no fidelity weight"):
        restorer_function(RESTORERS["gfpgan"], tiny_restorer("gfpgan"), 0.5)


@pytest.mark.parametrize("name", ENHANCE_RESTORERS)
def test_only_the_pasted_face_region_changes(name, photo_and_faces):
    photo, faces = photo_and_faces
    parser = FakeParser()
    out = enhancer(name, parser=parser).enhance(photo, faces)
    changed = (out != photo).any(-1)
    assert changed.any()
    region = np.zeros(photo.shape[:2], bool)
    for face in faces:  # the parsed face, dilated by 8 px of a 512 crop (1 px here), feathered inside it
        grown = cv2.dilate(label_mask(parser.labels, include=("skin", "mouth"), exclude=()), np.ones((3, 3), np.uint8))
        region |= footprint(photo, face, grown)
    assert not changed[~region].any()


def test_without_a_parser_the_whole_crop_is_pasted(photo_and_faces):
    photo, faces = photo_and_faces
    out = enhancer().enhance(photo, faces)
    crop = np.zeros(photo.shape[:2], bool)
    for face in faces:
        crop |= footprint(photo, face, np.ones((S, S)))
    changed = (out != photo).any(-1)
    assert changed.any() and not changed[~crop].any()


def test_occluders_are_kept_when_asked(photo_and_faces):
    photo, faces = photo_and_faces
    hand = np.zeros((S, S), np.uint8)
    hand[HAND] = 1
    painted, inside = photo.copy(), np.zeros(photo.shape[:2], bool)
    for face in faces:  # a green hand over the mouth, and its inside (the warps blur its edge by a pixel)
        painted[footprint(photo, face, cv2.dilate(hand, np.ones((5, 5), np.uint8)))] = GREEN
        inside |= footprint(photo, face, cv2.erode(hand, np.ones((5, 5), np.uint8)))
    kept = enhancer(parser=FakeParser()).enhance(painted, faces)
    assert np.array_equal(kept[inside], painted[inside]) and (kept != painted).any()
    covered = enhancer(parser=FakeParser(), keep_occluders=False).enhance(painted, faces)
    assert (covered[inside] != painted[inside]).any()


def test_blend_zero_leaves_the_photo_and_blend_mixes(photo_and_faces):
    photo, faces = photo_and_faces
    assert np.array_equal(enhancer(blend=0.0).enhance(photo, faces), photo)
    full, half = enhancer().enhance(photo, faces), enhancer(blend=0.5).enhance(photo, faces)
    changed = (full != photo).any(-1)
    assert np.abs(half[changed].astype(int) - photo[changed]).mean() < np.abs(full[changed].astype(int) - photo[changed]).mean()


@pytest.mark.parametrize("name", ["gfpgan", "restoreformer"])
def test_frames_do_not_depend_on_the_batch(name, photo_and_faces):
    photo, faces = photo_and_faces
    frames = [photo, np.ascontiguousarray(photo[:, ::-1]), photo]
    found = [faces, [], faces]  # a frame without a face passes through
    one, three = (enhancer(name, batch_size=b).enhance_frames(frames, found) for b in (1, 3))
    assert np.array_equal(one[1], frames[1]) and np.array_equal(three[1], frames[1])
    assert np.array_equal(one[0], one[2]) and not np.array_equal(one[0], frames[0])
    # CPU kernels sum a batch in another order (~1e-6 apart in float): a rare pixel rounds one level off
    for a, b in zip(one, three):
        diff = np.abs(a.astype(int) - b)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_enhance_crops_keeps_the_crop_size():
    crops = [np.full((96, 96, 3), v, np.uint8) for v in (60, 200)]
    out = enhancer().enhance_crops(crops)
    assert [c.shape for c in out] == [(96, 96, 3)] * 2 and not np.array_equal(out[0], crops[0])
    assert enhancer().enhance_crops([]) == []


def test_the_recipe_uses_the_official_file_when_configured(tmp_path, monkeypatch, empty_home, fresh_enhancers):
    from idgen.models.enhancers import build_face_enhancer

    monkeypatch.setenv("IDGEN_HOME", str(empty_home))
    _, embedded, _ = build_face_enhancer("gfpgan")
    assert embedded
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": tiny_restorer("gfpgan").state_dict()}, path)
    monkeypatch.setenv("IDGEN_GFPGAN", str(path))
    with pytest.raises(IdgenError, match="GFPGAN"):  # the official sizes, not the tiny file's
        build_face_enhancer("gfpgan")
    from idgen.restorers import gfpgan

    monkeypatch.setattr(gfpgan, "GFPGAN_CONFIG", {**gfpgan.GFPGAN_CONFIG, "out_size": S, "num_style_feat": 16,
                                                  "narrow": 1 / 32})
    built, embedded, notes = build_face_enhancer("gfpgan", options=EnhanceOptions(blend=0.5))
    assert not embedded and built.size == S and built.options.blend == 0.5 and built.parser is None
    assert "no face parser configured" in notes[0]
    monkeypatch.setenv("IDGEN_GFPGAN", str(tmp_path / "nope.pth"))  # configured but absent: an error, no fallback
    with pytest.raises(IdgenError, match="nope.pth"):
        build_face_enhancer("gfpgan")


def test_generate_and_restore_record_the_post_pass(faces_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("IDGEN_PROVENANCE", "0")
    face = str(faces_dir / "portrait_glasses.jpg")
    assert main(["generate", "--method", "faceid", "--face", face, "--tiny", "--steps", "2", "--enhance",
                 "codeformer:0.7", "--enhance-blend", "0.8", "--out", str(tmp_path / "g")]) == 0
    record = json.loads((tmp_path / "g" / "record.json").read_text())
    assert record["enhance"]["restorer"] == "codeformer:0.7" and record["enhance"]["blend"] == 0.8
    assert record["request"]["enhance"] == "codeformer:0.7"
    assert main(["restore", face, "--tiny", "--steps", "2", "--enhance", "gfpgan", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "record.json").read_text())["enhance"]["restorer"] == "gfpgan"
    from test_video import face_frames, make_video

    video = make_video(tmp_path / "clip.mp4", face_frames(3, blank=()))
    assert main(["restore", str(video), "--tiny", "--steps", "2", "--enhance", "restoreformer",
                 "--out", str(tmp_path / "v")]) == 0
    record = json.loads((tmp_path / "v" / "record.json").read_text())
    assert record["enhance"]["restorer"] == "restoreformer" and record["video"]["tracks"] == 1
    assert main(["generate", "--method", "faceid", "--face", face, "--tiny", "--enhance", "gfpgan:0.5",
                 "--out", str(tmp_path / "bad")]) != 0


def test_enhance_photos_restores_the_faces_it_finds(photo_and_faces, dlib_analyzer):
    from idgen.app.enhance_options import enhance_photos

    photo, _ = photo_and_faces
    request = RunOptions(enhance="gfpgan", embedded_default=True)
    (out,), record = enhance_photos(request, [photo], dlib_analyzer)
    assert record["faces"] == 1 and record["embedded_default"] and (out != photo).any()
    assert enhance_photos(RunOptions(), [photo], dlib_analyzer) == ([photo], None)
