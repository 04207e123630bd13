"""Face tracks across video frames: association (box IoU + identity), gap filling, smoothing.

Offline: the detections of the whole clip are known (`idgen.video_faces` detects in a first pass,
storing only `Face` records), so smoothing is a centred Gaussian over each track — no lag, unlike
the causal filters (One-Euro) a live stream needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import linear_sum_assignment

from .analyzer import identity_similarity
from .types import Face


@dataclass
class TrackedFace:
    """One face of one frame: `bbox` `[4]` and `kps` `[5, 2]` (smoothed, pixels), the detection
    (`face`, None when the frame's box/keypoints were interpolated over a short gap)."""

    track_id: int
    frame_index: int
    bbox: np.ndarray
    kps: np.ndarray
    face: Optional[Face] = None

    @property
    def interpolated(self) -> bool:
        return self.face is None


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two `(x1, y1, x2, y2)` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _score(track_face: Face, face: Face, iou_threshold: float, identity_threshold: float) -> float:
    """Match score in [0, 2] (0 = not the same face): IoU, plus the identity similarity when both
    faces have embeddings (which keeps crossing faces apart and re-finds a face that moved fast)."""
    iou = box_iou(track_face.bbox, face.bbox)
    sim = None
    if track_face.embedding is not None and face.embedding is not None:
        sim = identity_similarity(track_face.embedding, face.embedding)
    if sim is not None and sim < identity_threshold:
        return 0.0
    if iou < iou_threshold and (sim is None or iou <= 0.0):
        return 0.0
    return iou + (sim if sim is not None else 0.0)


def track_faces(detections: Sequence[Sequence[Face]], *, iou_threshold: float = 0.3,
                identity_threshold: float = -1.0, max_missing: int = 5,
                smooth_sigma: float = 1.0) -> tuple[list[list[TrackedFace]], list[str]]:
    """Link per-frame detections into tracks.

    Args:
        detections: for each frame, its detected `Face`s.
        iou_threshold: minimum box IoU between a track's last face and a detection.
        identity_threshold: minimum embedding cosine for a match when both have embeddings
            (-1 = identity only ranks candidates; raise it for crowds).
        max_missing: a track survives this many frames without a detection; shorter gaps are
            filled by linear interpolation, longer ones end the track.
        smooth_sigma: Gaussian sigma in frames for the boxes and keypoints (0 = raw).

    Returns:
        `(per_frame, notes)`: for each frame the `TrackedFace`s in it, and notes such as
        "track 0: face lost for 2 frames (3-4), interpolated".
    """
    tracks: list[dict] = []  # {"id", "frames": [int], "faces": [Face]}
    for t, faces in enumerate(detections):
        alive = [tr for tr in tracks if t - tr["frames"][-1] <= max_missing + 1]
        matched = set()
        if alive and faces:
            scores = np.array([[_score(tr["faces"][-1], f, iou_threshold, identity_threshold) for f in faces] for tr in alive])
            rows, cols = linear_sum_assignment(-scores)
            for r, c in zip(rows, cols):
                if scores[r, c] > 0:
                    alive[r]["frames"].append(t)
                    alive[r]["faces"].append(faces[c])
                    matched.add(c)
        for c, face in enumerate(faces):
            if c not in matched:
                tracks.append({"id": len(tracks), "frames": [t], "faces": [face]})

    per_frame: list[list[TrackedFace]] = [[] for _ in detections]
    notes = []
    for tr in tracks:
        frames = np.array(tr["frames"])
        span = np.arange(frames[0], frames[-1] + 1)
        boxes = np.stack([np.asarray(f.bbox, np.float64) for f in tr["faces"]])
        kps = np.stack([np.asarray(f.kps, np.float64).reshape(-1) for f in tr["faces"]])
        boxes = np.stack([np.interp(span, frames, boxes[:, j]) for j in range(4)], axis=1)
        kps = np.stack([np.interp(span, frames, kps[:, j]) for j in range(kps.shape[1])], axis=1)
        if smooth_sigma > 0 and len(span) > 1:
            boxes = gaussian_filter1d(boxes, smooth_sigma, axis=0, mode="nearest")
            kps = gaussian_filter1d(kps, smooth_sigma, axis=0, mode="nearest")
        by_frame = dict(zip(tr["frames"], tr["faces"]))
        for gap_start, gap_end in _gaps(tr["frames"]):
            notes.append(f"track {tr['id']}: face lost for {gap_end - gap_start + 1} frames "
                         f"({gap_start}-{gap_end}), interpolated")
        for i, t in enumerate(span):
            per_frame[t].append(TrackedFace(tr["id"], int(t), boxes[i].astype(np.float32),
                                            kps[i].reshape(-1, 2).astype(np.float32), by_frame.get(int(t))))
    return per_frame, notes


def _gaps(frames: list[int]) -> list[tuple[int, int]]:
    return [(a + 1, b - 1) for a, b in zip(frames, frames[1:]) if b - a > 1]
