"""Extra ControlNets beside InstantID's IdentityNet (`--control KIND=PATH:IMAGE[:SCALE[:START:END]]`):
what each one is, and its condition image.

KIND names the condition: `canny` computes the edge map from IMAGE (a photo) as the official
InstantID app does (`cv2.Canny(image, 100, 200)`); any other kind (`depth`, `pose`, ...) takes
IMAGE as the ready condition map (a depth map, an OpenPose drawing). PATH is the ControlNet folder
(diffusers `ControlNetModel`: `config.json` + weights), or `tiny` for a random miniature that fits
the tiny embedded default (`idgen.models.methods.TINY_CONTROLNET`). Light: no torch (the CLI parses these for `--help` speed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from idgen.validation import InvalidArgumentError, check_fraction, check_scale
#: Kinds whose IMAGE is a photo that idgen turns into the condition itself.
COMPUTED_KINDS = ("canny",)


@dataclass(frozen=True)
class ControlSpec:
    """One extra ControlNet: `kind`, its folder `path`, the `image` file, its conditioning `scale`
    and step window `start`..`end` (fractions of the steps)."""

    kind: str
    path: str
    image: str
    scale: float = 0.5
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        if not self.kind or not self.kind.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgumentError(f"a control's kind is a word such as depth, canny or pose, got {self.kind!r}.")
        if not self.path or not self.image:
            raise InvalidArgumentError("a control needs its ControlNet folder and its image: KIND=PATH:IMAGE[:SCALE].")
        object.__setattr__(self, "scale", check_scale("control scale", self.scale))
        object.__setattr__(self, "start", check_fraction("control start", self.start))
        object.__setattr__(self, "end", check_fraction("control end", self.end))
        if self.start >= self.end:
            raise InvalidArgumentError(f"a control's start ({self.start}) must be below its end ({self.end}).")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "image": self.image, "scale": self.scale,
                "start": self.start, "end": self.end}


def parse_control(text: str) -> ControlSpec:
    """`KIND=PATH:IMAGE[:SCALE[:START:END]]` -> `ControlSpec` (scale default 0.5, the window all
    steps). Raises `InvalidArgumentError` saying what is wrong."""
    kind, sep, rest = str(text).partition("=")
    parts = rest.split(":")
    if not sep or len(parts) not in (2, 3, 5):
        raise InvalidArgumentError(
            f"--control takes KIND=PATH:IMAGE[:SCALE[:START:END]] (e.g. depth=models/controlnet-depth:depth.png:0.5), "
            f"got {text!r}.")
    numbers = parts[2:]
    try:
        values = [float(v) for v in numbers]
    except ValueError:
        raise InvalidArgumentError(f"--control {text!r}: SCALE, START and END must be numbers.") from None
    scale = values[0] if values else 0.5
    start, end = (values[1], values[2]) if len(values) == 3 else (0.0, 1.0)
    return ControlSpec(kind.strip(), parts[0], parts[1], scale, start, end)


def condition_image(spec: ControlSpec, size: tuple[int, int]) -> np.ndarray:
    """The condition `[H, W, 3]` uint8 for `spec` at output `size` `(w, h)`: for `canny` the edges
    of the photo (`cv2.Canny(photo, 100, 200)` on the photo as it is, then resized: the official
    app's `get_canny_image` and `.resize`), else the image itself resized."""
    import cv2
    from PIL import Image

    from idgen.image_io import load_image

    image = load_image(spec.image)
    if spec.kind == "canny":
        image = np.repeat(cv2.Canny(image, 100, 200)[..., None], 3, axis=-1)
    # PIL's resize (bicubic), as the official app resizes its condition images
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(tuple(size)))
