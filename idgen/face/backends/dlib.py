"""dlib backend: HOG (+ CNN fallback) detection, 68 landmarks, 128-d face recognition.

Its models ship in the `face_recognition_models` pip package, so it works offline with no set-up.
It is idgen's independent identity metric for evaluation (a different network from the ArcFace
models the adapters are conditioned on).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np

from idgen.errors import ModelNotFoundError
from idgen.face.analyzer import FaceAnalyzer
from idgen.face.types import Face

logger = logging.getLogger(__name__)

MODEL_FILES = {
    "landmarks": "shape_predictor_68_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}


def dlib_model_dir() -> Path:
    """The `models/` folder of `face_recognition_models`, found without importing the package
    (its `__init__` imports `pkg_resources`, which modern setuptools no longer provides)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the dlib backend needs the `face_recognition_models` package (pip install "
            "face-recognition-models); it ships " + ", ".join(MODEL_FILES.values()) + "."
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    missing = [f for f in MODEL_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise ModelNotFoundError(f"dlib model files missing from {folder}: {', '.join(missing)}.")
    return folder


def kps_from_68(landmarks: np.ndarray) -> np.ndarray:
    """5 ArcFace-order keypoints `[5, 2]` from dlib's 68 landmarks `[68, 2]`: eye centres (mean
    of points 36-41 and 42-47: the eye on the image's left first), nose tip 30, mouth corners 48, 54."""
    lm = np.asarray(landmarks, dtype=np.float32)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


class DlibFaceAnalyzer(FaceAnalyzer):
    """dlib detector + 68-point shape predictor + ResNet 128-d descriptor.

    Args:
        upsample: HOG upsampling passes (each doubles the image; finds smaller faces, slower).
        hog_threshold: HOG score threshold (dlib's default 0 lets through weak false positives,
            e.g. on the astronaut photo's badge; real faces score about 0.8 and above).
        cnn_fallback: when HOG finds nothing, run dlib's CNN (MMOD) detector, which finds
            small and turned faces HOG misses, on a copy at most `cnn_max_side` pixels (a few
            seconds on CPU at 720; MMOD finds faces down to about 80 px at that scale).
        num_jitters: descriptor jitters (1 = dlib's default; 10+ is slightly more stable).
    """

    name = "dlib"
    embedding_model = "dlib_resnet_v1"
    embedding_dim = 128

    def __init__(self, upsample: int = 1, hog_threshold: float = 0.3, cnn_fallback: bool = True, cnn_max_side: int = 720,
                 num_jitters: int = 1, cache_size: int = 256):
        super().__init__(cache_size)
        import dlib  # native extension, ~1 s to import: only when this backend is built

        folder = dlib_model_dir()
        self._dlib = dlib
        self.upsample = upsample
        self.hog_threshold = hog_threshold
        self.cnn_fallback = cnn_fallback
        self.cnn_max_side = cnn_max_side
        self.num_jitters = num_jitters
        self._hog = dlib.get_frontal_face_detector()
        self._cnn = None
        self._cnn_path = folder / MODEL_FILES["cnn_detector"]
        self._shape = dlib.shape_predictor(str(folder / MODEL_FILES["landmarks"]))
        self._recognizer = dlib.face_recognition_model_v1(str(folder / MODEL_FILES["recognition"]))

    def _boxes(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        rects, scores, _ = self._hog.run(image, self.upsample, self.hog_threshold)
        boxes = [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]
        if boxes or not self.cnn_fallback:
            return boxes
        if self._cnn is None:
            self._cnn = self._dlib.cnn_face_detection_model_v1(str(self._cnn_path))
        scale = min(1.0, self.cnn_max_side / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        logger.debug("HOG found no face; running the CNN detector at scale %.2f", scale)
        return [
            (tuple(v / scale for v in (d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom())), float(d.confidence))
            for d in self._cnn(small, 0)
        ]

    def _detect(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        faces = []
        for (x1, y1, x2, y2), score in self._boxes(image):
            rect = self._dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2)))
            shape = self._shape(image, rect)
            landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            descriptor = np.array(self._recognizer.compute_face_descriptor(image, shape, self.num_jitters), dtype=np.float32)
            faces.append(Face(
                bbox=np.clip([x1, y1, x2, y2], 0, [width, height, width, height]),
                score=score,
                kps=kps_from_68(landmarks),
                image_size=(width, height),
                landmarks=landmarks,
                embedding=descriptor,
                embedding_model=self.embedding_model,
            ))
        return faces
