"""Occlusion masks of a face crop: what hides the face (a hand, a microphone, a scarf).

Two sources:

- `OcclusionModel`: an XSeg occluder ONNX model as facefusion runs them (`face_masker.py`:
  `create_occlusion_mask`; the DeepFaceLab XSeg exports `dfl_xseg.onnx` (facefusion 3.0) and
  `xseg_1.onnx` / `xseg_2.onnx` / `xseg_3.onnx` (3.1+), all 256 x 256). The pre- and
  post-processing are facefusion's: the crop (BGR, as facefusion's OpenCV frames) is resized to the
  graph's input size with `cv2.resize` (bilinear), scaled to [0, 1] and fed NHWC `[1, H, W, 3]`
  float32; the output `[1, H, W, 1]` (1 = visible face) is clipped to [0, 1], resized back
  (bilinear), the masks of several models are combined with a minimum, and the result is blurred
  with a Gaussian of sigma 5 and stretched with `(clip(m, 0.5, 1) - 0.5) * 2`.
- `occlusion_from_parsing`: without an occluder model, from `FaceParser` labels: inside the face
  region, whatever the parser does not call a part of the head (a hand is background or cloth to
  it) is an occluder.

Both return float32 `[H, W]` in [0, 1] with 1 = occluded; `OcclusionModel.visible_mask` returns
facefusion's own mask (1 = visible face), which is `1 - occlusion_mask`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import cv2
import numpy as np

from idgen.errors import CheckpointError, ModelNotFoundError
from idgen.face.parsing.labels import Names, label_ids, label_mask
from idgen.validation import InvalidArgumentError

#: facefusion's occluder models (facefusion-assets releases models-3.0.0 / models-3.1.0 / models-3.2.0).
OCCLUDER_FILES = ("xseg_1.onnx", "xseg_2.onnx", "xseg_3.onnx", "dfl_xseg.onnx")
OCCLUDER_SOURCE = "https://github.com/facefusion/facefusion-assets/releases (models-3.1.0: xseg_1.onnx, xseg_2.onnx)"
#: facefusion's model size for every XSeg occluder; used when the graph's input size is dynamic.
DEFAULT_SIZE = (256, 256)
#: facefusion's mask smoothing: Gaussian sigma in pixels of the crop.
BLUR_SIGMA = 5.0
#: Parser classes that belong to the head: inside the face region, every other label (background,
#: cloth) is an occluder.
HEAD_CLASSES = ("face", "ears", "glasses", "earrings", "hair", "hat", "neck", "necklace")


def soften(mask: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """facefusion's mask smoothing: `(clip(GaussianBlur(clip(mask, 0, 1), sigma), 0.5, 1) - 0.5) * 2`.

    `[H, W]` float in [0, 1] -> float32 `[H, W]` in [0, 1]; the edge stays where the blurred mask
    crosses 0.5, and the transition is about 2 sigma wide, inside the mask."""
    mask = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    if sigma > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return ((np.clip(mask, 0.5, 1.0) - 0.5) * 2.0).astype(np.float32)


def _check_crop(crop) -> np.ndarray:
    array = np.asarray(crop)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or min(array.shape[:2]) < 1:
        raise InvalidArgumentError(f"the face crop must be a [H, W, 3] uint8 RGB array, got {array.dtype} of shape {array.shape}.")
    return array


class OcclusionModel:
    """One or several XSeg occluder ONNX models (NHWC `[1, H, W, 3]` in, `[1, H, W, 1]` out).

    Args:
        sessions: onnxruntime `InferenceSession`s (`from_file` / `from_files` make them).
        sigma: the final blur (facefusion: 5 pixels of the crop; 0 leaves the mask unblurred).
    """

    def __init__(self, sessions: Sequence[object], sigma: float = BLUR_SIGMA):
        self.sessions = list(sessions)
        self.sigma = sigma
        self.sizes = [self._input_size(s) for s in self.sessions]

    @staticmethod
    def _input_size(session) -> tuple[int, int]:
        """(width, height) for `cv2.resize`, from the graph's NHWC input shape."""
        inp = session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[3] != 3:
            raise CheckpointError(
                f"occluder model input {inp.name!r} has shape {shape}; facefusion's XSeg occluders take "
                "NHWC [1, H, W, 3] float32 images."
            )
        height, width = shape[1], shape[2]
        if not (isinstance(height, int) and isinstance(width, int)):
            return DEFAULT_SIZE
        return (width, height)

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike], providers: Optional[list[str]] = None,
                  sigma: float = BLUR_SIGMA) -> "OcclusionModel":
        """Load one occluder (`xseg_1.onnx`, `dfl_xseg.onnx`...; a file, or a folder holding one).

        Raises:
            ModelNotFoundError: no such file (the message names the files and where to get them).
            CheckpointError: the file is not a readable ONNX model, or not NHWC `[1, H, W, 3]`.
        """
        return cls.from_files([path], providers=providers, sigma=sigma)

    @classmethod
    def from_files(cls, paths: Iterable[Union[str, os.PathLike]], providers: Optional[list[str]] = None,
                   sigma: float = BLUR_SIGMA) -> "OcclusionModel":
        """Several occluders whose masks combine with a minimum (facefusion's `'many'`)."""
        import onnxruntime

        sessions = []
        for path in paths:
            file = _find_occluder(Path(path).expanduser())
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            try:
                session = onnxruntime.InferenceSession(str(file), options, providers=providers or _default_providers(onnxruntime))
            except Exception as e:  # onnxruntime raises InvalidProtobuf, Fail, ... for foreign files
                raise CheckpointError(
                    f"occluder model {str(file)!r} could not be read as an ONNX model "
                    f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})."
                ) from None
            sessions.append(session)
        if not sessions:
            raise InvalidArgumentError("OcclusionModel.from_files needs at least one file.")
        return cls(sessions, sigma=sigma)

    def raw_mask(self, crop: np.ndarray) -> np.ndarray:
        """facefusion's mask before smoothing: float32 `[H, W]` in [0, 1], 1 = visible face; the
        minimum over the models."""
        crop = _check_crop(crop)
        bgr = np.ascontiguousarray(crop[:, :, ::-1])  # facefusion's frames are OpenCV BGR
        masks = []
        for session, size in zip(self.sessions, self.sizes):
            x = cv2.resize(bgr, size)[None].astype(np.float32) / 255.0
            out = session.run(None, {session.get_inputs()[0].name: x})[0][0]
            out = np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
            mask = cv2.resize(out, (crop.shape[1], crop.shape[0]))
            masks.append(mask.reshape(crop.shape[:2]))
        return np.minimum.reduce(masks)

    def visible_mask(self, crop: np.ndarray) -> np.ndarray:
        """facefusion's `create_occlusion_mask` of a `[H, W, 3]` uint8 RGB crop: float32 `[H, W]` in
        [0, 1], 1 = visible face."""
        return soften(self.raw_mask(crop), self.sigma)

    def occlusion_mask(self, crop: np.ndarray) -> np.ndarray:
        """float32 `[H, W]` in [0, 1] of a `[H, W, 3]` uint8 RGB crop, 1 = the face is hidden there
        (`1 - visible_mask`).

        Raises:
            InvalidArgumentError: `crop` is not `[H, W, 3]` uint8.
        """
        return 1.0 - self.visible_mask(crop)


