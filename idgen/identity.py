"""The one identity-input path: photos, arrays, tensors or `Face` records → one `[N, D]` tensor.

Every pipeline accepts `face_embeds` as an array/tensor `[D]` or `[N, D]`, a `Face`, or a list of
them, or `face_image` (photos analysed with a `FaceAnalyzer`); `resolve_face_embeds` turns either
into the validated float32 tensor. N > 1 means N reference photos of the same person;
`combine_references` merges them. `in_window` is the step window in which an identity scale acts.
"""

from __future__ import annotations

import os
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch

from idgen.errors import IdgenError
from idgen.face import Face, get_face_analyzer
from idgen.image_io import load_image

FaceEmbedsInput = Union[np.ndarray, torch.Tensor, Face, Sequence[Union[np.ndarray, torch.Tensor, Face]]]
ReferenceMode = Literal["mean", "normed_mean", "concat"]


def face_embeds_to_tensor(face_embeds: FaceEmbedsInput, *, dim: int, normalize: bool) -> torch.Tensor:
    """Stack the input into a float32 CPU tensor `[N, dim]`.

    Args:
        face_embeds: see the module docstring.
        dim: expected embedding width (512 for ArcFace).
        normalize: L2-normalise each row (FaceID, Arc2Face) or keep raw vectors (InstantID).
            `Face` records contribute `embedding` either way, normalised here when asked.

    Raises:
        IdgenError: wrong width, empty input, NaN/inf, or a `Face` without an embedding.
    """
    items = face_embeds if isinstance(face_embeds, (list, tuple)) else [face_embeds]
    if len(items) == 0:
        raise IdgenError("face_embeds is empty: give at least one embedding or Face.")
    rows = []
    for i, item in enumerate(items):
        if isinstance(item, Face):
            if item.embedding is None:
                raise IdgenError(
                    f"face_embeds[{i}] is a Face without an embedding; analyse it with a backend "
                    "that computes embeddings (insightface ArcFace for the official adapters)."
                )
            item = item.embedding
        t = torch.as_tensor(np.asarray(item) if not isinstance(item, torch.Tensor) else item)
        t = t.detach().to("cpu", torch.float32)
        if t.ndim == 1:
            t = t[None]
        if t.ndim == 3 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 2 or t.shape[-1] != dim:
            raise IdgenError(
                f"face_embeds[{i}] has shape {tuple(t.shape)}; expected [{dim}] or [N, {dim}] "
                f"(a {dim}-d identity embedding per reference photo)."
            )
        rows.append(t)
    out = torch.cat(rows, dim=0)
    if not torch.isfinite(out).all():
        raise IdgenError("face_embeds contains NaN or infinite values.")
    if normalize:
        out = torch.nn.functional.normalize(out, dim=-1)
    return out


def combine_references(embeds: torch.Tensor, mode: ReferenceMode = "mean") -> torch.Tensor:
    """Merge N reference embeddings `[N, D]` of one person.

    - "mean": the average `[1, D]`.
    - "normed_mean": the average, rescaled to the mean norm of the inputs `[1, D]` (keeps the
      magnitude raw-embedding models like InstantID were trained on).
    - "concat": unchanged `[N, D]`; the caller turns each into tokens and concatenates them.
    """
    if mode == "concat" or embeds.shape[0] == 1:
        return embeds
    mean = embeds.mean(dim=0, keepdim=True)
    if mode == "mean":
        return mean
    if mode == "normed_mean":
        target = embeds.norm(dim=-1).mean()
        return mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-12) * target
    raise IdgenError(f"reference_mode must be 'mean', 'normed_mean' or 'concat', got {mode!r}.")


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
    `reference_mode` (see `combine_references`).
    """
    if (face_embeds is None) == (face_image is None):
        raise IdgenError("Give exactly one of `face_embeds` and `face_image`.")
    if face_image is not None:
        if analyzer is None:
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


def analyze_photo(path, analyzer, select="largest"):
    """Load the photo `path` (a file, or anything `load_image` takes) and find its face(s)
    (`analyzer.get(photo, select=select)`): `(photo [H, W, 3] uint8, Face or list of Face)`. An
    error of either step names the file."""
    try:
        photo = load_image(path)
        return photo, analyzer.get(photo, select=select)
    except IdgenError as e:
        if not isinstance(path, (str, os.PathLike)) or str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from None
