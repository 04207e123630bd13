"""`idgen train lora …`, `idgen train adapter --kind faceid|instantid|arc2face|pva …` and
`idgen train restore …` (the restoration ControlNet) and `idgen train svfr …` (video restoration).

Both run under plain `idgen train …` (one process) and under `accelerate launch` for several
GPUs or nodes: `accelerate launch --config_file train/configs/multi_gpu.yaml -m idgen.app.cli train …`.
"""

from __future__ import annotations

import argparse
import json

from idgen.train.adapter import AdapterOptions, adapter_task
from idgen.train.loop import TrainingArgs, add_dataclass_arguments, dataclass_from_namespace, run_training
from idgen.train.lora import LoRAOptions, LoRATask
from idgen.train.restore import RestoreOptions, RestoreTask
from idgen.train.svfr import SVFROptions, SVFRTask


def _trainers() -> dict:
    """`name -> (help, options dataclass, argument group, task factory)` of each trainer."""
    return {
        "lora": ("DreamBooth-LoRA of one person from a few photos (SD1.5 / SDXL)", LoRAOptions, "LoRA", LoRATask),
        "adapter": ("identity adapter (faceid, instantid, arc2face) on a prepared dataset", AdapterOptions, "adapter",
                    adapter_task),
        "restore": ("restoration ControlNet of FaceRestorePipeline on degraded pairs (SD1.5)", RestoreOptions,
                    "restoration", RestoreTask),
        "svfr": ("SVFR video face restoration UNet on degraded face videos (SVD base)", SVFROptions, "SVFR", SVFRTask),
    }


def add_parser(subparsers) -> None:
    """Register `train` with its `lora`, `adapter`, `restore` and `svfr` subcommands on idgen's CLI."""
    train = subparsers.add_parser("train", help="train a LoRA of a person or an identity adapter")
    kinds = train.add_subparsers(dest="trainer", required=True)
    for name, (help_text, options_class, group, _) in _trainers().items():
        parser = kinds.add_parser(name, help=help_text)
        add_dataclass_arguments(parser, options_class, group)
        add_dataclass_arguments(parser, TrainingArgs, "training")
        parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    _, options_class, _, factory = _trainers()[args.trainer]
    training = dataclass_from_namespace(TrainingArgs, args)
    task = factory(dataclass_from_namespace(options_class, args), training)
    summary = run_training(task, training)
    print(f"trained {task.name}: {summary.steps} steps in {summary.seconds:.1f} s, final loss {summary.final_loss:.4f}")
    for path in summary.weights:
        print(f"  weights: {path}")
    print(f"  summary: {json.dumps({'output_dir': summary.output_dir, 'resumed_from': summary.resumed_from})}")
    return 0
