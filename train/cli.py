"""The training commands of idgen's CLI: `idgen prepare-data …` (a dataset of aligned faces from a
folder of photos, `prepare_data`), `idgen train lora …`, `idgen train adapter --kind
faceid|instantid|arc2face|pva …`, `idgen train restore …` (the restoration ControlNet) and
`idgen train svfr …` (video restoration).

They run under plain `idgen …` (one process) and under `accelerate launch` for several GPUs or
nodes: `accelerate launch --config_file train/configs/multi_gpu.yaml -m idgen.app.cli train …`.
The parsers come from `options` alone; the trainers (torch, diffusers) load when a command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from idgen import arguments
from idgen.train.options import (
    DEFAULT_CAPTION, DEFAULT_MIN_SHARPNESS, AdapterOptions, LoRAOptions, RestoreOptions, SVFROptions, TrainingArgs,
    add_dataclass_arguments, dataclass_from_namespace,
)

#: `name -> (help, options dataclass, argument group)` of each trainer.
TRAINERS = {
    "lora": ("DreamBooth-LoRA of one person from a few photos (SD1.5 / SDXL)", LoRAOptions, "LoRA"),
    "adapter": ("identity adapter (faceid, instantid, arc2face) on a prepared dataset", AdapterOptions, "adapter"),
    "restore": ("restoration ControlNet of FaceRestorePipeline on degraded pairs (SD1.5)", RestoreOptions, "restoration"),
    "svfr": ("SVFR video face restoration UNet on degraded face videos (SVD base)", SVFROptions, "SVFR"),
}


def _task(trainer: str, options, training: TrainingArgs):
    """The `TrainingTask` of `trainer` for its `options`."""
    # lazy: the trainers import torch and diffusers; `idgen train … --help` stays under 1.5 s
    from idgen.train.adapter import adapter_task
    from idgen.train.lora import LoRATask
    from idgen.train.restore import RestoreTask
    from idgen.train.svfr import SVFRTask

    factory = {"lora": LoRATask, "adapter": adapter_task, "restore": RestoreTask, "svfr": SVFRTask}[trainer]
    return factory(options, training)


def add_parser(subparsers) -> None:
    """Register `train` with its `lora`, `adapter`, `restore` and `svfr` subcommands on idgen's CLI."""
    train = subparsers.add_parser("train", help="train a LoRA of a person or an identity adapter")
    kinds = train.add_subparsers(dest="trainer", required=True)
    for name, (help_text, options_class, group) in TRAINERS.items():
        parser = kinds.add_parser(name, help=help_text)
        add_dataclass_arguments(parser, options_class, group)
        add_dataclass_arguments(parser, TrainingArgs, "training")
        parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from idgen.train.loop import run_training

    training = dataclass_from_namespace(TrainingArgs, args)
    task = _task(args.trainer, dataclass_from_namespace(TRAINERS[args.trainer][1], args), training)
    summary = run_training(task, training)
    print(f"trained {task.name}: {summary.steps} steps in {summary.seconds:.1f} s, final loss {summary.final_loss:.4f}")
    for path in summary.weights:
        print(f"  weights: {path}")
    print(f"  summary: {json.dumps({'output_dir': summary.output_dir, 'resumed_from': summary.resumed_from})}")
    return 0


def _cmd_prepare_data(args: argparse.Namespace) -> int:
    from idgen.train.prepare_data import prepare_dataset, prepare_distributed, prepare_parallel

    kwargs = dict(size=args.size, caption=args.caption, backend=args.backend, min_face_size=args.min_face_size,
                  min_sharpness=args.min_sharpness, shard_size=args.shard_size, overwrite=args.overwrite)
    if args.distributed:
        summary = prepare_distributed(args.photos_dir, args.out_dir, **kwargs)
    elif args.num_workers > 1:
        summary = prepare_parallel(args.photos_dir, args.out_dir, num_workers=args.num_workers, **kwargs)
    else:
        summary = prepare_dataset(args.photos_dir, args.out_dir, **kwargs)
    if summary is not None:  # None on the non-main processes of a distributed run
        reasons = ", ".join(f"{n} {r}" for r, n in summary["rejected_by_reason"].items()) or "none"
        out = Path(args.out_dir)
        print(f"kept {summary['count']} face(s), rejected {summary['rejected']} ({reasons}; see {out / 'rejected.jsonl'})")
        print(f"wrote a {summary['layout']} dataset of {summary['identities']} identity(ies) to {out} "
              f"({summary['size']} px crops, {summary['embedding_model']} {summary['embedding_dim']}-d embeddings)")
    return 0


def add_prepare_data_parser(subparsers) -> None:
    """Register `prepare-data` on idgen's CLI."""
    p = subparsers.add_parser("prepare-data", help="build a training dataset of aligned faces from a folder of photos",
                              description="Detect, align and crop the face in each photo; store the crops with "
                                          "captions, identity embeddings and keypoints as a training dataset; list "
                                          "the photos left out, with the reason, in OUT_DIR/rejected.jsonl.")
    p.add_argument("photos_dir", metavar="PHOTOS_DIR",
                   help="folder of photos, searched recursively (a photo's sub-folder is its identity), or an idgen "
                        "dataset (a folder with dataset.json, e.g. from `idgen synth`, or a .tar shard) whose images "
                        "are analysed again (another --backend, --size or filters)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output dataset folder (must be absent or empty unless --overwrite)")
    p.add_argument("--size", type=int, default=512, choices=[256, 512, 1024],
                   help="side of the aligned FFHQ-style crops in pixels (default 512; 1024 for SDXL)")
    p.add_argument("--caption", default=DEFAULT_CAPTION, metavar="TEMPLATE",
                   help="caption template; {identity} is the photo's sub-folder, {name} its file name (a dataset "
                        f"record's identity and key) (default {DEFAULT_CAPTION!r})")
    p.add_argument("--backend", choices=["dlib", "insightface"], default=None,
                   help="face backend: insightface gives the 512-d ArcFace embeddings the official adapters use, "
                        "dlib 128-d (default: IDGEN_FACE_BACKEND, else insightface if a pack is installed, else dlib)")
    p.add_argument("--min-face-size", type=arguments.integer(1), default=64, metavar="PX",
                   help="reject faces whose shorter box side in the photo is below this many pixels (default 64)")
    p.add_argument("--min-sharpness", type=arguments.number(0.0), default=DEFAULT_MIN_SHARPNESS, metavar="S",
                   help="reject crops whose blur score (variance of the Laplacian at 256 px) is below this "
                        f"(default {DEFAULT_MIN_SHARPNESS:g}; sharp portraits score ~150-750)")
    p.add_argument("--shard-size", type=arguments.integer(1), default=None, metavar="N",
                   help="write WebDataset tar shards of N records instead of a folder of files")
    parallel = p.add_mutually_exclusive_group()
    parallel.add_argument("--num-workers", type=arguments.integer(1), default=1, metavar="N",
                          help="processes on this machine, each preparing a share of the photos (default 1)")
    parallel.add_argument("--distributed", action="store_true",
                          help="share the photos over the processes of `accelerate launch` (GPUs, nodes)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR once the new dataset is complete")
    p.set_defaults(func=_cmd_prepare_data)
