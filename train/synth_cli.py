"""`idgen synth`: the parser of the synthetic identity dataset command (`idgen.train.synth`). Free
of torch and diffusers, like the other parsers; the generator loads when the command runs.

One process: `idgen synth --out OUT ...`; every GPU and node: `accelerate launch ... -m
idgen.app.cli synth --out OUT ...` (the same options on every process, OUT on shared storage).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from idgen import arguments
from idgen.errors import DatasetError

#: Kept in step with `idgen.train.synth.SYNTH_METHODS` (tests/test_synth.py checks it).
METHODS = ("arc2face", "faceid", "faceid-sdxl", "faceid-portrait", "instantid", "instantid-sd15")


def _templates(args: argparse.Namespace):
    if args.prompts is None:
        return args.prompt_template or None
    try:
        lines = Path(args.prompts).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"--prompts {args.prompts}: cannot read it as UTF-8 text ({e}).") from None
    templates = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not templates:
        raise DatasetError(f"--prompts {args.prompts}: no template in it (one a line; # starts a comment).")
    return templates


def _cmd_synth(args: argparse.Namespace) -> int:
    from idgen.train.synth import SynthOptions, synthesize

    options = SynthOptions(
        identities=args.identities, images_per_identity=args.images_per_identity, method=args.method,
        min_distance=args.min_distance, templates=_templates(args), seed=args.seed, shard_size=args.shard_size,
        size=args.size, steps=args.steps, guidance_scale=args.guidance_scale, pose_jitter=args.pose_jitter,
        embedding_norm=args.embedding_norm, min_similarity=args.min_similarity, filter_backend=args.filter_backend,
        base=args.base, adapter=args.adapter, tiny=args.tiny)
    summary = synthesize(args.out, options, overwrite=args.overwrite, resume=args.resume, progress=not args.no_progress)
    if summary is not None:  # None on the non-main processes of `accelerate launch`
        reasons = ", ".join(f"{n} {r}" for r, n in summary["rejected_by_reason"].items()) or "none"
        print(f"kept {summary['count']} of {options.num_items} image(s) of {summary['identities']} identity(ies), "
              f"rejected {summary['rejected']} ({reasons})")
        print(f"wrote {len(summary['shards'])} shard(s) to {args.out} ({summary['size']} px, {options.method}); "
              f"train on it: idgen train adapter --kind KIND --base BASE --data {args.out} --output-dir DIR")
    return 0


def add_synth_parser(subparsers) -> None:
    """Register `synth` on idgen's CLI."""
    p = subparsers.add_parser(
        "synth", help="generate a synthetic identity dataset (sampled ArcFace vectors -> images), on 1..many GPUs",
        description="Sample N identity vectors on the ArcFace hypersphere at a minimum pairwise distance and "
                    "generate M images of each with an identity method (its own seed, prompt template and, for "
                    "InstantID, pose per image). Writes a WebDataset dataset that `idgen train adapter --data` "
                    "reads. Runs under `accelerate launch` too: each process writes its share of the shards; "
                    "--resume completes a killed run.")
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset folder (shared by every process)")
    p.add_argument("--identities", type=arguments.integer(1), required=True, metavar="N", help="number of identities")
    p.add_argument("--images-per-identity", type=arguments.integer(1), required=True, metavar="M",
                   help="images generated per identity")
    p.add_argument("--method", choices=METHODS, default="arc2face",
                   help="identity method that generates the images from the vectors (default arc2face)")
    p.add_argument("--base", default=None, help="base model folder (default: the configured one)")
    p.add_argument("--adapter", default=None, help="the method's adapter weights (default: the configured ones)")
    p.add_argument("--tiny", action="store_true", help="the tiny embedded default (random weights; dry runs, tests)")
    p.add_argument("--min-distance", type=arguments.number(0.0, 2.0), default=0.7, metavar="D",
                   help="minimum cosine distance 1-cos between identity vectors (default 0.7: cosine <= 0.3)")
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument("--prompt-template", action="append", metavar="TEXT",
                         help="a prompt template ({identity}: the identity's label); repeat for several; each image "
                              "draws one (default: a few portrait prompts; Arc2Face's 'photo of a id person')")
    prompts.add_argument("--prompts", metavar="FILE", help="prompt templates, one a line")
    p.add_argument("--seed", type=arguments.seed, default=0, help="seeds the identities and every image (default 0)")
    p.add_argument("--shard-size", type=arguments.integer(1), default=256, metavar="K",
                   help="images per WebDataset shard, the unit of work and of resume (default 256)")
    p.add_argument("--size", type=arguments.size, default=None, metavar="PX",
                   help="square image side (default: the base model's native size)")
    p.add_argument("--steps", type=arguments.steps, default=25, help="denoising steps per image (default 25)")
    p.add_argument("--guidance-scale", type=arguments.number(0.0), default=None, metavar="G",
                   help="classifier-free guidance (default: the method's)")
    p.add_argument("--pose-jitter", type=arguments.number(0.0), default=1.0, metavar="J",
                   help="InstantID pose variation: 0 frontal, 1 up to 15 degrees roll, 10%% scale, yaw (default 1)")
    p.add_argument("--embedding-norm", type=arguments.number(0.0, low_open=True), default=None, metavar="R",
                   help="norm of the vectors fed to the generator and stored (default 1; 20 for InstantID's raw "
                        "ArcFace embeddings)")
    p.add_argument("--min-similarity", type=arguments.number(-1.0, 1.0), default=None, metavar="T",
                   help="reject images whose face similarity to their identity is below T (cosine; insightface: "
                        "to the sampled vector, dlib: to the identity's first image with a face); default off")
    p.add_argument("--filter-backend", choices=["dlib", "insightface"], default=None,
                   help="face backend of --min-similarity (default: insightface if a pack is installed, else dlib)")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--overwrite", action="store_true", help="delete DIR's contents and start again")
    run.add_argument("--resume", action="store_true",
                     help="complete a killed run in DIR (same options; any number of processes): skip its finished shards")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)
