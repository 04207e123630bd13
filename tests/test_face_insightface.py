"""insightface backend offline: a pack of tiny ONNX models exported here runs through the real
loading code (pack discovery, insightface's model router, SCRFD decoding, ArcFace embedding,
106-point landmarks)."""

import cv2
import numpy as np
import pytest
import torch

from idgen.conditioning import face_mask
from idgen.errors import FaceNotFoundError, ModelNotFoundError
from idgen.face.backends.insightface import InsightFaceAnalyzer, find_pack

DET = 640
STRIDES = (8, 16, 32)
FACE_CENTER = (320, 320)  # the anchor that fires, in detector-input pixels
BOX_HALF = 100.0
KPS_OFFSETS = [(-35, -25), (35, -25), (0, 5), (-30, 45), (30, 45)]
LMK = 192
# 106 points on a triangle, in the landmark model's [-1, 1] crop units, relative to a bright dot.
_corners = np.array([(-0.5, -0.4), (0.5, -0.4), (0.0, 0.6), (-0.5, -0.4)])
_t = np.linspace(0, 3, 106, endpoint=False)
LMK_OFFSETS = (_corners[_t.astype(int)] + (_t % 1)[:, None] * (_corners[_t.astype(int) + 1] - _corners[_t.astype(int)])).astype(np.float32)


