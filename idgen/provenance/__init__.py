"""Provenance of idgen's outputs: a manifest of what made each image or video (`manifest`), the
hashes of the models used (`hashes`), metadata written into the file (`metadata`), an invisible
watermark in the pixels that carries the manifest id (`watermark`), and checking a file
(`verify`, the `idgen verify` command).

For the app: `encode_image(image, fmt, provenance)` gives the bytes of a watermarked image file
with its metadata; `stamp(image, provenance)` watermarks pixels only; `VideoWriter(...,
provenance=...)` (idgen.media.video) does both for videos.
"""

from __future__ import annotations

import numpy as np

from idgen.provenance.hashes import file_sha256, folder_sha256, model_sha256
from idgen.provenance.manifest import Provenance, ProvenanceError
from idgen.provenance.metadata import encode_image, read_metadata
from idgen.provenance.verify import verify_file
from idgen.provenance.watermark import WatermarkResult, detect, embed, watermark_frame


def stamp(image: np.ndarray, provenance: Provenance) -> np.ndarray:
    """Watermark an RGB uint8 image `[H, W, 3]` with `provenance.id`; returns a new array."""
    return embed(image, provenance.id)


__all__ = ["Provenance", "ProvenanceError", "WatermarkResult", "detect", "embed", "encode_image", "file_sha256",
           "folder_sha256", "model_sha256", "read_metadata", "stamp", "verify_file", "watermark_frame"]
