"""Reference photos of a person -> the identity inputs the adapters take: the faces found in them
(`faces_of_photos`, `photo.jpg#N` picking face N of a group photo) and their embeddings
(`identity_embeddings`). Shared by `generate`, `inpaint`/`swap` and `restore`."""

from __future__ import annotations

from typing import Optional

import numpy as np

from idgen.errors import FaceNotFoundError, FaceTooSmallError, IdgenError, ImageReadError, MultipleFacesError
from idgen.identity import analyze_photo
from idgen.models.methods import ARCFACE_DIM


def identity_embeddings(faces, analyzer, embedded: bool) -> tuple[np.ndarray, Optional[str]]:
    """`[N, 512]` ArcFace embeddings of the faces, and a note when they are a stand-in.

    The official adapters need insightface's 512-d ArcFace. With the embedded default and only
    dlib available, dlib's 128-d vector is tiled to 512 (labelled in the record): the plumbing
    is exercised, the identity is not ArcFace's.
    """
    embeds = np.stack([f.embedding for f in faces])
    if embeds.shape[1] == ARCFACE_DIM:
        return embeds, None
    if embedded and ARCFACE_DIM % embeds.shape[1] == 0:
        return np.tile(embeds, (1, ARCFACE_DIM // embeds.shape[1])), (
            f"{analyzer.embedding_model} {embeds.shape[1]}-d embedding tiled to {ARCFACE_DIM}-d (embedded default only)")
    raise IdgenError(
        f"the {analyzer.name!r} face backend gives {embeds.shape[1]}-d embeddings; the official adapters need "
        f"insightface's {ARCFACE_DIM}-d ArcFace. Install an insightface pack (antelopev2) — see `idgen doctor`."
    )


def faces_of_photos(paths, analyzer, select="largest") -> tuple[list[np.ndarray], list, list[str]]:
    """Load each reference photo of one person and find its face: `(photos, faces, notes)`.

    A path `photo.jpg#N` takes face N (largest first) of that photo, whatever `select` says. A
    photo that can't be used (unreadable, no face, the face too small) is skipped with a note
    when others remain, so one bad photo among ten does not stop the job; when none remains the
    first photo's error is raised.
    """
    from idgen.app.people import face_reference

    photos, faces, notes, first_error = [], [], [], None
    for path in paths:
        path, index = face_reference(path)
        try:
            photo, face = analyze_photo(path, analyzer, select if index is None else index)
        except (ImageReadError, FaceNotFoundError, FaceTooSmallError, MultipleFacesError) as e:
            first_error = first_error or e
            notes.append(f"reference photo skipped: {e}")
            continue
        photos.append(photo)
        faces.append(face)
    if not faces:
        raise first_error
    return photos, faces, notes
