"""The face post-pass (`--enhance`): every face of an image aligned to the 512 FFHQ crop, restored
(CodeFormer, GFPGAN, RestoreFormer++), blended with the original crop, and pasted back through a
feathered mask: the parsed face (skin, brows, eyes, glasses, ears, nose, mouth, lips: no hair,
neck or clothes, as facexlib's parsing paste) when a face parser is present, minus what occludes
the face (a hand over the mouth) when asked; else the whole crop, eroded and feathered (facexlib's
paste without a parser). Pixels outside the pasted mask are returned unchanged, bit for bit.

Crops of many images (the frames of a video) go through the restorer in batches; the result of
a frame does not depend on the batch it was in (the restorers are deterministic per sample; CPU
kernels may sum a batch in another order, ~1e-6 apart, so a rare pixel rounds one level off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from idgen.face import Face, align_face, paste_back
from idgen.face.parsing import face_occlusion
from idgen.validation import InvalidArgumentError, check_integer, check_number

#: The restorers' input: the 512 FFHQ-aligned crop (all the official models are trained on it).
CROP_SIZE = 512
#: The parsed classes pasted back (the face without hair, neck, clothes and background).
PASTE_CLASSES = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r", "nose",
                 "mouth", "u_lip", "l_lip")
#: Pixels at a 512 crop's border never pasted (facexlib's `thres`; scaled for other sizes), so no
#: seam shows at the crop's edge.
BORDER = 10

#: `[B, 3, 512, 512]` float32 CPU RGB in [-1, 1] -> the restored crops, same shape and range (any
#: device: `restorer_function` moves them).
RestoreFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EnhanceOptions:
    """How faces are pasted back: `blend` of the restored crop (1: restored, 0: unchanged),
    `feather` of the mask's edge and `dilate` of the parsed mask, in pixels of a 512 crop (scaled
    for other crop sizes),
    `keep_occluders` (what covers the face stays as it was), `batch_size` crops per restorer call."""

    blend: float = 1.0
    feather: int = 24
    dilate: int = 8
    keep_occluders: bool = True
    batch_size: int = 8

    def __post_init__(self):
        object.__setattr__(self, "blend", check_number("enhance blend", self.blend, low=0.0, high=1.0))
        object.__setattr__(self, "feather", check_integer("enhance feather", self.feather, low=0, high=CROP_SIZE // 4))
        object.__setattr__(self, "dilate", check_integer("enhance dilate", self.dilate, low=0, high=CROP_SIZE // 4))
        object.__setattr__(self, "batch_size", check_integer("enhance batch_size", self.batch_size, low=1))


def crops_to_tensor(crops: Sequence[np.ndarray]) -> torch.Tensor:
    """`[S, S, 3]` uint8 crops -> `[B, 3, S, S]` float32 in [-1, 1]."""
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


def tensor_to_crops(batch: torch.Tensor) -> list[np.ndarray]:
    """`[B, 3, S, S]` in [-1, 1] -> `[S, S, 3]` uint8 crops (clamped, rounded)."""
    pixels = ((batch.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return list(pixels.permute(0, 2, 3, 1).cpu().numpy())


class FaceEnhancer:
    """Restore the faces of images and paste them back.

    Args:
        restore: the restorer (`RestoreFunction`; e.g. `functools.partial(codeformer, w=0.5)`).
        parser: a `FaceParser` (optional): the paste mask from the parsed face, and occluders.
        occluder: an `OcclusionModel` (optional; facefusion's ONNX occluder): what covers the face.
        options: `EnhanceOptions`.
        size: the restorer's crop size (512 for the official models; the tiny embedded ones are smaller).
    """

    def __init__(self, restore: RestoreFunction, *, parser=None, occluder=None,
                 options: EnhanceOptions = EnhanceOptions(), size: int = CROP_SIZE):
        self.size = check_integer("enhance crop size", size, low=16)
        self.restore = restore
        self.parser = parser
        self.occluder = occluder
        self.options = options

    def _scaled(self, pixels: int) -> int:
        """`pixels` of a 512 crop at this crop size."""
        return round(pixels * self.size / CROP_SIZE)

    @torch.no_grad()
    def restore_crops(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The restored `[size, size, 3]` uint8 crops, `options.batch_size` per restorer call."""
        out = []
        for start in range(0, len(crops), self.options.batch_size):
            batch = crops_to_tensor(crops[start:start + self.options.batch_size])
            restored = self.restore(batch)
            if restored.shape != batch.shape:
                raise InvalidArgumentError(f"the restorer returned {tuple(restored.shape)} for crops {tuple(batch.shape)}.")
            out += tensor_to_crops(restored)
        return out

    def enhance_crops(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Aligned face crops `[S, S, 3]` uint8 (any one size S, e.g. a face swap's) restored and
        blended by `options.blend`, at their own size: resized to the restorer's crop and back."""
        if not crops:
            return []
        side = crops[0].shape[0]
        resized = [c if side == self.size else cv2.resize(c, (self.size,) * 2, interpolation=cv2.INTER_CUBIC)
                   for c in crops]
        out = []
        for crop, restored in zip(crops, self.restore_crops(resized)):
            if side != self.size:
                restored = cv2.resize(restored, (side, side), interpolation=cv2.INTER_AREA)
            out.append(self._blend(restored, crop))
        return out

    def _blend(self, restored: np.ndarray, crop: np.ndarray) -> np.ndarray:
        blend = self.options.blend
        if blend >= 1.0:
            return restored
        return np.clip(np.rint(blend * restored.astype(np.float32) + (1 - blend) * crop), 0, 255).astype(np.uint8)

    def paste_mask(self, crop: np.ndarray, restored: np.ndarray) -> Optional[np.ndarray]:
        """The `[S, S]` float mask in [0, 1] that pastes `restored` over the original `crop`; None
        without a parser (`paste_back`'s whole, eroded crop)."""
        if self.parser is None:
            return None
        mask = self.parser.mask(self.parser.parse(restored), include=PASTE_CLASSES, exclude=()).astype(np.float32)
        dilate = self._scaled(self.options.dilate)
        if dilate:
            mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1,) * 2))
        if self.options.keep_occluders:  # what covers the face of the original crop stays
            labels = None if self.occluder is not None else self.parser.parse(crop)
            mask = mask * (1.0 - face_occlusion(crop, labels, self.occluder))
        border = max(1, self._scaled(BORDER))
        mask[:border] = mask[-border:] = 0.0
        mask[:, :border] = mask[:, -border:] = 0.0
        return mask

    def enhance(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """`image` `[H, W, 3]` uint8 with each of `faces` (records of this image) restored."""
        return self.enhance_frames([image], [faces])[0]

    def enhance_frames(self, images: Sequence[np.ndarray], faces: Sequence[Sequence[Face]]) -> list[np.ndarray]:
        """`enhance` for many images (video frames) at once: all their crops go through the
        restorer in batches. `faces[i]`: the faces of `images[i]` (may be empty)."""
        if len(images) != len(faces):
            raise InvalidArgumentError(f"{len(images)} images but {len(faces)} face lists.")
        if self.options.blend == 0.0:  # nothing of the restored faces: the images as they are
            return [np.array(image, copy=True) for image in images]
        aligned = [(i, align_face(images[i], face.kps, size=self.size, mode="ffhq"))
                   for i in range(len(images)) for face in faces[i]]
        restored = self.restore_crops([a.image for _, a in aligned])
        out = [np.array(image, copy=True) for image in images]
        for (i, crop), face_out in zip(aligned, restored):
            face_out = self._blend(face_out, crop.image)
            mask = self.paste_mask(crop.image, face_out)
            out[i] = paste_back(out[i], face_out, crop.inverse, mask=mask, feather=self._scaled(self.options.feather))
        return out
