"""Face tracks across video frames: association (box IoU + identity), gap filling, smoothing.

`FaceTracker.update(faces)` links each frame's detections to tracks as they come (Hungarian
assignment, `scipy.optimize.linear_sum_assignment`, on box IoU plus identity-embedding cosine);
`FaceTracker.finish()` then smooths the finished tracks offline. The whole clip is known by then
(`idgen.media.video_faces` detects in a first pass, keeping only the `Face` records), so smoothing is a
centred Gaussian over time: no lag, unlike the causal filters (One-Euro) a live stream needs.
Units: time in frames, boxes and keypoints in frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from idgen.errors import IdgenError
from idgen.face.analyzer import identity_similarity
from idgen.face.types import Face


@dataclass
class TrackedFace:
    """One face of one frame: `bbox` `[4]` (x1, y1, x2, y2) and `kps` `[5, 2]`, smoothed, in frame
    pixels; `face` is the detection, None when the frame's box and keypoints were interpolated
    over a short gap."""

    track_id: int
    frame_index: int
    bbox: np.ndarray
    kps: np.ndarray
    face: Optional[Face] = None

    @property
    def interpolated(self) -> bool:
        return self.face is None


@dataclass
class TrackingResult:
    """`per_frame[t]`: the `TrackedFace`s of frame t (by track id); `num_tracks`; `notes` such as
    "track 0: face lost for 2 frames (3-4), interpolated"."""

    per_frame: list[list[TrackedFace]]
    num_tracks: int
    notes: list[str] = field(default_factory=list)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two `(x1, y1, x2, y2)` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Track:
    frames: list[int]
    faces: list[Face]
    identity: Optional[np.ndarray] = None  # sum of the unit embeddings: its direction is their mean's

    def add(self, frame: int, face: Face) -> None:
        self.frames.append(frame)
        self.faces.append(face)
        if face.embedding is not None:
            unit = np.asarray(face.normed_embedding, np.float64)
            if self.identity is None:
                self.identity = unit.copy()
            elif self.identity.shape == unit.shape:
                self.identity += unit


class FaceTracker:
    """Link per-frame face detections into tracks, then smooth them.

    Args:
        iou_threshold: minimum IoU between a track's last box and a detection for a match on
            position alone.
        identity_threshold: minimum cosine similarity between a track's mean identity embedding
            and a detection's. None: identity only ranks the candidates (added to the IoU), which
            keeps crossing faces apart. A number: a lower similarity forbids the match, a higher
            one allows it with any overlap (a face that moved fast). Embeddings are not comparable
            across backends: about 0.5 suits insightface's ArcFace, 0.9 dlib's.
        max_missing: a track survives this many frames without a detection; shorter gaps are
            filled by linear interpolation, longer ones end the track (a new one starts).
        smooth_sigma: Gaussian sigma in frames for boxes and keypoints (0 = raw detections).
        min_length: tracks with fewer detections are dropped as false detections (noted).
    """

    def __init__(self, iou_threshold: float = 0.3, identity_threshold: Optional[float] = None,
                 max_missing: int = 5, smooth_sigma: float = 1.0, min_length: int = 1):
        if not 0.0 < iou_threshold <= 1.0:
            raise IdgenError(f"iou_threshold must be in (0, 1], got {iou_threshold}.")
        if identity_threshold is not None and not -1.0 <= identity_threshold <= 1.0:
            raise IdgenError(f"identity_threshold must be a cosine in [-1, 1] or None, got {identity_threshold}.")
        if max_missing < 0 or smooth_sigma < 0 or min_length < 1:
            raise IdgenError(f"need max_missing >= 0, smooth_sigma >= 0 and min_length >= 1; got {max_missing}, "
                             f"{smooth_sigma}, {min_length}.")
        self.iou_threshold = iou_threshold
        self.identity_threshold = identity_threshold
        self.max_missing = max_missing
        self.smooth_sigma = smooth_sigma
        self.min_length = min_length
        self.num_frames = 0
        self._tracks: list[_Track] = []

    def _score(self, track: _Track, face: Face) -> Optional[float]:
        """Match score (higher is better), None when the pair may not match."""
        iou = box_iou(track.faces[-1].bbox, face.bbox)
        sim = None
        if track.identity is not None and face.embedding is not None and track.identity.shape == face.embedding.shape:
            sim = identity_similarity(track.identity, face.embedding)
        if sim is not None and self.identity_threshold is not None:
            if sim < self.identity_threshold:
                return None
            return iou + sim if iou > 0 else None
        if iou < self.iou_threshold:
            return None
        return iou + (sim if sim is not None else 0.0)

    def update(self, faces: Sequence[Face]) -> list[int]:
        """Add the next frame's detections; returns the track id given to each face, in order."""
        from scipy.optimize import linear_sum_assignment  # scipy: imported on use, as PyAV

        t = self.num_frames
        self.num_frames += 1
        alive = [k for k, tr in enumerate(self._tracks) if t - tr.frames[-1] <= self.max_missing + 1]
        ids: list[Optional[int]] = [None] * len(faces)
        if alive and faces:
            scores = [[self._score(self._tracks[k], f) for f in faces] for k in alive]
            allowed = np.array([[s is not None for s in row] for row in scores])
            gain = np.array([[s if s is not None else 0.0 for s in row] for row in scores])
            # forbidden pairs get a gain below any allowed assignment's, then are dropped
            rows, cols = linear_sum_assignment(np.where(allowed, gain, gain.min() - 10.0 * len(faces)), maximize=True)
            for r, c in zip(rows, cols):
                if allowed[r, c]:
                    ids[c] = alive[r]
        for c, face in enumerate(faces):
            if ids[c] is None:
                ids[c] = len(self._tracks)
                self._tracks.append(_Track([], []))
            self._tracks[ids[c]].add(t, face)
        return ids

    def finish(self) -> TrackingResult:
        """Fill each track's short gaps by linear interpolation, smooth it, and list per frame."""
        from scipy.ndimage import gaussian_filter1d  # see above

        per_frame: list[list[TrackedFace]] = [[] for _ in range(self.num_frames)]
        notes = []
        kept = [tr for tr in self._tracks if len(tr.frames) >= self.min_length]
        if len(kept) < len(self._tracks):
            notes.append(f"{len(self._tracks) - len(kept)} track(s) with fewer than {self.min_length} detections "
                         "dropped as false detections")
        for track_id, tr in enumerate(kept):
            frames = np.array(tr.frames)
            span = np.arange(frames[0], frames[-1] + 1)
            boxes = np.stack([np.asarray(f.bbox, np.float64) for f in tr.faces])
            kps = np.stack([np.asarray(f.kps, np.float64).reshape(-1) for f in tr.faces])
            boxes = np.stack([np.interp(span, frames, boxes[:, j]) for j in range(boxes.shape[1])], axis=1)
            kps = np.stack([np.interp(span, frames, kps[:, j]) for j in range(kps.shape[1])], axis=1)
            if self.smooth_sigma > 0 and len(span) > 1:
                boxes = gaussian_filter1d(boxes, self.smooth_sigma, axis=0, mode="nearest")
                kps = gaussian_filter1d(kps, self.smooth_sigma, axis=0, mode="nearest")
            for a, b in zip(tr.frames, tr.frames[1:]):
                if b - a > 1:
                    notes.append(f"track {track_id}: face lost for {b - a - 1} frames ({a + 1}-{b - 1}), interpolated")
            detected = dict(zip(tr.frames, tr.faces))
            for i, t in enumerate(span):
                per_frame[t].append(TrackedFace(track_id, int(t), boxes[i].astype(np.float32),
                                                kps[i].reshape(-1, 2).astype(np.float32), detected.get(int(t))))
        return TrackingResult(per_frame, len(kept), notes)


def track_faces(detections: Sequence[Sequence[Face]], **options) -> TrackingResult:
    """Track the per-frame `detections` of a whole clip: `FaceTracker(**options)`, one `update`
    per frame, then `finish`."""
    tracker = FaceTracker(**options)
    for faces in detections:
        tracker.update(faces)
    return tracker.finish()
