"""Several people in one generated image: who is who (`Person`: reference photos, optionally one
face of a group photo), and where each goes (a region: a named part of the canvas, a box, or a
mask image). Used by `idgen generate` (`--face` groups with `--box` / `--mask`) and the demo's
multi-person assignment.

A region becomes, at the output size, the person's identity mask (`[H, W]` float in {0, 1}) and,
for InstantID, the place of the person's face keypoints: the reference face's keypoints fitted
into the region's box (`fit_kps`: one scale, centred), so each face lands inside its region.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from idgen.conditioning import fit_kps
from idgen.errors import IdgenError
from idgen.image_io import load_image
from idgen.validation import InvalidArgumentError

#: Named regions as fractions of the canvas `(x1, y1, x2, y2)`.
REGIONS = {
    "full": (0.0, 0.0, 1.0, 1.0),
    "left": (0.0, 0.0, 0.5, 1.0), "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5), "bottom": (0.0, 0.5, 1.0, 1.0),
    "left-third": (0.0, 0.0, 1 / 3, 1.0), "center-third": (1 / 3, 0.0, 2 / 3, 1.0), "right-third": (2 / 3, 0.0, 1.0, 1.0),
}

Box = tuple[float, float, float, float]


@dataclass
class Person:
    """One person of a generation: reference `faces` (photo paths; `photo.jpg#2` picks face 2,
    largest first, of a group photo) and where they go: `box` (`(x1, y1, x2, y2)` output pixels,
    or fractions of the canvas when all are <= 1, or a name of `REGIONS`) or `mask` (an image
    path, white = this person; resized to the output). Neither: the canvas is split into equal
    vertical strips, left to right in the order the people are given."""

    faces: list[str]
    box: Optional[Union[str, Box]] = None
    mask: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.faces, str):
            self.faces = [self.faces]
        if not self.faces:
            raise InvalidArgumentError("each person needs at least one face photo.")
        if self.box is not None and self.mask is not None:
            raise InvalidArgumentError("give a person a box or a mask, not both.")
        if self.box is not None:
            self.box = parse_box(self.box)


def face_reference(text: str) -> tuple[str, Optional[int]]:
    """`"photo.jpg#2"` -> `("photo.jpg", 2)`; a path without a `#<number>` tail -> `(path, None)`."""
    path, sep, tail = str(text).rpartition("#")
    if sep and path and tail.isdigit():
        return path, int(tail)
    return str(text), None


def parse_box(value: Union[str, Sequence[float]]) -> Union[str, Box]:
    """A region name of `REGIONS`, or 4 numbers `x1,y1,x2,y2` with x1 < x2, y1 < y2, all >= 0
    (pixels, or fractions when all are <= 1). Raises `InvalidArgumentError` naming the problem."""
    if isinstance(value, str) and value in REGIONS:
        return value
    try:
        numbers = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"a region is one of {', '.join(REGIONS)} or x1,y1,x2,y2 (pixels or fractions), got {value!r}.") from None
    if len(numbers) != 4 or not all(np.isfinite(numbers)):
        raise InvalidArgumentError(f"a box is 4 finite numbers x1,y1,x2,y2, got {value!r}.")
    x1, y1, x2, y2 = numbers
    if min(numbers) < 0 or x1 >= x2 or y1 >= y2:
        raise InvalidArgumentError(f"a box needs 0 <= x1 < x2 and 0 <= y1 < y2, got {value!r}.")
    return (x1, y1, x2, y2)


def box_pixels(box: Union[str, Box], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """`box` (name, fractions or pixels) as integer pixels of a `(w, h)` canvas, clipped to it."""
    w, h = size
    if isinstance(box, str):
        box = REGIONS[box]
    if max(box) <= 1.0:
        box = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
    x1, y1 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x2, y2 = min(w, int(round(box[2]))), min(h, int(round(box[3])))
    if x2 - x1 < 8 or y2 - y1 < 8:
        raise IdgenError(f"the region {box} is (almost) outside the {w}x{h} output; give a box inside it.")
    return x1, y1, x2, y2


def _strips(count: int) -> list[Box]:
    return [(i / count, 0.0, (i + 1) / count, 1.0) for i in range(count)]


@dataclass
class Placement:
    """Where one person goes at the output size: `mask` `[H, W]` float32 in {0, 1} and `box`
    (pixels) the face keypoints are fitted into."""

    mask: np.ndarray
    box: tuple[int, int, int, int]


def place_people(people: Sequence[Person], size: tuple[int, int]) -> list[Placement]:
    """Each person's mask and box at output `size` `(w, h)`; people without a box or mask share
    the vertical strips left to right. Raises `IdgenError` for an empty mask or one of no size."""
    w, h = size
    strips = iter(_strips(sum(1 for p in people if p.box is None and p.mask is None)))
    out = []
    for i, person in enumerate(people):
        if person.mask is not None:
            mask = cv2.resize(load_image(person.mask).max(axis=-1), (w, h), interpolation=cv2.INTER_NEAREST) > 127
            if not mask.any():
                raise IdgenError(f"the mask of person {i + 1} ({person.mask}) is empty: white marks the person's region.")
            ys, xs = np.nonzero(mask)
            out.append(Placement(mask.astype(np.float32), (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
            continue
        x1, y1, x2, y2 = box_pixels(person.box if person.box is not None else next(strips), size)
        mask = np.zeros((h, w), np.float32)
        mask[y1:y2, x1:x2] = 1.0
        out.append(Placement(mask, (x1, y1, x2, y2)))
    return out


def kps_in_box(kps: np.ndarray, image_size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """A face's keypoints `[5, 2]` (pixels of its photo of `image_size`) fitted into `box` of the
    output: the photo scaled into the box (aspect kept, centred), then offset by the box corner."""
    x1, y1, x2, y2 = box
    return fit_kps(kps, image_size, (x2 - x1, y2 - y1)) + np.array([x1, y1], np.float32)
