"""A generation request's inputs as pipeline call arguments: the people (their faces, identity
embeddings, regions and, for InstantID, face keypoints), the extra ControlNets' conditions, the
img2img init image and the style reference image.

The identity goes in as `Face` records carrying the embedding the adapters take (ArcFace, or the
labelled stand-in of the embedded default), so the pipelines also see each face's keypoints and
photo size. One unplaced person uses the pipelines' one-person arguments (`face_embeds`), so the
output is the official one; people with regions (or several people) use `identities=[...]` with a
mask each, and InstantID gets each face's keypoints fitted into its region.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import PIL.Image

from idgen.adapters.pulid.config import FACE_CROP_SIZE
from idgen.models.enhancers import load_face_parser
from idgen.app.controls import condition_image
from idgen.app.people import kps_in_box, place_people
from idgen.app.records import call_default
from idgen.app.references import faces_of_photos, identity_embeddings
from idgen.conditioning import draw_kps, draw_kps_many, fit_kps
from idgen.errors import FaceNotFoundError
from idgen.face import align_face
from idgen.identity import analyze_photo
from idgen.image_io import load_image


@dataclass
class PersonFaces:
    """One person's analysed references: photos `[H, W, 3]` uint8, `Face` records (with the
    embedding the adapters take) and the notes of skipped photos."""

    photos: list[np.ndarray]
    faces: list
    notes: list[str]
    embedding_note: Optional[str] = None


@dataclass
class PreparedInputs:
    """The call arguments of the identity and conditions (`kwargs`), the condition images to save
    beside the results (`conditions`: file stem -> image), and each person's faces."""

    kwargs: dict[str, Any]
    conditions: dict[str, PIL.Image.Image] = field(default_factory=dict)
    people: list[PersonFaces] = field(default_factory=list)
    pose_face: Any = None


def analyse_people(request, analyzer, embedded: bool) -> list[PersonFaces]:
    """Find each person's faces (`faces_of_photos`; `request.face_index` or `photo#N` picks one)
    and attach the embedding the adapters take."""
    select = "largest" if request.face_index is None else int(request.face_index)
    out = []
    for person in request.people:
        photos, faces, notes = faces_of_photos(person.faces, analyzer, select)
        embeds, note = identity_embeddings(faces, analyzer, embedded)
        out.append(PersonFaces(photos, [dataclasses.replace(f, embedding=e) for f, e in zip(faces, embeds)], notes, note))
    return out


