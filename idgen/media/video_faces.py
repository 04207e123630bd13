"""Edit every face of a video or a photo (face swap, restoration) through aligned crops.

The caller gives `process_batch(jobs) -> crops`: it edits aligned face crops and knows nothing of
frames, tracks or pasting. `process_video` runs it over a video in two passes, so memory stays
bounded for long videos (smoothing is centred over the whole track, at the cost of decoding twice):

1. decode frame by frame, detect faces (only the `Face` records are kept), link them into tracks,
   fill short gaps and smooth boxes and keypoints over time (`idgen.face.tracking`);
2. decode again; for each batch of frames, align every tracked face to a crop, call
   `process_batch`, paste the results back through the inverse transform with a feathered mask,
   and encode (H.264 MP4 with the input's fps and audio). Frames without a face are written as
   decoded, bit for bit (before encoding).

`process_image_faces` does the same for the faces of one photo.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np

from tqdm.auto import tqdm

from idgen.errors import FaceNotFoundError, IdgenError
from idgen.face import Face, align_face, get_face_analyzer, identity_similarity, paste_back, transform_points
from idgen.face.tracking import TrackedFace, track_faces
from idgen.image_io import ImageInput, load_image
from idgen.media.video import PathLike, VideoWriter, probe_video, read_frames

#: Which faces to process: "all", "largest" (the main face: for a video the track with the most
#: face area over time), "reference" (closest identity to `reference`), or an int index into the
#: largest-first order.
Selection = Union[str, int]


@dataclass
class AlignedCropJob:
    """One face of one frame, aligned for `process_batch`.

    Attributes:
        frame_index: the frame (0 for a photo).
        track_id: the face's track (for a photo: its index, faces numbered left to right).
        crop: `[S, S, 3]` uint8 RGB aligned face.
        matrix / inverse: `[2, 3]` affine frame -> crop and crop -> frame (pixels).
        kps_in_crop: `[5, 2]` keypoints in crop pixels (smoothed over time in a video).
        face: the detection, None when this frame's face was interpolated over a short gap.
        track: the `TrackedFace` (smoothed `bbox`/`kps` in frame pixels).
    """

    frame_index: int
    track_id: int
    crop: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray
    kps_in_crop: np.ndarray
    face: Optional[Face]
    track: TrackedFace

    @property
    def interpolated(self) -> bool:
        return self.face is None

    @property
    def kps(self) -> np.ndarray:
        """`kps_in_crop` (the name `FaceSwapper.swap_video` reads)."""
        return self.kps_in_crop


ProcessBatch = Callable[[list[AlignedCropJob]], Sequence[np.ndarray]]
MaskFor = Callable[[AlignedCropJob], np.ndarray]
#: Per-frame progress: True (tqdm bars), False (none), or `callable(done, total)` called after each
#: frame of each pass (an exception it raises, e.g. `idgen.jobs.JobCancelled`, stops the video).
Progress = Union[bool, Callable[[int, Optional[int]], None]]


@dataclass
class VideoReport:
    """What `process_video` did: frames written, faces processed per frame, tracks found and
    processed, faces interpolated over gaps, and notes (gaps, skipped tracks)."""

    frames: int = 0
    frames_with_faces: int = 0
    faces_per_frame: list[int] = field(default_factory=list)
    tracks: int = 0
    tracks_processed: int = 0
    interpolated_faces: int = 0
    notes: list[str] = field(default_factory=list)
    fps: float = 0.0
    has_audio: bool = False

    @property
    def frames_passed_through(self) -> int:
        """Frames written as decoded (no face processed in them)."""
        return self.frames - self.frames_with_faces


def require_processed_faces(report: VideoReport, video) -> None:
    """Raise FaceNotFoundError when a video job processed no face at all: its output would be a
    plain copy of the input, which must not pass for a result."""
    if report.tracks_processed == 0:
        why = f" ({'; '.join(report.notes)})" if report.notes else ""
        raise FaceNotFoundError(f"no face was processed in any of the {report.frames} frames of {video}{why}: "
                                "nothing was written. Check that the video shows a face large enough to detect.")


def _select(candidates: list[tuple[int, float, Optional[np.ndarray]]], select: Selection, reference) -> list[int]:
    """Ids chosen among `(id, weight, embedding)` candidates; `weight` orders them largest first."""
    if select == "all":
        return [c[0] for c in candidates]
    if not candidates:
        return []
    ordered = sorted(candidates, key=lambda c: -c[1])
    if select == "largest":
        return [ordered[0][0]]
    if select == "reference":
        ref = reference.embedding if isinstance(reference, Face) else reference
        if ref is None or any(c[2] is None for c in candidates):
            raise IdgenError("select='reference' needs `reference` (a Face or an embedding) and faces with embeddings.")
        ref = np.asarray(ref, np.float32).reshape(-1)
        if ref.shape != candidates[0][2].shape:
            raise IdgenError(f"reference embedding has shape {ref.shape}, the faces' {candidates[0][2].shape}; "
                             "use the same face backend for both.")
        return [max(candidates, key=lambda c: identity_similarity(c[2], ref))[0]]
    if isinstance(select, (int, np.integer)) and not isinstance(select, bool):
        if not -len(ordered) <= select < len(ordered):
            raise IdgenError(f"face index {select} is out of range: {len(ordered)} face(s) found.")
        return [ordered[select][0]]
    raise IdgenError(f"select must be 'all', 'largest', 'reference' or an int, got {select!r}.")


def _align(frame: np.ndarray, faces: Sequence[TrackedFace], crop_size: int, align_mode: str) -> list[AlignedCropJob]:
    jobs = []
    for tf in faces:
        aligned = align_face(frame, tf.kps, size=crop_size, mode=align_mode)
        jobs.append(AlignedCropJob(tf.frame_index, tf.track_id, aligned.image, aligned.matrix, aligned.inverse,
                                   transform_points(tf.kps, aligned.matrix).astype(np.float32), tf.face, tf))
    return jobs


def _process(jobs: list[AlignedCropJob], process_batch: ProcessBatch) -> list[np.ndarray]:
    """`process_batch(jobs)`, checked: one uint8 crop of each job's shape, in order."""
    if not jobs:
        return []
    results = list(process_batch(jobs))
    if len(results) != len(jobs):
        raise IdgenError(f"process_batch returned {len(results)} crops for {len(jobs)} jobs.")
    for job, crop in zip(jobs, results):
        crop = np.asarray(crop)
        if crop.shape != job.crop.shape or crop.dtype != np.uint8:
            raise IdgenError(f"process_batch returned a {crop.dtype} {tuple(crop.shape)} crop for frame "
                             f"{job.frame_index}, track {job.track_id}; expected uint8 {tuple(job.crop.shape)}.")
    return [np.asarray(r) for r in results]


