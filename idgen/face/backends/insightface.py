"""insightface backend: SCRFD detection + ArcFace 512-d recognition (+ 106 landmarks) from a LOCAL ONNX pack.

The official adapters (InstantID, IP-Adapter-FaceID, Arc2Face) were trained on these ArcFace
embeddings. Packs are looked up locally only; insightface's own `FaceAnalysis` downloads a
missing pack, so this backend checks the files itself and routes each ONNX file through
insightface's `model_zoo` (which picks the model class from the graph's shapes).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from idgen.errors import ModelNotFoundError
from idgen.face.align import align_face
from idgen.face.analyzer import FaceAnalyzer
from idgen.face.types import Face

logger = logging.getLogger(__name__)

#: Files of the known packs (detector and recognizer first; the rest are optional extras).
PACK_FILES = {
    "antelopev2": ["scrfd_10g_bnkps.onnx", "glintr100.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx"],
    "buffalo_l": ["det_10g.onnx", "w600k_r50.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx"],
}
DEFAULT_PACKS = ("antelopev2", "buffalo_l")
#: insightface's task name for the 2D 106-point landmark model (`2d106det.onnx`).
LANDMARK_TASK = "landmark_2d_106"
#: The landmark crop is a square this many times the face box's longer side, around its centre.
LANDMARK_CROP = 1.5


def pack_roots(root: Optional[os.PathLike] = None) -> list[Path]:
    """Folders that may hold `models/<pack>/`: `root` if given, else `$IDGEN_HOME/insightface`
    and `~/.insightface` (insightface's own default)."""
    if root is not None:
        return [Path(root).expanduser()]
    idgen_home = Path(os.environ.get("IDGEN_HOME", "~/.idgen")).expanduser()
    return [idgen_home / "insightface", Path("~/.insightface").expanduser()]


def _candidates(pack: Optional[str], root: Optional[os.PathLike]) -> list[Path]:
    if pack is not None and Path(pack).expanduser().is_dir():
        return [Path(pack).expanduser()]
    names = [pack] if pack else list(DEFAULT_PACKS)
    return [r / "models" / n for r in pack_roots(root) for n in names]


def find_pack(pack: Optional[str] = None, root: Optional[os.PathLike] = None) -> Optional[Path]:
    """The first candidate pack folder that holds at least one ONNX file, or None."""
    for folder in _candidates(pack, root):
        if folder.is_dir() and any(folder.glob("*.onnx")):
            return folder
    return None


def _missing_pack_error(pack: Optional[str], root: Optional[os.PathLike]) -> ModelNotFoundError:
    looked = "\n  ".join(str(p) for p in _candidates(pack, root))
    expected = "\n  ".join(f"{name}: {', '.join(files)}" for name, files in PACK_FILES.items())
    return ModelNotFoundError(
        f"no insightface model pack found. Looked in:\n  {looked}\nA pack is a folder of ONNX files "
        f"with a detector and a recognizer, e.g.\n  {expected}\nPut the folder at "
        f"$IDGEN_HOME/insightface/models/<pack>/ or ~/.insightface/models/<pack>/, or pass its path. "
        "idgen never downloads it by itself."
    )


def default_providers() -> list[str]:
    """CUDA when onnxruntime has it, then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def dense_landmarks(model, image: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """Landmarks `[N, 2]` float32 `(x, y)` in image pixels from insightface's 2D landmark model.

    The model sees a square crop of `LANDMARK_CROP` times the box's longer side around the box
    centre, resized to its input (192x192), and predicts points in [-1, 1] of that crop.

    Args:
        model: the pack's routed `insightface.model_zoo.Landmark` (`input_size`, `input_mean`,
            `input_std`, `session`, `input_name`, `output_names`, `lmk_num`).
        image: RGB `[H, W, 3]` uint8.
        bbox: `[4]` `(x1, y1, x2, y2)` in pixels.
    """
    size = int(model.input_size[0])
    x1, y1, x2, y2 = (float(v) for v in bbox[:4])
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2], dtype=np.float64)
    scale = size / (LANDMARK_CROP * max(x2 - x1, y2 - y1, 1.0))
    # image -> crop: scale about the box centre, then put the centre in the middle of the crop.
    to_crop = np.array([[scale, 0.0, size / 2 - scale * center[0]], [0.0, scale, size / 2 - scale * center[1]]])
    crop = cv2.warpAffine(image, to_crop, (size, size), borderValue=0.0)
    blob = cv2.dnn.blobFromImage(crop, 1.0 / model.input_std, (size, size), (model.input_mean,) * 3, swapRB=False)
    pred = model.session.run(model.output_names, {model.input_name: blob})[0].reshape(-1, 2)[-model.lmk_num:]
    # crop pixels = (pred + 1) * size / 2; back to the image by inverting `to_crop`.
    return (center + pred.astype(np.float64) * (size / 2) / scale).astype(np.float32)


class InsightFaceAnalyzer(FaceAnalyzer):
    """SCRFD detector + ArcFace recognizer (+ the 106-point landmark model if present) from a local pack.

    Faces get `landmarks` `[106, 2]` when the pack holds `2d106det.onnx` (buffalo_l and
    antelopev2 do), so landmark-hull masks follow the face outline; without it `landmarks` is None.

    Args:
        pack: pack name ("antelopev2", "buffalo_l") or a folder of ONNX files; default: the
            first of antelopev2, buffalo_l found.
        root: folder holding `models/<pack>/` (default: `$IDGEN_HOME/insightface`, `~/.insightface`).
        det_size: detector input size `(w, h)` in pixels (official InstantID uses 640x640).
        det_thresh: detection score threshold.
        providers: onnxruntime providers (default: CUDA if available, then CPU).
    """

    name = "insightface"
    embedding_dim = 512

    def __init__(self, pack: Optional[str] = None, root: Optional[os.PathLike] = None,
                 det_size: tuple[int, int] = (640, 640), det_thresh: float = 0.5,
                 providers: Optional[list[str]] = None, cache_size: int = 256):
        super().__init__(cache_size)
        folder = find_pack(pack, root)
        if folder is None:
            raise _missing_pack_error(pack, root)
        from insightface.model_zoo import model_zoo

        providers = providers or default_providers()
        self.folder = folder
        self.detector = self.recognizer = self.landmarker = None
        for onnx_file in sorted(folder.glob("*.onnx")):
            model = model_zoo.get_model(str(onnx_file), providers=providers)
            task = getattr(model, "taskname", None)
            if task == "detection" and self.detector is None:
                self.detector = model
            elif task == "recognition" and self.recognizer is None:
                self.recognizer = model
            elif task == LANDMARK_TASK and self.landmarker is None:
                self.landmarker = model
            else:
                logger.debug("insightface pack %s: %s not used (task %s)", folder, onnx_file.name, task)
        missing = [what for what, m in (("detector", self.detector), ("recognizer", self.recognizer)) if m is None]
        if missing:
            raise ModelNotFoundError(
                f"insightface pack {folder} has no {' and no '.join(missing)} ONNX model that insightface "
                f"recognises; expected e.g. {', '.join(PACK_FILES['antelopev2'][:2])}."
            )
        self.detector.prepare(0 if "CUDAExecutionProvider" in providers else -1, input_size=tuple(det_size), det_thresh=det_thresh)
        self.embedding_model = f"arcface:{folder.name}"

    def _detect(self, image: np.ndarray) -> list[Face]:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        bboxes, kpss = self.detector.detect(bgr, max_num=0, metric="default")
        height, width = image.shape[:2]
        size = self.recognizer.input_size[0]
        faces = []
        for i in range(bboxes.shape[0]):
            kps = kpss[i]
            aligned = align_face(bgr, kps, size=size).image
            embedding = self.recognizer.get_feat(aligned).reshape(-1)
            landmarks = None if self.landmarker is None else dense_landmarks(self.landmarker, image, bboxes[i])
            faces.append(Face(
                bbox=bboxes[i, :4], score=float(bboxes[i, 4]), kps=kps, image_size=(width, height),
                landmarks=landmarks, embedding=embedding, embedding_model=self.embedding_model,
            ))
        return faces