def _native(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def _init_image(pipe, request) -> PIL.Image.Image:
    """The init image resized by the text-to-image rule for a photo (`output_size`: the official
    demo's `resize_img`, long side 1280 and multiples of 64 at SDXL size, aspect kept), or to
    `width`/`height` when given."""
    photo = PIL.Image.fromarray(load_image(request.init_image))
    size = pipe.output_size(photo.size, request.width, request.height)
    return photo if photo.size == tuple(size) else photo.resize(tuple(size), PIL.Image.LANCZOS)


def _placed(request) -> bool:
    return len(request.people) > 1 or any(p.box is not None or p.mask is not None for p in request.people)


def _crops(person: PersonFaces) -> list[np.ndarray]:
    """FaceID-Plus's CLIP input: each reference face aligned to 224 px."""
    return [align_face(photo, face.kps, size=224).image for photo, face in zip(person.photos, person.faces)]


def _instantid(pipe, request, people: list[PersonFaces], analyzer, out: PreparedInputs) -> tuple[int, int]:
    """InstantID's identity and IdentityNet condition; returns the output size."""
    init = _init_image(pipe, request) if request.init_image is not None else None
    if _placed(request):
        width, height = init.size if init is not None else pipe.output_size(None, request.width, request.height)
        placements = place_people(request.people, (width, height))
        identities = [{"face_embeds": p.faces, "mask": pl.mask,
                       "kps": kps_in_box(p.faces[0].kps, p.faces[0].image_size, pl.box)}
                      for p, pl in zip(people, placements)]
        kps_image = draw_kps_many((width, height), [entry["kps"] for entry in identities])
        out.kwargs.update(identities=identities)
    else:
        source = people[0].faces[0]
        if init is not None:  # img2img: the init image's own face, as the official infer_img2img.py
            try:
                source = analyze_photo(np.asarray(init), analyzer)[1]
            except FaceNotFoundError:
                pass  # no face in the init image: the reference face, fitted into it
            width, height = init.size
        else:
            if request.pose:
                source = out.pose_face = analyze_photo(request.pose, analyzer)[1]
            width, height = pipe.output_size(source.image_size, request.width, request.height)
        kps_image = draw_kps((width, height), fit_kps(source.kps, source.image_size, (width, height)))
        out.kwargs.update(face_embeds=people[0].faces)
    out.conditions["keypoints"] = kps_image
    controls = [kps_image]
    for i, spec in enumerate(request.controls):
        condition = PIL.Image.fromarray(condition_image(spec, (width, height)))
        out.conditions[f"control{i}-{spec.kind}"] = condition
        controls.append(condition)
    identitynet_scale = request.control_scale
    if request.controls:
        if identitynet_scale is None:
            identitynet_scale = call_default(pipe, "controlnet_conditioning_scale")
        out.kwargs.update(controlnet_conditioning_scale=[identitynet_scale, *(c.scale for c in request.controls)],
                          control_guidance_start=[0.0, *(c.start for c in request.controls)],
                          control_guidance_end=[1.0, *(c.end for c in request.controls)])
    elif identitynet_scale is not None:
        out.kwargs["controlnet_conditioning_scale"] = identitynet_scale
    condition = controls if request.controls else kps_image
    if init is not None:
        out.kwargs.update(image=init, control_image=condition)
        if request.strength is not None:
            out.kwargs["strength"] = request.strength
    else:
        out.kwargs.update(image=condition, width=width, height=height)
    return width, height


def _faceid(pipe, request, people: list[PersonFaces], out: PreparedInputs) -> tuple[int, int]:
    plus = request.method == "faceid-plusv2"
    width, height = request.width or _native(pipe), request.height or _native(pipe)
    if _placed(request):
        placements = place_people(request.people, (width, height))
        out.kwargs["identities"] = [
            {"face_embeds": p.faces, "mask": pl.mask, **({"face_crop": _crops(p)} if plus else {})}
            for p, pl in zip(people, placements)]
        out.kwargs.update(width=width, height=height)
    else:
        out.kwargs["face_embeds"] = people[0].faces
        if plus:
            out.kwargs["face_crop"] = _crops(people[0])
        if request.width or request.height:
            out.kwargs.update(width=width, height=height)
    return width, height


def condition_stems(request) -> list[str]:
    """The file stems of the condition images `prepare_inputs` returns for `request` (known before
    anything runs, so the output folder can claim them)."""
    stems = ["keypoints"] if request.method.startswith("instantid") else []
    return stems + [f"control{i}-{spec.kind}" for i, spec in enumerate(request.controls)]


def prepare_inputs(pipe, request, people: list[PersonFaces], analyzer) -> PreparedInputs:
    """The identity, condition, img2img and style call arguments of `request` for `pipe`."""
    out = PreparedInputs(kwargs={}, people=people)
    method = request.method
    if method.startswith("instantid"):
        _instantid(pipe, request, people, analyzer, out)
    elif method.startswith("faceid"):
        _faceid(pipe, request, people, out)
    else:  # arc2face, pulid: one person
        out.kwargs["face_embeds"] = people[0].faces
        if method == "pulid":  # EVA-CLIP's input: each reference face aligned as the official 512 FFHQ crop
            first = people[0]  # several photos: PuLID's own multi-photo encoding (v1.1 IDFormer, v1 token concat)
            crops = [align_face(photo, face.kps, size=FACE_CROP_SIZE, mode="ffhq").image
                     for photo, face in zip(first.photos, first.faces)]
            out.kwargs["id_image"] = crops if len(crops) > 1 else crops[0]
            pipe.face_parser = load_face_parser()  # when configured: the official white background
        size = (request.width or _native(pipe), request.height or _native(pipe))
        if request.width or request.height:
            out.kwargs.update(width=size[0], height=size[1])
    if request.style_image is not None:
        pipe.set_style_scale(request.style_scale, blocks=request.style_blocks)
        out.kwargs["ip_adapter_image"] = PIL.Image.fromarray(load_image(request.style_image))
    if request.negative_noise is not None:
        out.kwargs["negative_noise"] = request.negative_noise
    return out
