"""Check a file for idgen provenance: the metadata (manifest, XMP label) and the watermark, and
whether the two agree. `idgen verify FILE` prints this report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from idgen.errors import ImageReadError
from idgen.image_io import load_image
from idgen.provenance.metadata import read_metadata, read_video_metadata
from idgen.provenance.watermark import WatermarkResult, detect, detect_frames

#: Files read as videos (by suffix); anything else is read as an image.
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
#: Video frames checked for the watermark, spread over the first `SAMPLE_SPAN` frames.
SAMPLED_FRAMES = 5
SAMPLE_SPAN = 300
#: Id bits that may differ (from JPEG/resize damage) for the watermark to still match the manifest.
ID_MAX_BIT_ERRORS = 2


def _metadata_report(found: Optional[dict]) -> dict:
    if found is None:
        return {"found": False}
    manifest = found.get("manifest")
    xmp = found.get("xmp") or {}
    report = {"found": True, "container": found["container"], "manifest": manifest,
              "manifest_intact": found.get("manifest_intact"), "manifest_error": found.get("manifest_error"),
              "digital_source_type": (manifest or {}).get("digital_source_type") or xmp.get("digital_source_type"),
              "label": (manifest or {}).get("description") or xmp.get("description") or found.get("label")}
    return report


def _watermark_report(result: WatermarkResult, manifest: Optional[dict]) -> dict:
    report = result.to_dict()
    report["id_bit_errors"] = report["id_matches_manifest"] = None
    if result.magic_ok and manifest and isinstance(manifest.get("id"), str):
        try:
            errors = result.id_bit_errors(manifest["id"])
        except ValueError:  # a manifest id that is not 8 hex digits
            errors = None
        report["id_bit_errors"] = errors
        report["id_matches_manifest"] = errors is not None and errors <= ID_MAX_BIT_ERRORS
    return report


def _summary(report: dict) -> dict:
    manifest = report["metadata"].get("manifest") or {}
    report["provenance_found"] = bool(report["metadata"]["found"] or report["watermark"]["detected"])
    report["face_swap"] = manifest.get("face_swap")
    return report


def _verify_image(path: Path) -> dict:
    metadata = read_metadata(path)
    pixels = load_image(path)
    meta = _metadata_report(metadata)
    report = {"file": str(path), "kind": "image", "size": [int(pixels.shape[1]), int(pixels.shape[0])],
              "metadata": meta, "watermark": _watermark_report(detect(pixels), meta.get("manifest"))}
    return _summary(report)


def _sampled_frames(path: Path, num_frames: int) -> list[np.ndarray]:
    from idgen.media.video import read_frames

    span = max(1, min(num_frames, SAMPLE_SPAN))
    wanted = set(np.linspace(0, span - 1, min(SAMPLED_FRAMES, span)).round().astype(int).tolist())
    frames = []
    for index, frame in enumerate(read_frames(path, max_frames=span)):
        if index in wanted:
            frames.append(frame)
    return frames


def _verify_video(path: Path) -> dict:
    from idgen.media.video import VideoReadError, probe_video

    info = probe_video(path)  # raises for a corrupt file, or an IdgenError when PyAV is missing
    import av

    try:
        with av.open(str(path)) as container:
            container_metadata = dict(container.metadata)
    except Exception as e:  # FFmpeg's many error types; probe_video opened it, so this is rare
        raise VideoReadError(f"video file {str(path)!r}: metadata could not be read ({type(e).__name__}: {e}).") from None
    meta = _metadata_report(read_video_metadata(container_metadata))
    frames = _sampled_frames(path, info.num_frames)
    if not frames:
        raise VideoReadError(f"video file {str(path)!r} has no decodable frames.")
    watermark = _watermark_report(detect_frames(frames), meta.get("manifest"))
    watermark["frames"] = [{"bit_accuracy": r.bit_accuracy, "detected": r.magic_ok} for r in map(detect, frames)]
    report = {"file": str(path), "kind": "video", "size": [info.width, info.height],
              "num_frames": info.num_frames, "metadata": meta, "watermark": watermark}
    return _summary(report)


def verify_file(path: Union[str, os.PathLike]) -> dict:
    """The provenance report of an image or video file (JSON types):

    `file`, `kind` ("image" | "video"), `size` ([width, height] px); `metadata`: `found`, and when
    found `container`, `manifest` (dict), `manifest_intact`, `manifest_error`,
    `digital_source_type`, `label`; `watermark`: `detected`, `bit_accuracy` (of the magic),
    `p_value`, `payload_id`, `bits`, `id_bit_errors` and `id_matches_manifest` (None without a
    manifest), and for videos `frames` (per sampled frame); `provenance_found` (metadata or
    watermark) and `face_swap` (from the manifest, None without one).

    Raises:
        ImageReadError (VideoReadError for videos): missing, unreadable or corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{str(path)!r} does not exist or is not a file; give the image or video to verify.")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _verify_video(path)
    return _verify_image(path)
