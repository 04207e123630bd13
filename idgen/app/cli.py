"""The `idgen` command line.

Exit codes (stable, for scripts): 0 success; 1 an unexpected failure (a bug: rerun with --debug
and report it); 2 usage error (unknown option, an option value out of range); 3 bad input (no
face, several faces, unreadable image, wrong or corrupt checkpoint, an output that exists, not
enough memory); 4 a model or weight file is missing; 5 `idgen verify` found no provenance;
130 interrupted (Ctrl-C). Only `--debug` (or IDGEN_DEBUG=1) shows Python tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from idgen import arguments
from idgen.models.methods import GENERATION_METHODS
from idgen.style import STYLE_BLOCKS, STYLE_PRESETS
from idgen.app.enhance_options import add_enhance_arguments, enhance_arguments
from idgen.app.speed_options import add_speed_arguments, speed_arguments
from idgen.errors import IdgenError, InsufficientMemoryError, ModelNotFoundError

logger = logging.getLogger("idgen")

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_MISSING_MODEL = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130


def _cmd_doctor(args: argparse.Namespace) -> int:
    from idgen.models.doctor import doctor_report, format_doctor_report

    report = doctor_report(full=args.full)
    print(json.dumps(report, indent=2) if args.json else format_doctor_report(report))
    return EXIT_OK


def _select(value: str):
    return int(value) if value.lstrip("-").isdigit() else value


def _cmd_faces(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from idgen.conditioning import draw_kps, face_mask
    from idgen.face import align_face, get_face_analyzer
    from idgen.identity import analyze_photo

    analyzer = get_face_analyzer(args.backend)
    image, faces = analyze_photo(args.image, analyzer, args.select)
    faces = faces if isinstance(faces, list) else [faces]
    if args.json:
        print(json.dumps([f.to_dict(with_embedding=args.embedding) for f in faces], indent=2))
    else:
        for i, face in enumerate(faces):
            x1, y1, x2, y2 = (round(float(v)) for v in face.bbox)
            print(f"face {i}: bbox=({x1},{y1},{x2},{y2}) score={face.score:.3f} "
                  f"embedding={face.embedding_model}:{face.embedding_dim}")
    if args.draw:
        drawing = image.copy()
        for face in faces:
            x1, y1, x2, y2 = (int(round(float(v))) for v in face.bbox)
            cv2.rectangle(drawing, (x1, y1), (x2, y2), (0, 255, 0), 2)
        kps_layers = [np.asarray(draw_kps((image.shape[1], image.shape[0]), f.kps)) for f in faces]
        overlay = np.maximum.reduce(kps_layers) if kps_layers else np.zeros_like(drawing)
        drawing = np.where(overlay.sum(-1, keepdims=True) > 0, overlay, drawing)
        _save(drawing, args.draw)
    if args.crops:
        out = Path(args.crops)
        out.mkdir(parents=True, exist_ok=True)
        for i, face in enumerate(faces):
            crop = align_face(image, face.kps, size=args.crop_size).image
            _save(crop, out / f"face{i}_aligned{args.crop_size}.png")
            mask = face_mask((image.shape[1], image.shape[0]), face, feather=8)
            _save((mask * 255).astype(np.uint8), out / f"face{i}_mask.png")
    return EXIT_OK


def _region(text: str):
    """argparse type of `--box`: a region name or x1,y1,x2,y2 (`idgen.app.people.parse_box`)."""
    from idgen.app.people import parse_box

    return parse_box(text)


def _control(text: str):
    """argparse type of `--control` (`idgen.app.controls.parse_control`)."""
    from idgen.app.controls import parse_control

    return parse_control(text)


def _people(args: argparse.Namespace) -> list:
    """The `--face` groups with their `--box` / `--mask` regions, in order (one region per person,
    or none: the canvas is split into vertical strips)."""
    from idgen.app.people import Person

    groups = args.face
    if args.box and args.mask:
        raise IdgenError("give every person a --box, or every person a --mask, not some of each.")
    regions = args.box or args.mask or []
    if regions and len(regions) != len(groups):
        raise IdgenError(f"{len(groups)} --face groups (people) need as many --box/--mask values, got {len(regions)}.")
    key = "box" if args.box else "mask"
    return [Person(group, **({key: regions[i]} if regions else {})) for i, group in enumerate(groups)]


def _cmd_generate(args: argparse.Namespace) -> int:
    from idgen.app.generate import GenerationRequest, generate

    request = GenerationRequest(
        method=args.method, people=_people(args), prompt=args.prompt, negative_prompt=args.negative_prompt,
        pose=args.pose, base=args.base, adapter=args.adapter, seed=args.seed, steps=args.steps,
        guidance_scale=args.guidance_scale, identity_scale=args.identity_scale, control_scale=args.control_scale,
        identity_start=args.identity_start, identity_end=args.identity_end,
        width=args.width, height=args.height, num_images=args.num_images, reference_mode=args.reference_mode,
        controls=args.control, init_image=args.init_image, strength=args.strength, style=args.style,
        style_image=args.style_image, style_scale=args.style_scale, style_blocks=args.style_blocks,
        negative_noise=args.negative_noise,
        face_backend=args.backend, embedded_default=True if args.tiny else None, **speed_arguments(args),
        **enhance_arguments(args),
    )
    record = generate(request, Path(args.out), overwrite=args.overwrite)
    for note in [record["note"], *record["notes"]]:
        if note:
            print(f"note: {note}", file=sys.stderr)
    for path in record["files"]:
        print(path)
    print(str(Path(args.out) / "record.json"))
    return EXIT_OK


def _save(array, path) -> None:
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idgen", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks of failures (also IDGEN_DEBUG=1); implies --verbose")
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="versions, device, and which models are present or missing")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--full", action="store_true",
                        help="also import torch (a few seconds) and report the device it sees: CUDA and its GPU, MPS or CPU")
    doctor.set_defaults(func=_cmd_doctor)

    faces = sub.add_parser("faces", help="detect faces: boxes, keypoints, embeddings, crops, masks")
    faces.add_argument("image", help="image file")
    faces.add_argument("--backend", choices=["dlib", "insightface"], default=None,
                       help="face backend (default: IDGEN_FACE_BACKEND, else insightface if a pack is installed, else dlib)")
    faces.add_argument("--select", type=_select, default="all",
                       help="'all' (default), 'largest', 'one' (exactly one required) or an index (largest first)")
    faces.add_argument("--json", action="store_true", help="one JSON record per face: bbox, score, kps ([x, y] x5), ...")
    faces.add_argument("--embedding", action="store_true", help="include the identity embedding in --json")
    faces.add_argument("--draw", metavar="OUT", help="write the image with boxes and the InstantID keypoint drawing")
    faces.add_argument("--crops", metavar="DIR", help="write aligned crops and face masks to DIR")
    faces.add_argument("--crop-size", type=int, default=512, choices=[112, 224, 512, 1024])
    faces.set_defaults(func=_cmd_faces)

    gen = sub.add_parser("generate", help="generate images of the person (or people) in --face photos")
    gen.add_argument("--method", required=True, choices=GENERATION_METHODS)
    gen.add_argument("--face", required=True, nargs="+", action="append", metavar="PHOTO",
                     help="photos of one person (several are combined; PHOTO#N takes face N of a group photo); "
                          "repeat --face for each person of a multi-person image")
    gen.add_argument("--box", action="append", type=arguments.typed(_region), metavar="REGION",
                     help="where each person goes, one per --face group in order: left, right, top, bottom, "
                          "left-third, center-third, right-third, full, or x1,y1,x2,y2 (pixels or fractions)")
    gen.add_argument("--mask", action="append", metavar="IMAGE",
                     help="instead of --box: a mask image per person (white = that person's region)")
    gen.add_argument("--prompt", default="photo of a person", help="text prompt (arc2face: ignored, it uses its identity prompt)")
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--pose", metavar="PHOTO", help="InstantID: take the face keypoints from this photo")
    gen.add_argument("--base", metavar="PATH", help="base model folder, single file or cached hub id (default: configured)")
    gen.add_argument("--adapter", metavar="PATH", help="adapter file; arc2face: its arc2face/ UNet folder (default: configured)")
    gen.add_argument("--out", default="outputs", metavar="DIR", help="output folder (images + record.json)")
    gen.add_argument("--overwrite", action="store_true", help="replace earlier results of the same names in --out")
    gen.add_argument("--seed", type=arguments.seed, default=0)
    gen.add_argument("--steps", type=arguments.steps, default=None, help="default: the method's official default")
    gen.add_argument("--guidance-scale", type=arguments.scale, default=None)
    gen.add_argument("--identity-scale", type=arguments.scale, default=None)
    gen.add_argument("--control-scale", type=arguments.scale, default=None, help="InstantID IdentityNet scale")
    gen.add_argument("--identity-start", type=arguments.fraction, default=None, help="fraction of the steps where the identity starts")
    gen.add_argument("--identity-end", type=arguments.fraction, default=None, help="fraction of the steps where the identity ends")
    gen.add_argument("--width", type=arguments.size, default=None, help="pixels, a multiple of 8")
    gen.add_argument("--height", type=arguments.size, default=None, help="pixels, a multiple of 8")
    gen.add_argument("--num-images", type=arguments.integer(1), default=1,
                     help="images per run (at most IDGEN_MAX_BATCH, default 16)")
    gen.add_argument("--reference-mode", default="mean", choices=["mean", "normed_mean", "concat"],
                     help="how several --face photos of one person are combined")
    extra = gen.add_argument_group("conditions and style")
    extra.add_argument("--control", action="append", default=[], type=arguments.typed(_control),
                       metavar="KIND=PATH:IMAGE[:SCALE[:START:END]]",
                       help="InstantID: an extra ControlNet after the IdentityNet, e.g. depth=models/cn-depth:depth.png:0.5 "
                            "(canny computes the edges of IMAGE; other kinds take IMAGE as the condition; PATH "
                            "'tiny' on the embedded default); repeat for several")
    extra.add_argument("--init-image", metavar="IMAGE", help="InstantID img2img: start from this image (its size)")
    extra.add_argument("--strength", type=arguments.fraction, default=None, help="img2img strength (default 0.8)")
    extra.add_argument("--style", choices=STYLE_PRESETS, default=None, help="a prompt style preset (InstantID app's)")
    extra.add_argument("--style-image", metavar="IMAGE", help="a style reference image (InstantStyle; needs the "
                                                             "standard IP-Adapter of the base, see `idgen doctor`)")
    extra.add_argument("--style-scale", type=arguments.scale, default=1.0, help="style reference strength (default 1.0)")
    extra.add_argument("--style-blocks", choices=STYLE_BLOCKS, default="style",
                       help="blocks the style image acts in: style (InstantStyle), style+layout, all")
    extra.add_argument("--negative-noise", type=arguments.scale, default=None,
                       help="negative identity as noise of this strength instead of zeros (InstantID, FaceID)")
    gen.add_argument("--backend", choices=["dlib", "insightface"], default=None, help="face backend")
    gen.add_argument("--tiny", action="store_true", help="force the tiny embedded default (random weights)")
    add_speed_arguments(gen)
    add_enhance_arguments(gen)
    gen.set_defaults(func=_cmd_generate)

    from idgen.app.demo.cli import add_parser as add_demo_parser
    from idgen.app.edit import add_parsers as add_face_edit_parsers
    from idgen.app.restore import add_parsers as add_restore_parsers
    from idgen.train.cli import add_parser as add_train_parser, add_prepare_data_parser
    from idgen.train.synth_cli import add_synth_parser
    from idgen.app.verify import add_parser as add_verify_parser

    add_face_edit_parsers(sub)
    add_restore_parsers(sub)
    add_demo_parser(sub)
    add_prepare_data_parser(sub)
    add_synth_parser(sub)
    add_train_parser(sub)
    add_verify_parser(sub)
    return parser


def _debug_requested(argv: Optional[Sequence[str]]) -> bool:
    return os.environ.get("IDGEN_DEBUG", "").lower() in ("1", "true", "yes") or "--debug" in (
        sys.argv[1:] if argv is None else argv)


def _out_of_memory(e: BaseException) -> bool:
    """torch's and Python's out-of-memory errors (CUDA OOM is a RuntimeError subclass)."""
    import torch  # the CLI's commands have imported it by the time a job runs out of memory

    return isinstance(e, (MemoryError, torch.OutOfMemoryError))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns its exit code (see the module docstring). Errors are one line on
    stderr; with --debug / IDGEN_DEBUG=1 they are raised, traceback and all."""
    debug = _debug_requested(argv)
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose or debug else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        return args.func(args)
    except SystemExit as e:  # argparse: --help (0) and usage errors (2, message already printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            raise
        print("idgen: interrupted; nothing was written for the unfinished job.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModelNotFoundError as e:
        if debug:
            raise
        print(f"idgen: missing model: {e}", file=sys.stderr)
        return EXIT_MISSING_MODEL
    except IdgenError as e:
        if debug:
            raise
        print(f"idgen: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:
        if debug:
            raise
        if _out_of_memory(e):
            print(f"idgen: {InsufficientMemoryError.advice()}", file=sys.stderr)
            return EXIT_BAD_INPUT
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"idgen: unexpected error ({type(e).__name__}: {first}); rerun with --debug for the traceback "
              "and report it.", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