def _default_providers(onnxruntime) -> list[str]:
    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _find_occluder(path: Path) -> Path:
    if path.is_file():
        return path
    for name in OCCLUDER_FILES if path.is_dir() else ():
        if (path / name).is_file():
            return path / name
    raise ModelNotFoundError(
        f"no occluder model at {str(path)!r}: expected one of {', '.join(OCCLUDER_FILES)} (or a folder "
        f"holding one), from {OCCLUDER_SOURCE}. Without one, use occlusion_from_parsing with a FaceParser."
    )


def _region_mask(face_region, shape: tuple[int, int]) -> np.ndarray:
    array = np.asarray(face_region)
    if array.shape == (4,):
        x0, y0, x1, y1 = (int(round(float(v))) for v in array)
        region = np.zeros(shape, dtype=bool)
        region[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        return region
    if array.shape != shape:
        raise InvalidArgumentError(
            f"face_region must be a box (x0, y0, x1, y1) or a [H, W] mask of the labels' shape {shape}, "
            f"got shape {array.shape}."
        )
    return array.astype(np.float32) > 0.5 if array.dtype != bool else array


def occlusion_from_parsing(labels: np.ndarray, face_region, visible: Names = HEAD_CLASSES) -> np.ndarray:
    """Occluders from a parsing: inside `face_region`, pixels whose label is not in `visible`.

    Args:
        labels: `[H, W]` integer labels (`FaceParser.parse`).
        face_region: where the face is: a box `(x0, y0, x1, y1)` in pixels (x1, y1 exclusive) or a
            `[H, W]` mask (bool, or float in [0, 1] thresholded at 0.5), e.g. a landmark hull.
        visible: class or group names that are part of the head and never occluders (default
            `HEAD_CLASSES`: so background and cloth inside the region are).

    Returns:
        float32 `[H, W]` in {0, 1}, 1 = occluded; 0 outside the region. Smooth it with `soften`.
        A box reaches past a round face: background in its corners is marked too, which is harmless
        where the mask cuts a face mask.

    Raises:
        InvalidArgumentError: `labels` is not `[H, W]` or `face_region` has another shape.
        IdgenError: an unknown class name in `visible`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InvalidArgumentError(f"labels must be an [H, W] label map, got shape {labels.shape}.")
    region = _region_mask(face_region, labels.shape)
    return (region & ~np.isin(labels, label_ids(visible))).astype(np.float32)


def face_hull(mask: np.ndarray) -> np.ndarray:
    """The filled convex hull `[S, S]` float in {0, 1} of a face mask: the face's area including
    what covers part of it (a hand over the mouth parses as background, a hole in the mask)."""
    points = cv2.findNonZero((mask > 0.5).astype(np.uint8))
    hull = np.zeros(mask.shape, np.uint8)
    if points is not None:
        cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return hull.astype(np.float32)


def face_occlusion(crop: np.ndarray, labels: Optional[np.ndarray] = None,
                   occluder: Optional["OcclusionModel"] = None) -> np.ndarray:
    """What covers the face of an aligned `crop` (`[S, S, 3]` uint8): float32 `[S, S]` in [0, 1],
    1 = occluded. The occluder model's mask when one is given, else `occlusion_from_parsing` of the
    crop's `labels` inside the hull of its face classes (the "face" group: skin, brows, eyes,
    nose, mouth, lips), so a hand over the mouth, a hole in the parsed face, counts.

    Raises:
        InvalidArgumentError: neither an occluder nor `labels`.
    """
    if occluder is not None:
        return np.asarray(occluder.occlusion_mask(crop), np.float32)
    if labels is None:
        raise InvalidArgumentError("face_occlusion needs an occluder model or the crop's parsing labels.")
    return occlusion_from_parsing(labels, face_hull(label_mask(labels, include="face", exclude=())))
