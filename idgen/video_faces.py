"""Edit every tracked face of a video (face swap, restoration) and write it back with its audio.

Two passes over the file, so memory stays bounded for long videos:
1. decode frame by frame, detect faces (only the `Face` records are kept), link them into tracks,
   fill short gaps and smooth the keypoints over time (`idgen.face.tracking`);
2. decode again; for each batch of frames, align each tracked face to a crop, call the user's
   `process_crops(jobs)`, paste the results back with a feathered mask, and encode; frames without
   a face are written as decoded, untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .errors import IdgenError
from .face import align_face, paste_back, transform_points
from .face.tracking import TrackedFace, track_faces
from .video import PathLike, probe_video, read_frames, write_video

logger = logging.getLogger(__name__)


@dataclass
class CropJob:
    """One face of one frame, aligned: `crop` `[S, S, 3]` uint8, `matrix`/`inverse` `[2, 3]`
    (frame -> crop and back), `kps` `[5, 2]` in crop pixels, and its `track`."""

    frame_index: int
    track: TrackedFace
    crop: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray
    kps: np.ndarray


@dataclass
class VideoReport:
    """What `process_video` did: frame counts, faces per frame, tracks, and notes."""

    frames: int = 0
    frames_with_faces: int = 0
    faces_per_frame: list[int] = field(default_factory=list)
    tracks: int = 0
    notes: list[str] = field(default_factory=list)
    fps: float = 0.0
    has_audio: bool = False

    @property
    def frames_passed_through(self) -> int:
        return self.frames - self.frames_with_faces


def _batches(iterator: Iterator, size: int) -> Iterator[list]:
    while batch := list(islice(iterator, size)):
        yield batch


def process_video(
    input_path: PathLike,
    output_path: PathLike,
    process_crops: Callable[[Sequence[CropJob]], Sequence[np.ndarray]],
    *,
    analyzer=None,
    crop_size: int = 512,
    align_mode: str = "ffhq",
    batch_size: int = 8,
    mask_for: Optional[Callable[[CropJob], np.ndarray]] = None,
    feather: int = 8,
    max_missing: int = 5,
    smooth_sigma: float = 1.0,
    min_face_size: int = 0,
    crf: int = 18,
    progress: bool = True,
) -> VideoReport:
    """Run `process_crops` on every tracked face of `input_path` and write `output_path` (H.264 MP4,
    the input's fps and audio).

    Args:
        process_crops: takes the `CropJob`s of a batch of frames, returns the edited crops (same
            order, `[S, S, 3]` uint8).
        analyzer: an `idgen.face.FaceAnalyzer` (default: `get_face_analyzer()`).
        crop_size / align_mode: the aligned crop (`idgen.face.align_face`).
        batch_size: frames decoded, processed and pasted per step.
        mask_for: the paste-back mask `[S, S]` in [0, 1] of a job (default: the whole crop with a
            feathered border).
        max_missing / smooth_sigma: see `idgen.face.track_faces` (frames).
        min_face_size: tracks whose median box width is below this (pixels) are not processed.
        progress: a tqdm bar over the frames.
    """
    from tqdm.auto import tqdm

    if analyzer is None:
        from .face import get_face_analyzer

        analyzer = get_face_analyzer()
    info = probe_video(input_path)
    report = VideoReport(fps=float(info.fps), has_audio=info.has_audio)

    # 1. detect and track (Face records only)
    detections = [analyzer.detect(frame)
                  for frame in tqdm(read_frames(input_path), total=info.num_frames, desc="faces", disable=not progress)]
    per_frame, notes = track_faces(detections, max_missing=max_missing, smooth_sigma=smooth_sigma)
    report.notes.extend(notes)
    widths: dict[int, list[float]] = {}
    for faces in per_frame:
        for tf in faces:
            widths.setdefault(tf.track_id, []).append(float(tf.bbox[2] - tf.bbox[0]))
    small = {tid for tid, w in widths.items() if np.median(w) < min_face_size}
    for tid in sorted(small):
        report.notes.append(f"track {tid}: face {np.median(widths[tid]):.0f} px wide (< {min_face_size}): not processed")
    report.tracks = len(widths)

    # 2. edit and write
    def edited_frames() -> Iterator[np.ndarray]:
        bar = tqdm(total=len(per_frame), desc="frames", disable=not progress)
        index = 0
        for batch in _batches(read_frames(input_path), batch_size):
            jobs = []
            for offset, frame in enumerate(batch):
                for tf in per_frame[index + offset] if index + offset < len(per_frame) else []:
                    if tf.track_id in small:
                        continue
                    aligned = align_face(frame, tf.kps, size=crop_size, mode=align_mode)
                    jobs.append(CropJob(index + offset, tf, aligned.image, aligned.matrix, aligned.inverse,
                                        transform_points(tf.kps, aligned.matrix).astype(np.float32)))
            results = list(process_crops(jobs)) if jobs else []
            if len(results) != len(jobs):
                raise IdgenError(f"process_crops returned {len(results)} crops for {len(jobs)} jobs.")
            out = list(batch)
            for job, crop in zip(jobs, results):
                k = job.frame_index - index
                mask = mask_for(job) if mask_for is not None else None
                out[k] = paste_back(out[k], np.asarray(crop, np.uint8), job.inverse, mask=mask, feather=feather)
            for k in range(len(batch)):
                count = sum(1 for j in jobs if j.frame_index == index + k)
                report.faces_per_frame.append(count)
                report.frames_with_faces += count > 0
            index += len(batch)
            bar.update(len(batch))
            yield from out
        bar.close()

    report.frames = write_video(output_path, edited_frames(), info.fps,
                                audio_from=input_path if info.has_audio else None, crf=crf)
    return report