def _paste(frame: np.ndarray, jobs: Sequence[AlignedCropJob], crops: Sequence[np.ndarray],
           mask_for: Optional[MaskFor], feather: int) -> np.ndarray:
    for job, crop in zip(jobs, crops):
        frame = paste_back(frame, crop, job.inverse, mask=mask_for(job) if mask_for is not None else None,
                           feather=feather)
    return frame


def process_image_faces(
    image: ImageInput,
    process_batch: ProcessBatch,
    *,
    analyzer=None,
    crop_size: int = 512,
    align_mode: str = "ffhq",
    select: Selection = "all",
    reference=None,
    min_face_size: int = 0,
    mask_for: Optional[MaskFor] = None,
    feather: int = 8,
) -> tuple[np.ndarray, list[AlignedCropJob]]:
    """Run `process_batch` once on the aligned crops of a photo's faces and paste the results back.

    Args:
        image: the photo (path, PIL, array; `idgen.image_io.load_image`).
        process_batch: takes the jobs (faces left to right, `track_id` = that index), returns the
            edited crops `[S, S, 3]` uint8, same order.
        select / reference: which faces (see `Selection`).
        min_face_size: faces narrower than this (pixels) are left alone.
        mask_for: the paste-back mask `[S, S]` in [0, 1] of a job (default: the whole crop with
            a feathered border); `feather` in crop pixels.

    Returns:
        `(image [H, W, 3] uint8, jobs)`: the edited photo and the jobs processed; a photo without
        (selected) faces comes back unchanged with no jobs.
    """
    if analyzer is None:
        analyzer = get_face_analyzer()
    pixels = load_image(image)
    faces = sorted((f for f in analyzer.detect(pixels) if f.width >= min_face_size), key=lambda f: float(f.bbox[0]))
    chosen = set(_select([(i, f.area, f.embedding) for i, f in enumerate(faces)], select, reference))
    tracked = [TrackedFace(i, 0, f.bbox, f.kps, f) for i, f in enumerate(faces) if i in chosen]
    jobs = _align(pixels, tracked, crop_size, align_mode)
    return _paste(pixels, jobs, _process(jobs, process_batch), mask_for, feather), jobs


@contextmanager
def _frame_progress(progress: Progress, total: Optional[int], desc: str) -> Iterator[Callable[[int], None]]:
    """An `advance(frames)` function for one pass over the frames (see `Progress`)."""
    if callable(progress):
        done = 0

        def advance(frames: int) -> None:
            nonlocal done
            done += frames
            progress(done, total)

        yield advance
        return
    with tqdm(total=total, desc=desc, disable=not progress) as bar:
        yield bar.update


def _batches(iterator: Iterator, size: int) -> Iterator[list]:
    while batch := list(islice(iterator, size)):
        yield batch


