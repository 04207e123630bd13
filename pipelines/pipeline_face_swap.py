"""Face swap with an identity-inpainting pipeline: `FaceSwapper`.

For each target face of a photo (or of a video frame, through `idgen.media.video_faces`): align and crop
it (FFHQ alignment at the pipeline's resolution, so the swap is not limited to inswapper's 128 px),
build the mask in crop space (landmark hull, optionally with hair, or — with a `FaceParser` — the
parsed classes of the target crop; minus the user's occluders, the parsed classes to `keep` and
what occludes the face), inpaint the crop conditioned on the source identity and — for InstantID —
on the target's keypoints, colour-match the result to the target (Reinhard, inside the mask),
optionally run a post-pass on the swapped crops (`enhance_crops`, e.g. a face restorer) and paste
it back through the inverse transform with a feathered seam. Pixels outside the pasted region, and
the kept and occluded pixels, are returned unchanged, bit for bit.

It composes any of idgen's identity-inpainting pipelines (PVA, FaceID, InstantID; SD1.5 or SDXL)
through the arguments they share (`face_embeds`, `identity_scale`, and `target_kps` where there is
an IdentityNet); it owns no weights, so it is an editor over a pipeline rather than a
`DiffusionPipeline` of its own.

Batching: the crops of several faces and frames go through one call of the pipeline (lists of
images, masks, prompts and keypoints; one `torch.Generator` per crop, seeded as the crop would be
on its own), one call per source identity (each pipeline takes one person per call) and at most
`batch_size` crops per call. Each crop keeps its own seed and inputs, so a batched result equals
the crop-by-crop one up to float rounding (batched kernels).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from PIL import Image

from idgen.color import match_color
from idgen.conditioning import face_mask
from idgen.errors import FaceNotFoundError, IdgenError
from idgen.face import Face, align_face, get_face_analyzer, identity_similarity, paste_back, transform_points
from idgen.face.parsing import face_occlusion, label_ids
from idgen.image_io import load_image
from idgen.media.video import probe_video
from idgen.media.video_faces import Progress, process_video
from idgen.validation import check_integer, names_list

MAPPINGS = ("all", "index", "reference")
#: The default `batch_size` fits the crops of this many pixels in one call: 8 crops of 512 px
#: (SD1.5), 2 of 1024 px (SDXL); never more than `MAX_DEFAULT_BATCH` crops.
BATCH_PIXELS = 8 * 512 * 512
MAX_DEFAULT_BATCH = 8
#: The geometric mask regions (`idgen.conditioning.face_mask`); any other region is parsed.
GEOMETRIC_REGIONS = ("face", "face_hair", "custom")
#: A mask region: a geometric name, or face-parsing class / group names (`idgen.face.parsing.GROUPS`).
Region = Union[str, Sequence[str]]
#: A post-pass over a batch of swapped crops `[S, S, 3]` uint8 (same number, same size back).
EnhanceCrops = Callable[[list[np.ndarray]], list[np.ndarray]]


def default_batch_size(crop_size: int) -> int:
    """Crops per pipeline call when `batch_size` is not given, for crops of `crop_size` pixels."""
    return max(1, min(MAX_DEFAULT_BATCH, BATCH_PIXELS // (crop_size * crop_size)))


@dataclass
class SwapCrop:
    """One aligned crop to inpaint: `crop` `[S, S, 3]` uint8, repaint `mask` `[S, S]` in [0, 1],
    the index of its `source` identity, the target's keypoints `kps` `[5, 2]` (crop pixels) and
    the `seed` of its initial noise."""

    crop: np.ndarray
    mask: np.ndarray
    source: int
    kps: np.ndarray
    seed: int


@dataclass
class SwappedFace:
    """What happened to one target face (`index`: left-to-right order in the image)."""

    index: int
    bbox: list[float]
    source: Optional[int] = None
    note: Optional[str] = None


@dataclass
class FaceSwapOutput:
    """`image` `[H, W, 3]` uint8, one `SwappedFace` per detected target face, and `warnings` about
    the whole image (e.g. a painted mask partly outside every face crop)."""

    image: np.ndarray
    faces: list[SwappedFace] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return [f"face {f.index}: {f.note}" for f in self.faces if f.note] + self.warnings


def assign_sources(faces: Sequence[Face], num_sources: int, mapping: str,
                   reference_embeds: Optional[Sequence[np.ndarray]] = None) -> list[tuple[Optional[int], Optional[str]]]:
    """Which source identity each target face (in the given order) receives, with a note.

    - "all": every face gets source 0.
    - "index": face i gets source i; faces beyond the sources are left alone.
    - "reference": each face gets the source whose reference embedding (one per source,
      `reference_embeds`) is the most similar to it (cosine).
    """
    if mapping not in MAPPINGS:
        raise IdgenError(f"mapping must be one of {MAPPINGS}, got {mapping!r}.")
    if num_sources < 1:
        raise IdgenError("give at least one source identity.")
    if mapping == "all":
        return [(0, None) for _ in faces]
    if mapping == "index":
        return [(i, None) if i < num_sources else (None, f"no source #{i} (only {num_sources} given): left as is")
                for i in range(len(faces))]
    if reference_embeds is None or len(reference_embeds) != num_sources:
        raise IdgenError("mapping='reference' needs one reference photo (embedding) per source identity.")
    out = []
    for face in faces:
        if face.embedding is None:
            raise IdgenError("mapping='reference' needs target faces with embeddings (use an analyzer that computes them).")
        sims = [identity_similarity(face.embedding, ref) for ref in reference_embeds]
        best = int(np.argmax(sims))
        out.append((best, f"matched reference {best} (cosine {sims[best]:.2f})"))
    return out


def parsed_region(region: Region) -> Optional[tuple[str, ...]]:
    """The parse class / group names of `region`, None for a geometric one (`GEOMETRIC_REGIONS`;
    "face" as a string is the landmark hull, `("face",)` the parsed face classes)."""
    if isinstance(region, str) and region in GEOMETRIC_REGIONS:
        return None
    names = names_list(region)
    if not names:
        raise IdgenError(f"region {region!r} names no face-parsing class: give one of {GEOMETRIC_REGIONS} or "
                         "class / group names such as ('skin', 'nose', 'mouth').")
    return names


def _face_in_crop(face: Face, matrix: np.ndarray, size: int) -> Face:
    """`face` with its points mapped into the aligned crop."""
    landmarks = None if face.landmarks is None else transform_points(face.landmarks, matrix).astype(np.float32)
    kps = transform_points(face.kps, matrix).astype(np.float32)
    corners = transform_points(np.array(face.bbox, np.float64).reshape(2, 2), matrix)
    bbox = np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)
    return dataclasses.replace(face, kps=kps, landmarks=landmarks, bbox=bbox, image_size=(size, size))


class FaceSwapper:
    """Swap the faces of a photo (or video frame) for source identities: an editor over one
    identity-inpainting pipeline (not itself a `DiffusionPipeline`; formerly `FaceSwapPipeline`).

    Args:
        inpaint_pipeline: an idgen identity-inpainting pipeline (PVA, FaceID or InstantID inpaint).
        face_analyzer: an `idgen.face.FaceAnalyzer` (default: `get_face_analyzer()`).
        crop_size: aligned crop size in pixels (default: the UNet's native size).
        align_mode: "ffhq" (face + hair + chin context, default) or "arcface" (tight).
        parser: an `idgen.face.parsing.FaceParser` (optional): masks by parsed class (`region`,
            `keep`) and, without an occluder, the occluders of the face (what parses as neither
            head nor face inside the face's hull: a hand, a microphone).
        occluder: an `idgen.face.parsing.OcclusionModel` (optional): what covers the face.
    """

    def __init__(self, inpaint_pipeline, face_analyzer=None, crop_size: Optional[int] = None, align_mode: str = "ffhq",
                 *, parser=None, occluder=None):
        self._call_parameters = inspect.signature(inpaint_pipeline.__call__).parameters
        if not {"face_embeds", "identity_scale", "mask_image"} <= set(self._call_parameters):
            raise IdgenError(f"FaceSwapper needs an idgen identity-inpainting pipeline (PVA, FaceID or InstantID "
                             f"inpainting), got {type(inpaint_pipeline).__name__}.")
        self.pipe = inpaint_pipeline
        self.face_analyzer = face_analyzer
        self.crop_size = crop_size or inpaint_pipeline.unet.config.sample_size * inpaint_pipeline.vae_scale_factor
        self.align_mode = align_mode
        self.parser = parser
        self.occluder = occluder

    @property
    def analyzer(self):
        if self.face_analyzer is None:
            self.face_analyzer = get_face_analyzer()
        return self.face_analyzer

    def identity_kwargs(self, embeds: np.ndarray, kps_in_crops: Sequence[np.ndarray],
                        identity_scale: Optional[float]) -> dict:
        """The identity arguments of the wrapped pipeline's `__call__` for a batch of B crops of one
        person: every idgen identity pipeline takes `face_embeds` `[N, D]` and `identity_scale`;
        those with an IdentityNet also take each target face's keypoints (`target_kps` `[B, 5, 2]`,
        crop pixels)."""
        kwargs = {"face_embeds": embeds}
        if "target_kps" in self._call_parameters:
            kwargs["target_kps"] = np.stack([np.asarray(k, np.float32) for k in kps_in_crops])
        if identity_scale is not None:
            kwargs["identity_scale"] = identity_scale
        return kwargs

    def check_masks(self, region: Region = "face", keep: Sequence[str] = ()) -> None:
        """Check a mask request before any work: parse names are known, and a parsed `region` or
        a `keep` has a parser.

        Raises:
            IdgenError: an unknown class / group name, or a parsed region or `keep` without a parser.
        """
        names, kept = parsed_region(region), names_list(keep)
        for given in (names or (), kept):
            label_ids(given)
        asked = [f"{what}={value!r}" for what, value, used in (("region", region, names), ("keep", keep, kept)) if used]
        if asked and self.parser is None:
            raise IdgenError(f"{' and '.join(asked)} need{'s' if len(asked) == 1 else ''} the face parser "
                             "(79999_iter.pth, see `idgen doctor`): give FaceSwapper(..., parser=FaceParser.from_file"
                             f"(path)), or use a geometric region ({', '.join(GEOMETRIC_REGIONS)}) without keep.")

    def crop_mask(self, face_in_crop: Face, crop: Optional[np.ndarray] = None, *, region: Region = "face",
                  dilate: int = 0, exclude=None, keep: Sequence[str] = (), occlusion: bool = True) -> np.ndarray:
        """The repaint mask `[S, S]` float32 in {0, 1} in crop space (binary: the pipeline repaints
        whole pixels).

        Args:
            face_in_crop: the target face, its points in crop pixels.
            crop: the aligned crop `[S, S, 3]` uint8 RGB: needed with a parser or an occluder.
            region: a geometric region (`idgen.conditioning.face_mask`: "face", "face_hair",
                "custom") or face-parsing class / group names (e.g. `("skin", "nose", "mouth")`,
                or "skin,nose,mouth"): those parsed pixels of `crop`. Grown by `dilate` pixels.
            exclude: occluders to keep, `[S, S]` (white = never repaint).
            keep: parsed classes / groups never repainted, whatever the region (e.g. `("glasses",)`).
            occlusion: with a parser or an occluder, never repaint what occludes the face (the
                occluder's mask, else `occlusion_from_parsing` in the hull of the face classes).

        Kept and occluded pixels are left out with a 1-pixel margin, so that the bilinear
        paste-back never blends into them.
        """
        return self._crop_masks(face_in_crop, crop, region=region, dilate=dilate, exclude=exclude, keep=keep,
                                occlusion=occlusion)[0]

    def _crop_masks(self, face_in_crop: Face, crop: Optional[np.ndarray], *, region: Region, dilate: int, exclude,
                    keep: Sequence[str], occlusion: bool, user_mask=None) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """`crop_mask` (`user_mask`: the crop's part of region="custom") and the protected pixels
        `[S, S]` bool (kept and occluded; None when there are none), from one parse of `crop`."""
        self.check_masks(region, keep)
        size = (self.crop_size,) * 2
        names, kept = parsed_region(region), names_list(keep)
        occluders = occlusion and (self.parser is not None or self.occluder is not None)
        if (names or kept or occluders) and crop is None:
            raise IdgenError("crop_mask needs the crop pixels (`crop`) with a parsed region, keep, or occlusion "
                             "(a parser or occluder is set; pass occlusion=False to skip it).")
        parse = self.parser is not None and bool(names or kept or (occluders and self.occluder is None))
        labels = self.parser.parse(crop) if parse else None
        if names is None:
            mask = face_mask(size, face_in_crop, region=region, user_mask=user_mask, dilate=dilate, exclude=exclude)
        else:
            mask = self.parser.mask(labels, include=names, exclude=()).astype(np.float32)
            dilate = check_integer("dilate", dilate, low=0, high=self.crop_size)
            if dilate > 0:
                mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1,) * 2))
            if exclude is not None:
                mask[face_mask(size, region="custom", user_mask=exclude) > 0.5] = 0.0
        protect = np.zeros(size, bool)
        if kept:
            protect |= self.parser.mask(labels, include=kept, exclude=()) > 0.5
        if occluders:
            protect |= self._occluded(crop, labels)
        mask = (np.asarray(mask, np.float32) > 0.5).astype(np.float32)
        if not protect.any():
            return mask, None
        mask[cv2.dilate(protect.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = 0.0
        return mask, protect

    def _occluded(self, crop: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
        """`[S, S]` bool: what covers the face in `crop` (the occluder's mask, else the parser's)."""
        return face_occlusion(crop, labels, self.occluder) > 0.5

    def swap_crops(self, crops: Sequence[SwapCrop], source_embeds: Sequence[np.ndarray], *,
                   batch_size: Optional[int] = None, color_match: bool = True, identity_scale: Optional[float] = None,
                   prompt: str = "photo of a person", enhance_crops: Optional[EnhanceCrops] = None,
                   **generation) -> list[np.ndarray]:
        """Inpaint aligned crops, batched: one pipeline call per source identity and per
        `batch_size` crops (default `default_batch_size`), each crop with its own generator
        (`crop.seed`), mask and keypoints, so the result does not depend on the batching.

        Args:
            crops: the `SwapCrop`s; `crop.source` indexes `source_embeds` (one `[N, D]` per person).
            enhance_crops: a post-pass over each call's crops, after the colour match (e.g.
                `idgen.restorers.FaceEnhancer.enhance_crops`): a list of `[S, S, 3]` uint8 in, as
                many of the same size back.
            generation: other arguments of the pipeline (`num_inference_steps`, `negative_prompt`, ...).

        Returns:
            the inpainted (and, with `color_match`, colour-matched; with `enhance_crops`, enhanced)
            crops `[S, S, 3]` uint8, in order.
        """
        size = self._batch_size(batch_size)
        if generation.get("negative_noise"):
            size = 1  # the pipelines draw that noise once per call (first generator): keep each crop's own
        by_source: dict[int, list[int]] = {}
        for i, item in enumerate(crops):
            by_source.setdefault(item.source, []).append(i)
        out: list[Optional[np.ndarray]] = [None] * len(crops)
        for source, members in by_source.items():
            for start in range(0, len(members), size):
                chunk = members[start: start + size]
                images = self._inpaint([crops[i] for i in chunk], source_embeds[source], identity_scale, prompt,
                                       generation)
                if color_match:
                    images = [match_color(image, crops[i].crop, crops[i].mask) for i, image in zip(chunk, images)]
                if enhance_crops is not None:
                    images = self._enhance(enhance_crops, images)
                for i, image in zip(chunk, images):
                    out[i] = image
        return out

    @staticmethod
    def _enhance(enhance_crops: EnhanceCrops, images: list[np.ndarray]) -> list[np.ndarray]:
        """`enhance_crops(images)`, checked: as many uint8 crops of the same shape, in order."""
        out = list(enhance_crops(list(images)))
        if len(out) != len(images):
            raise IdgenError(f"enhance_crops returned {len(out)} crops for {len(images)}.")
        for image, enhanced in zip(images, out):
            enhanced = np.asarray(enhanced)
            if enhanced.shape != image.shape or enhanced.dtype != np.uint8:
                raise IdgenError(f"enhance_crops returned a {enhanced.dtype} {tuple(enhanced.shape)} crop; expected "
                                 f"uint8 {tuple(image.shape)}.")
        return [np.asarray(e) for e in out]

    def _batch_size(self, batch_size: Optional[int]) -> int:
        """`batch_size` checked (a positive int), else `default_batch_size` of the crop size."""
        return default_batch_size(self.crop_size) if batch_size is None else check_integer("batch_size", batch_size, low=1)

    def _inpaint(self, crops: Sequence[SwapCrop], embeds: np.ndarray, identity_scale: Optional[float], prompt: str,
                 generation: dict) -> list[np.ndarray]:
        """One pipeline call on B crops of one person: images `[S, S, 3]` uint8 (not colour-matched)."""
        n, size = len(crops), self.crop_size
        negative = generation.get("negative_prompt")
        if isinstance(negative, str):  # diffusers wants a list negative with a list prompt
            generation = {**generation, "negative_prompt": [negative] * n}
        out = self.pipe(
            prompt=[prompt] * n, image=[Image.fromarray(c.crop) for c in crops],
            mask_image=[Image.fromarray((c.mask > 0.5).astype(np.uint8) * 255) for c in crops],
            height=size, width=size, generator=[torch.Generator("cpu").manual_seed(c.seed) for c in crops],
            output_type="np", **self.identity_kwargs(embeds, [c.kps for c in crops], identity_scale), **generation,
        ).images
        return [np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8) for image in out]

    def __call__(
        self,
        image,
        source_embeds: Sequence[np.ndarray],
        *,
        mapping: str = "all",
        reference_embeds: Optional[Sequence[np.ndarray]] = None,
        region: Region = "face",
        user_mask=None,
        dilate: int = 8,
        feather: int = 8,
        exclude=None,
        keep: Sequence[str] = (),
        occlusion: bool = True,
        targets: Optional[Sequence[int]] = None,
        min_face_size: int = 32,
        color_match: bool = True,
        seed: int = 0,
        identity_scale: Optional[float] = None,
        prompt: str = "photo of a person",
        batch_size: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
        enhance_crops: Optional[EnhanceCrops] = None,
        **generation,
    ) -> FaceSwapOutput:
        """Swap every target face of `image`.

        Args:
            image: the photo (path, PIL or `[H, W, 3]` uint8).
            source_embeds: one `[N, D]` (or `[D]`) identity embedding per source person.
            mapping / reference_embeds: see `assign_sources`.
            region, dilate, exclude: the mask: a geometric region (`idgen.conditioning.face_mask`:
                "face", "face_hair", "custom") or, with a parser, face-parsing class / group names
                (e.g. `("skin", "nose", "mouth")`: those parsed pixels of each target crop), grown
                by `dilate` crop pixels; `exclude` is an occluder mask of the whole photo, white = keep.
            keep: parsed classes / groups never repainted, whatever the region (e.g.
                `("glasses", "hair")`; needs a parser).
            occlusion: with a parser or an occluder, what covers the face (a hand over the mouth) is
                never repainted. Kept and occluded pixels come back as they were, bit for bit.
            user_mask: with region="custom": the repaint mask of the whole photo (white = repaint),
                taken into each face's crop.
            targets: indices (left-to-right order) of the faces to edit; default all.
            feather: seam feather in crop pixels when pasting back.
            min_face_size: faces whose box is narrower than this (pixels) are skipped with a note.
            color_match: match the repainted crop's colours to the target face.
            seed: face i uses seed + i, so each face is reproducible on its own.
            batch_size: most faces per pipeline call (default `default_batch_size`). Faces are
                pasted back in order and each crop is aligned from the photo as the earlier faces
                left it, so only faces whose crops do not overlap share a call (the result is the
                face-by-face one); a face whose crop overlaps an earlier one waits for its paste.
            progress: `callable(done, total)` after each face pasted back.
            enhance_crops: a post-pass over the swapped crops (after the colour match, before the
                paste-back; a list per pipeline call, e.g. `FaceEnhancer.enhance_crops`); pasted
                through the same mask, so it changes only pixels the swap repaints.
            generation: other arguments of the inpainting pipeline (`num_inference_steps`,
                `guidance_scale`, `strength`, `negative_prompt`, ...).
        """

        self.check_masks(region, keep)
        photo = load_image(image)
        height, width = photo.shape[:2]
        faces = sorted(self.analyzer.detect(photo), key=lambda f: float(f.bbox[0]))
        if not faces:
            raise FaceNotFoundError("no face found in the target image: nothing to swap.")
        sources = [np.atleast_2d(np.asarray(e, dtype=np.float32)) for e in source_embeds]
        plan = assign_sources(faces, len(sources), mapping, reference_embeds)
        exclude_full = None if exclude is None else face_mask((width, height), region="custom", user_mask=exclude)
        user_full = None
        if region == "custom":
            user_full = face_mask((width, height), region="custom", user_mask=user_mask)
        if targets is not None and any(not 0 <= t < len(faces) for t in targets):
            raise IdgenError(f"targets {list(targets)} out of range: {len(faces)} face(s) found.")
        result, report = photo.copy(), []
        covered = np.zeros((height, width), bool)  # the pixels some edited face crop reaches
        pending: list[tuple[int, SwapCrop, np.ndarray, Optional[np.ndarray]]] = []  # (index, crop, inverse, protected)
        reached = np.zeros((height, width), bool)  # the pixels the pending crops read and will paste over

        def flush() -> None:
            nonlocal result
            swapped = self.swap_crops([item for _, item, _, _ in pending], sources, batch_size=batch_size,
                                      color_match=color_match, identity_scale=identity_scale, prompt=prompt,
                                      enhance_crops=enhance_crops, **generation)
            for (i, item, inverse, protected), crop in zip(pending, swapped):
                before = result
                result = paste_back(result, crop, inverse, mask=item.mask, feather=feather)
                if protected is not None:  # kept / occluded pixels, and any the warp touches, as they were
                    kept = cv2.warpAffine(protected.astype(np.float32), inverse, (width, height)) > 0
                    result[kept] = before[kept]
                if exclude_full is not None:  # the warp back blurs the mask edge by a pixel: keep occluders exact
                    excluded = exclude_full > 0.5
                    result[excluded] = photo[excluded]
                if progress is not None:
                    progress(i + 1, len(faces))
            pending.clear()
            reached[:] = False

        for i, (face, (source, note)) in enumerate(zip(faces, plan)):
            entry = SwappedFace(index=i, bbox=[float(v) for v in face.bbox], source=source, note=note)
            report.append(entry)
            if targets is not None and i not in targets:
                entry.source, entry.note = None, None
                continue
            if source is None:
                continue
            if face.width < min_face_size:
                entry.source, entry.note = None, f"face {face.width:.0f} px wide (< {min_face_size}): skipped"
                continue
            aligned = align_face(result, face.kps, size=self.crop_size, mode=self.align_mode)
            footprint = self._footprint(aligned.inverse, (width, height))
            if (footprint & reached).any():  # an earlier face's paste changes what this crop reads
                flush()
                aligned = align_face(result, face.kps, size=self.crop_size, mode=self.align_mode)
            in_crop = _face_in_crop(face, aligned.matrix, self.crop_size)
            exclude_crop = crop_user = None
            if exclude_full is not None:
                exclude_crop = cv2.warpAffine(exclude_full, aligned.matrix, (self.crop_size,) * 2)
            if user_full is not None:
                crop_user = cv2.warpAffine(user_full, aligned.matrix, (self.crop_size,) * 2)
                covered |= cv2.warpAffine(np.ones((self.crop_size,) * 2, np.uint8), aligned.inverse, (width, height)) > 0
            mask, protected = self._crop_masks(in_crop, aligned.image, region=region, dilate=dilate,
                                               exclude=exclude_crop, keep=keep, occlusion=occlusion,
                                               user_mask=crop_user)
            if user_full is None and not mask.any():  # a parsed region absent from the crop, or all kept
                entry.source, entry.note = None, "nothing to repaint (the mask is empty): left as is"
                continue
            pending.append((i, SwapCrop(aligned.image, mask, source, in_crop.kps, seed + i), aligned.inverse,
                            protected))
            reached |= footprint
        if pending:
            flush()
        return FaceSwapOutput(image=result, faces=report, warnings=self._mask_outside(user_full, covered))

    def _footprint(self, inverse: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The pixels `[H, W]` of a `size` (w, h) image that the aligned crop with this crop -> image
        `inverse` reads (bilinear) and pastes over, grown by 2 px for the interpolation."""
        reach = cv2.warpAffine(np.ones((self.crop_size,) * 2, np.uint8), inverse, size)
        return cv2.dilate(reach, np.ones((5, 5), np.uint8)) > 0

    @staticmethod
    def _mask_outside(user_full: Optional[np.ndarray], covered: np.ndarray) -> list[str]:
        """A warning when part of the user's mask `[H, W]` lies outside every edited crop (those
        pixels cannot be repainted: only the aligned crop around a face is); an error when all of it does."""
        if user_full is None:
            return []
        painted = user_full > 0.5
        outside = painted & ~covered
        if not outside.any():
            return []
        if not (painted & covered).any():
            raise IdgenError("the painted mask does not reach any face: only the area around a detected face "
                             "(its aligned crop) is repainted. Paint over the face to edit it.")
        share = 100.0 * outside.sum() / painted.sum()
        return [f"{share:.0f}% of the painted mask lies outside the face crop(s) and was left as it was: only "
                "the area around each detected face (its aligned crop) is repainted."]

    def swap_video(
        self,
        input_path,
        output_path,
        source_embeds: Sequence[np.ndarray],
        *,
        mapping: str = "all",
        reference_embeds: Optional[Sequence[np.ndarray]] = None,
        region: Region = "face",
        dilate: int = 8,
        feather: int = 8,
        exclude=None,
        keep: Sequence[str] = (),
        occlusion: bool = True,
        min_face_size: int = 32,
        color_match: bool = True,
        seed: int = 0,
        identity_scale: Optional[float] = None,
        prompt: str = "photo of a person",
        batch_size: Optional[int] = None,
        max_missing: int = 5,
        smooth_sigma: float = 1.0,
        progress: Progress = True,
        provenance=None,
        enhance_crops: Optional[EnhanceCrops] = None,
        **generation,
    ):
        """Swap the tracked faces of a video; returns `idgen.media.video_faces.VideoReport`.

        Faces are tracked across frames (IoU + identity) with short gaps interpolated and keypoints
        smoothed over time; each track keeps one source identity (mapping by the order of first
        appearance, left to right, or by reference) and one seed (`seed + track id`), so its
        initial noise is the same in every frame. The audio is kept; frames without a face pass
        through unchanged. `exclude`: an occluder mask of the frame size (white = keep), the same
        for every frame. `region`, `keep`, `occlusion`: as in `__call__`, parsed on each frame's
        crop (once per crop); the kept and occluded pixels are left out of the paste mask with a
        1-pixel margin, so the frames keep them as decoded (before encoding). `batch_size`: frames
        decoded and edited together, and the most crops per pipeline call (default
        `default_batch_size`); the crops of those frames (all their faces) are inpainted in one
        call per source identity, each with its track's seed, so the video is
        the frame-by-frame one (up to float rounding) at any batch size. `progress`: per frame,
        advancing as each batch of frames is written (`idgen.media.video_faces.Progress`). `provenance`:
        an `idgen.provenance.Provenance` stamped into every frame and the file. `enhance_crops`: as in
        `__call__`, on each pipeline call's crops; with a post-pass that treats each crop on its own
        (as a face restorer does) the video does not depend on `batch_size` either. Other arguments
        as in `__call__`.
        """
        self.check_masks(region, keep)
        exclude_full = None
        if exclude is not None:
            info = probe_video(input_path)
            exclude_full = face_mask((info.width, info.height), region="custom", user_mask=exclude)
        sources = [np.atleast_2d(np.asarray(e, dtype=np.float32)) for e in source_embeds]
        track_source: dict[int, Optional[int]] = {}
        masks: dict[int, np.ndarray] = {}

        def source_of(job) -> Optional[int]:
            tid = job.track.track_id
            if tid not in track_source:
                face = job.track.face or Face(bbox=job.track.bbox, kps=job.track.kps, score=0.0, image_size=(0, 0))
                order = len(track_source)  # tracks are met in order of first appearance
                plan = assign_sources([face] * (order + 1), len(sources), mapping, reference_embeds)
                track_source[tid] = plan[order][0]
            return track_source[tid]

        def mask_of(job) -> np.ndarray:
            if id(job) not in masks:
                face = job.track.face or Face(bbox=job.track.bbox, kps=job.track.kps, score=0.0, image_size=(0, 0))
                face = dataclasses.replace(face, bbox=job.track.bbox, kps=job.track.kps)
                exclude_crop = None
                if exclude_full is not None:
                    exclude_crop = cv2.warpAffine(exclude_full, job.matrix, (self.crop_size,) * 2)
                masks[id(job)] = self.crop_mask(_face_in_crop(face, job.matrix, self.crop_size), job.crop,
                                                region=region, dilate=dilate, exclude=exclude_crop, keep=keep,
                                                occlusion=occlusion)
            return masks[id(job)]

        def process_crops(jobs):
            out, edited = [job.crop for job in jobs], []
            for k, job in enumerate(jobs):
                if source_of(job) is None:
                    masks[id(job)] = np.zeros((self.crop_size,) * 2, np.float32)
                else:
                    edited.append(k)
            swapped = self.swap_crops(
                [SwapCrop(jobs[k].crop, mask_of(jobs[k]), source_of(jobs[k]), jobs[k].kps, seed + jobs[k].track.track_id)
                 for k in edited], sources, batch_size=size, color_match=color_match, identity_scale=identity_scale,
                prompt=prompt, enhance_crops=enhance_crops, **generation)
            for k, crop in zip(edited, swapped):
                out[k] = crop
            return out

        size = self._batch_size(batch_size)
        report = process_video(
            input_path, output_path, process_crops, analyzer=self.analyzer, crop_size=self.crop_size,
            align_mode=self.align_mode, batch_size=size, mask_for=lambda job: masks.pop(id(job)),
            feather=feather, max_missing=max_missing, smooth_sigma=smooth_sigma, min_face_size=min_face_size,
            progress=progress, provenance=provenance,
        )
        report.notes.extend(f"track {tid}: left as is (no source)" for tid, s in track_source.items() if s is None)
        return report
