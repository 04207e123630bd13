"""Inputs shared by the identity pipelines: embeddings from arrays, `Face` records or photos, and
the step window in which an identity scale is active."""

from __future__ import annotations

from typing import Optional

import torch

from idgen.embeds import FaceEmbedsInput, ReferenceMode, combine_references, face_embeds_to_tensor
from idgen.errors import IdgenError


def resolve_face_embeds(
    face_embeds: Optional[FaceEmbedsInput],
    face_image,
    *,
    analyzer,
    dim: int,
    normalize: bool,
    reference_mode: ReferenceMode = "mean",
) -> torch.Tensor:
    """The identity embeddings of one person, `[N, dim]` float32 on CPU.

    Exactly one of `face_embeds` (arrays/tensors/`Face` records) and `face_image` (one photo or a
    list of photos, each with one face: the largest is taken) must be given; photos go through
    `analyzer` (an `idgen.face.FaceAnalyzer`, cached per image). N references are merged by
    `reference_mode` (see `idgen.embeds.combine_references`).
    """
    if (face_embeds is None) == (face_image is None):
        raise IdgenError("Give exactly one of `face_embeds` and `face_image`.")
    if face_image is not None:
        if analyzer is None:
            from idgen.face import get_face_analyzer

            analyzer = get_face_analyzer()
        photos = face_image if isinstance(face_image, (list, tuple)) else [face_image]
        face_embeds = [analyzer.get(photo, select="largest") for photo in photos]
        if analyzer.embedding_dim != dim:
            raise IdgenError(
                f"this adapter needs {dim}-d identity embeddings, but the face analyzer "
                f"{analyzer.name!r} gives {analyzer.embedding_dim}-d ({analyzer.embedding_model}); "
                "configure an insightface pack (antelopev2) for the official ArcFace embedding."
            )
    embeds = face_embeds_to_tensor(face_embeds, dim=dim, normalize=normalize)
    return combine_references(embeds, reference_mode)


def in_window(step_index: int, num_steps: int, start: float, end: float) -> bool:
    """Whether denoising step `step_index` of `num_steps` lies in the fraction window
    `[start, end]` (diffusers' `control_guidance_start/end` convention)."""
    if not 0.0 <= start <= end <= 1.0:
        raise IdgenError(f"start/end fractions must satisfy 0 <= start <= end <= 1; got {start}, {end}.")
    lo = step_index / num_steps
    hi = (step_index + 1) / num_steps
    return not (lo < start or hi > end)