def process_video(
    input_path: PathLike,
    output_path: PathLike,
    process_batch: ProcessBatch,
    *,
    analyzer=None,
    batch_size: int = 8,
    crop_size: int = 512,
    align_mode: str = "ffhq",
    select: Selection = "all",
    reference=None,
    min_face_size: int = 0,
    mask_for: Optional[MaskFor] = None,
    feather: int = 8,
    max_missing: int = 5,
    smooth_sigma: float = 1.0,
    identity_threshold: Optional[float] = None,
    crf: int = 18,
    progress: Progress = True,
    provenance=None,
) -> VideoReport:
    """Run `process_batch` on every tracked face of `input_path` and write `output_path` (H.264
    MP4 with the input's fps and audio; any frame size and aspect ratio).

    Args:
        process_batch: takes the `AlignedCropJob`s of `batch_size` consecutive frames (frame
            order, then track id), returns the edited crops (same order, `[S, S, 3]` uint8).
        analyzer: an `idgen.face.FaceAnalyzer` (default: `get_face_analyzer()`).
        crop_size / align_mode: the aligned crop (`idgen.face.align_face`).
        select / reference: which tracks (see `Selection`).
        min_face_size: tracks whose median box width is below this (pixels) are left alone.
        mask_for / feather: as in `process_image_faces`.
        max_missing / smooth_sigma / identity_threshold: tracking (`idgen.face.FaceTracker`;
            frames): a face lost for up to `max_missing` frames is interpolated and processed in
            them too; a longer loss starts a new track.
        crf: x264 quality of the output.
        progress: tqdm bars over the frames of both passes, or a callable (see `Progress`).
        provenance: an `idgen.provenance.Provenance`: every frame watermarked, the manifest in the
            MP4's metadata (see `VideoWriter`).
    """

    if batch_size < 1:
        raise IdgenError(f"batch_size must be >= 1, got {batch_size}.")
    if analyzer is None:
        analyzer = get_face_analyzer()
    info = probe_video(input_path)
    report = VideoReport(fps=float(info.fps), has_audio=info.has_audio)

    # 1. detect and track (Face records only)
    detections = []
    with _frame_progress(progress, info.num_frames, "detecting faces") as advance:
        for frame in read_frames(input_path):
            detections.append(analyzer.detect(frame))
            advance(1)
    tracking = track_faces(detections, max_missing=max_missing, smooth_sigma=smooth_sigma,
                           identity_threshold=identity_threshold)
    report.tracks = tracking.num_tracks
    report.notes.extend(tracking.notes)
    per_frame = tracking.per_frame
    chosen = _chosen_tracks(per_frame, select, reference, min_face_size, report.notes)
    report.tracks_processed = len(chosen)

    # 2. edit and write
    def tracked_at(t: int) -> list[TrackedFace]:
        return [tf for tf in (per_frame[t] if t < len(per_frame) else []) if tf.track_id in chosen]

    writer = VideoWriter(output_path, info.fps, (info.width, info.height), crf=crf,
                         audio_from=input_path if info.has_audio else None, provenance=provenance)
    with writer, _frame_progress(progress, len(per_frame), "processing frames") as advance:
        start = 0
        for batch in _batches(read_frames(input_path), batch_size):
            frame_jobs = [_align(frame, tracked_at(start + k), crop_size, align_mode) for k, frame in enumerate(batch)]
            jobs = [job for mine in frame_jobs for job in mine]
            crops = iter(_process(jobs, process_batch))
            for frame, mine in zip(batch, frame_jobs):
                writer.write(_paste(frame, mine, [next(crops) for _ in mine], mask_for, feather))
                report.faces_per_frame.append(len(mine))
                report.frames_with_faces += bool(mine)
                advance(1)
            report.interpolated_faces += sum(job.interpolated for job in jobs)
            start += len(batch)
    report.frames = writer.frames_written
    return report


def _chosen_tracks(per_frame: list[list[TrackedFace]], select: Selection, reference, min_face_size: int,
                   notes: list[str]) -> set[int]:
    """The track ids to process: `select` among the tracks at least `min_face_size` wide (median
    box width, pixels); the others are noted."""
    widths: dict[int, list[float]] = {}
    area: dict[int, float] = {}
    identity: dict[int, list[np.ndarray]] = {}
    for faces in per_frame:
        for tf in faces:
            w, h = float(tf.bbox[2] - tf.bbox[0]), float(tf.bbox[3] - tf.bbox[1])
            widths.setdefault(tf.track_id, []).append(w)
            area[tf.track_id] = area.get(tf.track_id, 0.0) + w * h
            if tf.face is not None and tf.face.embedding is not None:
                identity.setdefault(tf.track_id, []).append(tf.face.normed_embedding)
    large = []
    for tid, w in widths.items():
        if np.median(w) < min_face_size:
            notes.append(f"track {tid}: face {np.median(w):.0f} px wide (< {min_face_size}): left as is")
        else:
            large.append(tid)
    candidates = [(tid, area[tid], np.mean(identity[tid], axis=0) if tid in identity else None) for tid in large]
    chosen = set(_select(candidates, select, reference))
    notes.extend(f"track {tid}: not selected ({select!r}): left as is" for tid in large if tid not in chosen)
    return chosen
