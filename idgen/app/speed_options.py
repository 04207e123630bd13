"""Speed and memory options of the application commands (`generate`, `inpaint`, `swap`,
`restore`, the demo): their CLI flags, and applying a request's `SpeedOptions` to a built
pipeline once (`accelerate`) with the sampling defaults they imply (`sampling_defaults`).

Order of application: the few-step preset (its LoRA is fused before anything else sees the
weights), then the fast paths, the step cache and last the memory mode (offloading hooks wrap
the final modules).
"""

from __future__ import annotations

import argparse
from typing import Optional

from idgen import arguments
from idgen.acceleration.options import FAST_PRESET_NAMES, MEMORY_MODES, SPEEDS, SpeedOptions
from idgen.app.records import call_default
from idgen.errors import IdgenError

#: Denoising steps of the tiny embedded default when none are asked for: its random weights only
#: prove the plumbing, so a first demo job returns in seconds.
EMBEDDED_DEFAULT_STEPS = 4


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """`--speed`, `--fast`, `--fast-weights`, `--lora`, `--step-cache`, `--memory`, `--fp8`."""
    group = parser.add_argument_group("speed and memory")
    group.add_argument("--speed", choices=SPEEDS, default="default",
                       help="fast: fused attention, channels-last, bf16/fp16 and torch.compile on CUDA "
                            "(outputs within float tolerance of default)")
    group.add_argument("--fast", choices=FAST_PRESET_NAMES, default=None,
                       help="few-step preset; sets its scheduler, steps and CFG (needs --fast-weights)")
    group.add_argument("--fast-weights", metavar="PATH", default=None,
                       help="the preset's distilled LoRA file (Lightning: LoRA or UNet file)")
    group.add_argument("--lora", type=arguments.weighted_path, action="append", default=[], metavar="PATH[:SCALE]",
                       help="a LoRA file (e.g. trained with `idgen train lora`) at SCALE (default 1.0); repeat "
                            "for several")
    group.add_argument("--step-cache", type=arguments.integer(0), default=0, metavar="N",
                       help="DeepCache-style: a full UNet step every N steps, the others reuse its deep "
                            "features (0 = off; 3 is a good start)")
    group.add_argument("--memory", choices=MEMORY_MODES, default="max",
                       help="max: all on the GPU; balanced: model offload + VAE slicing; low: layer-wise "
                            "group offload + VAE tiling")
    group.add_argument("--fp8", action="store_true",
                       help="store UNet/ControlNet weights in float8, upcast per layer (halves them; lossy)")


def speed_arguments(args: argparse.Namespace) -> dict:
    """The `SpeedOptions` fields of parsed CLI arguments."""
    return {"speed": args.speed, "fast": args.fast, "fast_weights": args.fast_weights, "loras": tuple(args.lora),
            "step_cache": args.step_cache, "memory": args.memory, "fp8": args.fp8}


def accelerate(pipe, options: SpeedOptions) -> dict:
    """Apply `options` to `pipe` once and return what was done (for `record.json`). A pipeline
    already accelerated with the same options is left as it is; with other options it is an error
    (the caller builds one pipeline per `options.speed_key()`)."""
    key = options.speed_key()
    done = pipe.__dict__.get("_idgen_speed")
    if done is not None:
        if done["key"] != key:
            raise IdgenError("this pipeline was built for other speed/memory options; build a new one.")
        return done["record"]
    record: dict = {"options": options.speed_record()}
    if options.fast is not None:
        record["fast_preset"] = pipe.load_fast_preset(options.fast, options.fast_weights).to_dict()
    if options.loras:
        from idgen.models.loras import apply_loras  # lazy: this module is part of `idgen --help`

        record["loras"] = {"files": [{"path": path, "scale": scale} for path, scale in options.loras],
                           "applied": apply_loras(pipe, options.loras)}
    if options.speed == "fast":
        record["fast_inference"] = pipe.enable_fast_inference().to_dict()
    if options.step_cache:
        pipe.enable_step_cache(options.step_cache)
        record["step_cache"] = {"interval": options.step_cache}
    if options.memory != "max" or options.fp8:
        record["memory"] = pipe.set_memory_mode(options.memory, fp8=options.fp8).to_dict()
    pipe.__dict__["_idgen_speed"] = {"key": key, "record": record}
    return record


def sampling_defaults(pipe, steps: Optional[int], guidance_scale: Optional[float], embedded: bool,
                      default_steps: Optional[int] = None) -> dict:
    """`num_inference_steps` (and, under a few-step preset, `guidance_scale` / `eta`) for a call:
    what the request asks for, else the preset's recipe, else `default_steps` (a command's own
    default, e.g. `idgen.media.VIDEO_STEPS`), else `EMBEDDED_DEFAULT_STEPS` on the embedded default,
    else the pipeline's `__call__` default."""
    mode = getattr(pipe, "fast_mode", None)
    out = dict(mode.call_kwargs) if mode is not None else {}
    if steps is not None:
        out["num_inference_steps"] = steps
    elif mode is None and default_steps is not None:
        out["num_inference_steps"] = default_steps
    elif mode is None and embedded:
        out["num_inference_steps"] = EMBEDDED_DEFAULT_STEPS
    else:
        out.setdefault("num_inference_steps", call_default(pipe, "num_inference_steps"))
    if guidance_scale is not None:
        out["guidance_scale"] = guidance_scale
    return out
