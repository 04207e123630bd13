"""insightface backend offline: a pack of tiny ONNX models exported here runs through the real
loading code (pack discovery, insightface's model router, SCRFD decoding, ArcFace embedding)."""

import numpy as np
import pytest
import torch

from idgen.errors import FaceNotFoundError, ModelNotFoundError
from idgen.face.backends.insightface import InsightFaceAnalyzer, find_pack

DET = 640
STRIDES = (8, 16, 32)
FACE_CENTER = (320, 320)  # the anchor that fires, in detector-input pixels
BOX_HALF = 100.0
KPS_OFFSETS = [(-35, -25), (35, -25), (0, 5), (-30, 45), (30, 45)]


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


@pytest.fixture(scope="module")
def pack_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    pack = root / "models" / "tinypack"
    pack.mkdir(parents=True)
    torch.onnx.export(TinySCRFD(), torch.zeros(1, 3, DET, DET), pack / "det_tiny.onnx", dynamo=False,
                      input_names=["input.1"], output_names=[f"o{i}" for i in range(9)])
    torch.onnx.export(TinyArcFace(), torch.zeros(1, 3, 112, 112), pack / "rec_tiny.onnx", dynamo=False,
                      input_names=["input.1"], output_names=["embedding"], dynamic_axes={"input.1": {0: "n"}})
    return root


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
