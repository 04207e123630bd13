"""Speed and drift of the DeepCache-style step cache (`idgen.acceleration.step_cache`) against the
plain UNet, on random weights (no downloads).

    python bench/bench_step_cache.py                          # medium UNet, 64 latents, CPU: minutes
    python bench/bench_step_cache.py --latent 32 --steps 10   # smaller, a couple of minutes on CPU
    python bench/bench_step_cache.py --size full --device cuda --dtype float16

Cases: "sd15" is diffusers' StableDiffusionPipeline, "instantid" idgen's SDXL InstantID pipeline
(its IdentityNet is a ControlNet), both with bench_pipelines.py's UNet of `--size`. Each runs
`--steps` steps plain, then with the cache at each `--interval` (InstantID also with its ControlNet
cached). s/step is the mean gap between step-end callbacks after step 0 (which holds the prompt
encoding; it is a full step either way); the drift is the max / mean |image - plain image| of
the decoded output in [0, 1], a quality proxy only: random weights make no picture.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from bench_pipelines import LATENT, build

from idgen.acceleration.step_cache import enable_step_cache

CASES = {"sd15": "faceid", "instantid": "instantid"}  # bench_pipelines' method whose base pipeline is used


def pipeline(case: str, size: str, device: str, dtype: torch.dtype):
    pipe = build(CASES[case], size, ours=case == "instantid").to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timed_call(pipe, case: str, side: int, steps: int, device: str):
    """(image `[1, side, side, 3]`, seconds per step after step 0)."""
    stamps: list[float] = []

    def on_step(p, i, t, tensors):
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return tensors

    kwargs = dict(prompt="photo of a person", num_inference_steps=steps, guidance_scale=5.0, height=side, width=side,
                  output_type="np", generator=torch.Generator("cpu").manual_seed(0), callback_on_step_end=on_step)
    if case == "instantid":
        face = np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)
        kwargs.update(face_embeds=face, image=Image.new("RGB", (side, side)))
    image = pipe(**kwargs).images
    return image, statistics.mean(b - a for a, b in zip(stamps, stamps[1:]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "medium", "full"], default="medium")
    parser.add_argument("--latent", type=int, help="latent side (default: bench_pipelines' for the size)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--intervals", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    rows = []
    for case in args.cases:
        pipe = pipeline(case, args.size, args.device, getattr(torch, args.dtype))
        latent = args.latent or LATENT[args.size] or (128 if case == "instantid" else 64)
        side = latent * pipe.vae_scale_factor
        timed_call(pipe, case, side, 2, args.device)  # warm-up
        plain, plain_s = timed_call(pipe, case, side, args.steps, args.device)
        configs = [(1, False)] + [(n, cn) for n in args.intervals for cn in ((False, True) if case == "instantid" else (False,))]
        for interval, cache_controlnet in configs:
            if interval == 1:
                image, seconds, handle = plain, plain_s, None
            else:
                handle = enable_step_cache(pipe.unet, interval, controlnet=pipe.controlnet if cache_controlnet else None)
                image, seconds = timed_call(pipe, case, side, args.steps, args.device)
                handle.remove()
            diff = np.abs(image.astype(np.float64) - plain)
            row = {"case": case, "size": args.size, "resolution": side, "steps": args.steps, "interval": interval,
                   "controlnet_cached": cache_controlnet, "s_per_step": round(seconds, 4),
                   "speedup": round(plain_s / seconds, 3), "max_abs_diff": round(float(diff.max()), 5),
                   "mean_abs_diff": round(float(diff.mean()), 5),
                   "full_steps": handle.full_steps if handle else args.steps,
                   "cached_steps": handle.cached_steps if handle else 0,
                   "device": args.device, "dtype": args.dtype}
            rows.append(row)
            print(f"{case:9s} {side:4d}px interval {interval} {'+controlnet' if cache_controlnet else '           '} "
                  f"{seconds:8.4f} s/step  x{row['speedup']:.2f}  |diff| max {row['max_abs_diff']:.4f} "
                  f"mean {row['mean_abs_diff']:.5f}  ({row['full_steps']} full / {row['cached_steps']} cached)",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
