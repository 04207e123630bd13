"""The face post-pass of the application commands (`--enhance NAME[:W]`, `--enhance-blend B` on
`generate`, `inpaint`, `swap`, `restore`, and the demo's tabs): parsing the option, and applying
it to the outputs. Light at import (no torch): the CLI parses these for `--help`."""

from __future__ import annotations

import argparse
from typing import Optional

import numpy as np

from idgen import arguments
from idgen.models.methods import ENHANCE_RESTORERS, ENHANCE_WEIGHTED
from idgen.validation import InvalidArgumentError, check_number


def parse_enhance(text: str) -> tuple[str, Optional[float]]:
    """`NAME[:W]` -> `(name, weight or None)`; `InvalidArgumentError` saying what is wrong."""
    name, sep, weight = str(text).strip().partition(":")
    if name not in ENHANCE_RESTORERS:
        raise InvalidArgumentError(f"--enhance takes {'|'.join(ENHANCE_RESTORERS)}[:W], got {text!r}.")
    if not sep:
        return name, None
    if name not in ENHANCE_WEIGHTED:  # refused before the job runs, not after its generation
        raise InvalidArgumentError(f"--enhance {text!r}: {name} has no fidelity weight; only "
                                   f"{', '.join(ENHANCE_WEIGHTED)} take NAME:W.")
    try:
        value = float(weight)
    except ValueError:
        raise InvalidArgumentError(f"--enhance {text!r}: W (the fidelity weight) must be a number in [0, 1].") from None
    return name, check_number("enhance weight", value, low=0.0, high=1.0)


def enhance_value(name: str, weight: Optional[float] = None) -> str:
    """The request's `enhance` field for restorer `name` at fidelity `weight` (None: its default)."""
    return name if weight is None else f"{name}:{weight}"


def add_enhance_arguments(parser: argparse.ArgumentParser) -> None:
    """`--enhance NAME[:W]` and `--enhance-blend B`."""
    group = parser.add_argument_group("face post-pass")
    group.add_argument("--enhance", type=arguments.typed(parse_enhance), default=None, metavar="NAME[:W]",
                       help=f"restore every face of the output: {', '.join(ENHANCE_RESTORERS)} (official files, see "
                            "`idgen doctor`); W: CodeFormer's fidelity (0 = codebook face, 1 = closest to the input; 0.5)")
    group.add_argument("--enhance-blend", type=arguments.fraction, default=1.0, metavar="B",
                       help="how much of the restored face is used (1 = all, default; 0 = none)")


def enhance_arguments(args: argparse.Namespace) -> dict:
    """The request fields of the parsed `--enhance` options."""
    if args.enhance is None:
        return {"enhance": None}
    return {"enhance": enhance_value(*args.enhance), "enhance_blend": args.enhance_blend}


def _enhancer(request):
    from idgen.models.enhancers import build_face_enhancer
    from idgen.restorers.enhance import EnhanceOptions

    name, weight = parse_enhance(request.enhance)
    # the restorer follows the job's own weights rule: tiny with the embedded default, else real
    return build_face_enhancer(name, weight, EnhanceOptions(blend=request.enhance_blend),
                               embedded_default=request.embedded_default)


def enhance_record(request, embedded: bool, notes: list[str], faces: Optional[int] = None) -> dict:
    """What `record.json` says of the post-pass."""
    return {"restorer": request.enhance, "blend": request.enhance_blend, "embedded_default": embedded,
            "notes": notes, **({} if faces is None else {"faces": faces})}


def enhance_photos(request, images: list[np.ndarray], analyzer) -> tuple[list[np.ndarray], Optional[dict]]:
    """`images` `[H, W, 3]` uint8 with every face (found by `analyzer`) restored by
    `request.enhance`; unchanged, and None for the record, when no post-pass is asked for."""
    if request.enhance is None:
        return images, None
    from idgen.errors import FaceNotFoundError

    enhancer, embedded, notes = _enhancer(request)
    faces = []
    for image in images:
        try:
            faces.append(analyzer.get(image, select="all"))
        except FaceNotFoundError:
            faces.append([])
    if not any(faces):
        notes = notes + ["--enhance: no face found in the output: left as is"]
    return enhancer.enhance_frames(images, faces), enhance_record(request, embedded, notes, sum(map(len, faces)))


def crop_enhancer(request):
    """`(enhance_crops, record)` for a face swap / inpainting (`FaceSwapper`'s hook: the swapped
    crops restored before they are pasted back); `(None, None)` without `--enhance`."""
    if request.enhance is None:
        return None, None
    enhancer, embedded, notes = _enhancer(request)
    return enhancer.enhance_crops, enhance_record(request, embedded, notes)