class TinySCRFD(torch.nn.Module):
    """SCRFD's output signature (scores, boxes, keypoints for strides 8/16/32, 2 anchors) with
    one face at FACE_CENTER whose score grows with the input's contrast (flat image: no face)."""

    def __init__(self):
        super().__init__()
        for stride in STRIDES:
            n = (DET // stride) ** 2 * 2
            score = torch.zeros(n, 1)
            box = torch.zeros(n, 4)
            kps = torch.zeros(n, 10)
            if stride == 8:
                idx = ((FACE_CENTER[1] // 8) * (DET // 8) + FACE_CENTER[0] // 8) * 2
                score[idx] = 1.0
                box[idx] = BOX_HALF / 8
                kps[idx] = torch.tensor(KPS_OFFSETS, dtype=torch.float32).flatten() / 8
            self.register_buffer(f"score{stride}", score)
            self.register_buffer(f"box{stride}", box)
            self.register_buffer(f"kps{stride}", kps)

    def forward(self, x):
        contrast = torch.clamp(x.std() * 4.0, 0.0, 0.99)
        zero = x.mean() * 0.0
        scores = [getattr(self, f"score{s}") * contrast for s in STRIDES]
        boxes = [getattr(self, f"box{s}") + zero for s in STRIDES]
        kps = [getattr(self, f"kps{s}") + zero for s in STRIDES]
        return (*scores, *boxes, *kps)


class TinyArcFace(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 16 * 16, 512)

    def forward(self, x):
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 16).flatten(1))


class TinyLandmark106(torch.nn.Module):
    """2d106det's signature (`[1, 3, 192, 192]` → `[1, 212]`): 106 points at LMK_OFFSETS around
    the centroid of the crop's bright pixels, in [-1, 1] crop units, so where the points land in the
    image shows how the backend cropped and mapped back."""

    def __init__(self):
        super().__init__()
        self.register_buffer("offsets", torch.from_numpy(LMK_OFFSETS))
        self.register_buffer("grid", torch.arange(LMK, dtype=torch.float32))

    def forward(self, x):
        weight = torch.relu(x.mean(1)[0] - 0.5)  # only near-white pixels (input is (v - 127.5) / 128)
        total = weight.sum() + 1e-6
        centroid = torch.stack([(weight.sum(0) * self.grid).sum(), (weight.sum(1) * self.grid).sum()]) / total
        return (centroid / (LMK / 2) - 1 + self.offsets).reshape(1, -1)


def _export_pack(folder, landmarks: bool):
    folder.mkdir(parents=True)
    torch.onnx.export(TinySCRFD(), torch.zeros(1, 3, DET, DET), folder / "det_tiny.onnx", dynamo=False,
                      input_names=["input.1"], output_names=[f"o{i}" for i in range(9)])
    torch.onnx.export(TinyArcFace(), torch.zeros(1, 3, 112, 112), folder / "rec_tiny.onnx", dynamo=False,
                      input_names=["input.1"], output_names=["embedding"], dynamic_axes={"input.1": {0: "n"}})
    if landmarks:
        torch.onnx.export(TinyLandmark106(), torch.zeros(1, 3, LMK, LMK), folder / "2d106det.onnx", dynamo=False,
                          input_names=["data"], output_names=["fc1"])


@pytest.fixture(scope="module")
def pack_root(tmp_path_factory):
    """`models/tinypack` (detector + recognizer) and `models/lmkpack` (the same + 2d106det.onnx)."""
    root = tmp_path_factory.mktemp("insightface")
    _export_pack(root / "models" / "tinypack", landmarks=False)
    _export_pack(root / "models" / "lmkpack", landmarks=True)
    return root


def _dot_image(dot=(300, 350)) -> np.ndarray:
    """640x640 (no letterbox): a dark checkerboard (contrast for TinySCRFD) with one white 5x5 dot."""
    yy, xx = np.mgrid[:DET, :DET]
    image = np.repeat((((xx // 8 + yy // 8) % 2) * 100).astype(np.uint8)[..., None], 3, axis=2)
    image[dot[1] - 2:dot[1] + 3, dot[0] - 2:dot[0] + 3] = 255
    return image


def test_missing_pack_names_files_and_places(tmp_path, monkeypatch):
    monkeypatch.setenv("IDGEN_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelNotFoundError) as err:
        InsightFaceAnalyzer(pack="antelopev2", root=tmp_path)
    message = str(err.value)
    assert "glintr100.onnx" in message and "scrfd_10g_bnkps.onnx" in message
    assert str(tmp_path / "models" / "antelopev2") in message and "never downloads" in message


def test_pack_without_recognizer_is_refused(pack_root, tmp_path):
    only_det = tmp_path / "models" / "detonly"
    only_det.mkdir(parents=True)
    (only_det / "det_tiny.onnx").write_bytes((pack_root / "models/tinypack/det_tiny.onnx").read_bytes())
    with pytest.raises(ModelNotFoundError, match="no recognizer"):
        InsightFaceAnalyzer(pack="detonly", root=tmp_path)


def test_detects_and_embeds_with_local_pack(pack_root, faces_dir):
    assert find_pack("tinypack", pack_root) == pack_root / "models" / "tinypack"
    analyzer = InsightFaceAnalyzer(pack="tinypack", root=pack_root)
    assert analyzer.embedding_model == "arcface:tinypack" and analyzer.embedding_dim == 512
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(faces_dir / "portrait_smile.jpg").convert("RGB"))
    face = analyzer.get(image, select="one")
    # The detector sees the image resized by 640/1024: the face box maps back to the source scale.
    scale = image.shape[1] / DET
    np.testing.assert_allclose(face.bbox, np.array([220, 220, 420, 420]) * scale, atol=1.0)
    np.testing.assert_allclose(face.kps, (np.array(FACE_CENTER) + np.array(KPS_OFFSETS)) * scale, atol=1.0)
    assert face.embedding.shape == (512,) and np.isfinite(face.embedding).all()
    assert face.landmarks is None  # no 2d106det.onnx in the pack: no landmarks, no error
    np.testing.assert_allclose(np.linalg.norm(face.normed_embedding), 1.0, atol=1e-5)
    other = analyzer.get(image[::-1].copy())  # different pixels in the aligned crop → different embedding
    assert np.abs(other.embedding - face.embedding).max() > 1e-3


def test_flat_image_has_no_face(pack_root):
    analyzer = InsightFaceAnalyzer(pack="tinypack", root=pack_root)
    with pytest.raises(FaceNotFoundError):
        analyzer.get(np.full((640, 640, 3), 90, np.uint8))  # square: no letterbox padding


def test_auto_backend_prefers_a_local_pack(pack_root, monkeypatch):
    from idgen.face import factory as analyzer_module
    from idgen.face import get_face_analyzer

    monkeypatch.delenv("IDGEN_FACE_BACKEND", raising=False)
    monkeypatch.setattr(analyzer_module, "_ANALYZERS", {})
    assert get_face_analyzer(pack="tinypack", root=str(pack_root)).name == "insightface"
    monkeypatch.setenv("IDGEN_HOME", str(pack_root / "nothing-here"))
    monkeypatch.setenv("HOME", str(pack_root / "nothing-here"))
    assert get_face_analyzer().name == "dlib"


def test_landmarks_106_land_in_image_pixels(pack_root):
    from insightface.app.common import Face as InsightFace

    analyzer = InsightFaceAnalyzer(pack="lmkpack", root=pack_root)
    dot = np.array([300.0, 350.0])
    image = _dot_image(tuple(int(v) for v in dot))
    face = analyzer.get(image, select="one")
    np.testing.assert_allclose(face.bbox, [220, 220, 420, 420], atol=1.0)
    # Crop: 1.5 x the box's longer side (200 px) around its centre, so one [-1, 1] unit is 150 px.
    assert face.landmarks.shape == (106, 2)
    np.testing.assert_allclose(face.landmarks, dot + LMK_OFFSETS * 150.0, atol=1.5)
    assert "landmarks" in face.to_dict()
    # Same points as insightface's own Landmark.get (BGR input) on the same box.
    theirs = analyzer.landmarker.get(np.ascontiguousarray(image[:, :, ::-1]), InsightFace(bbox=face.bbox))
    np.testing.assert_allclose(face.landmarks, theirs, atol=1e-3)


def test_landmark_hull_mask_is_the_hull_not_the_box_ellipse(pack_root):
    import dataclasses

    face = InsightFaceAnalyzer(pack="lmkpack", root=pack_root).get(_dot_image(), select="one")
    mask = face_mask((DET, DET), face) > 0.5
    hull = np.zeros((DET, DET), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(face.landmarks).astype(np.int32)), 1)
    ellipse = face_mask((DET, DET), dataclasses.replace(face, landmarks=None)) > 0.5

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    assert iou(mask, hull.astype(bool)) > 0.99
    assert iou(mask, ellipse) < 0.7
    hair = face_mask((DET, DET), face, region="face_hair") > 0.5
    assert hair.sum() > mask.sum() and (hair | mask).sum() == hair.sum()  # reaches above the hull
