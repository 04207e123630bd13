"""Colour transfer for pasting generated faces back (Reinhard et al. 2001, in CIE L*a*b*)."""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np


def match_color(image: np.ndarray, reference: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Shift `image`'s per-channel L*a*b* mean and standard deviation to `reference`'s.

    Statistics are taken inside `mask` (`[H, W]`, weight in [0, 1]; default: everywhere) in both
    images, and the transfer is applied to the whole of `image`, so a repainted face takes the
    lighting and skin tone of the face it replaces.

    Args:
        image, reference: `[H, W, 3]` uint8 RGB of the same size.

    Returns:
        `[H, W, 3]` uint8 RGB.
    """
    weights = np.ones(image.shape[:2], np.float32) if mask is None else np.asarray(mask, np.float32)
    total = float(weights.sum())
    if total < 1.0:
        return image.copy()
    w = weights[..., None] / total
    # float L*a*b* (8-bit L*a*b* would quantise the round trip by several levels)
    src = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    src_mean, ref_mean = (src * w).sum((0, 1)), (ref * w).sum((0, 1))
    src_std = np.sqrt((((src - src_mean) ** 2) * w).sum((0, 1)))
    ref_std = np.sqrt((((ref - ref_mean) ** 2) * w).sum((0, 1)))
    out = (src - src_mean) * (ref_std / np.maximum(src_std, 1e-3)) + ref_mean
    rgb = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
