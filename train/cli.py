"""`idgen train lora …`, `idgen train adapter --kind faceid|instantid|arc2face|pva …` and
`idgen train restore …` (the restoration ControlNet) and `idgen train svfr …` (video restoration).

Both run under plain `idgen train …` (one process) and under `accelerate launch` for several
GPUs or nodes: `accelerate launch --config_file train/configs/multi_gpu.yaml -m idgen.app.cli train …`.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    """Register `train` with its `lora` and `adapter` subcommands on idgen's CLI."""
    from idgen.train.adapter import AdapterOptions
    from idgen.train.loop import TrainingArgs, add_dataclass_arguments
    from idgen.train.lora import LoRAOptions
    from idgen.train.restore import RestoreOptions
    from idgen.train.svfr import SVFROptions

    train = subparsers.add_parser("train", help="train a LoRA of a person or an identity adapter")
    kinds = train.add_subparsers(dest="trainer", required=True)
    lora = kinds.add_parser("lora", help="DreamBooth-LoRA of one person from a few photos (SD1.5 / SDXL)")
    add_dataclass_arguments(lora, LoRAOptions, "LoRA")
    add_dataclass_arguments(lora, TrainingArgs, "training")
    lora.set_defaults(func=_run, options_class=LoRAOptions)
    adapter = kinds.add_parser("adapter", help="identity adapter (faceid, instantid, arc2face) on a prepared dataset")
    add_dataclass_arguments(adapter, AdapterOptions, "adapter")
    add_dataclass_arguments(adapter, TrainingArgs, "training")
    adapter.set_defaults(func=_run, options_class=AdapterOptions)
    restore = kinds.add_parser("restore", help="restoration ControlNet of FaceRestorePipeline on degraded pairs (SD1.5)")
    add_dataclass_arguments(restore, RestoreOptions, "restoration")
    add_dataclass_arguments(restore, TrainingArgs, "training")
    restore.set_defaults(func=_run, options_class=RestoreOptions)
    svfr = kinds.add_parser("svfr", help="SVFR video face restoration UNet on degraded face videos (SVD base)")
    add_dataclass_arguments(svfr, SVFROptions, "SVFR")
    add_dataclass_arguments(svfr, TrainingArgs, "training")
    svfr.set_defaults(func=_run, options_class=SVFROptions)


def _run(args: argparse.Namespace) -> int:
    from idgen.train.adapter import AdapterOptions, adapter_task
    from idgen.train.loop import TrainingArgs, dataclass_from_namespace, run_training
    from idgen.train.lora import LoRAOptions, LoRATask
    from idgen.train.restore import RestoreOptions, RestoreTask
    from idgen.train.svfr import SVFROptions, SVFRTask

    training = dataclass_from_namespace(TrainingArgs, args)
    options = dataclass_from_namespace(args.options_class, args)
    factory = {AdapterOptions: adapter_task, LoRAOptions: LoRATask, RestoreOptions: RestoreTask,
               SVFROptions: SVFRTask}[args.options_class]
    task = factory(options, training)
    summary = run_training(task, training)
    print(f"trained {task.name}: {summary.steps} steps in {summary.seconds:.1f} s, final loss {summary.final_loss:.4f}")
    for path in summary.weights:
        print(f"  weights: {path}")
    print(f"  summary: {json.dumps({'output_dir': summary.output_dir, 'resumed_from': summary.resumed_from})}")
    return 0
