"""Per-step latency and peak memory of idgen's pipelines against the bare diffusers pipelines
they extend, on random weights (no downloads).

    python bench/bench_pipelines.py --size tiny             # CPU, seconds
    python bench/bench_pipelines.py --size medium           # CPU, a few minutes
    python bench/bench_pipelines.py --size full --device cuda --dtype float16   # full-size SD1.5/SDXL

Each (method, ours|base) case runs in its own process so peak memory is not shared: CUDA reports
`torch.cuda.max_memory_allocated`, CPU the process's peak resident set (ru_maxrss). Per-step
latency is the median gap between step-end callbacks after a warm-up call. Overhead = ours / base - 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

METHODS = ("instantid", "faceid", "arc2face", "pva")
OFFICIAL_RESAMPLER = {"dim": 1280, "depth": 4, "dim_head": 64, "heads": 20, "num_queries": 16, "embedding_dim": 512, "ff_mult": 4}

# UNet shapes by size. "full" is the real SD1.5 / SDXL architecture.
UNET = {
    "medium": {"sd": dict(block_out_channels=(128, 256, 256), layers_per_block=2, attention_head_dim=8,
                          down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=32),
               "xl": dict(block_out_channels=(128, 256, 256), layers_per_block=2, attention_head_dim=(2, 4, 8),
                          transformer_layers_per_block=(1, 2, 2),
                          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                          up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=32)},
    "full": {"sd": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8, sample_size=64,
                        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, norm_num_groups=32),
             "xl": dict(block_out_channels=(320, 640, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20),
                        transformer_layers_per_block=(1, 2, 10), sample_size=128,
                        addition_time_embed_dim=256, projection_class_embeddings_input_dim=6 * 256 + 1280,
                        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=32)},
}
TEXT_WIDTH = {"tiny": 32, "medium": 256, "full": 768}
# Latent side per size (the image side is this x the VAE's scale factor: 2 for the kit's tiny VAE).
# "full": SD1.5 at 512 px and SDXL at 1024 px have 64 and 128 latents.
LATENT = {"tiny": 32, "medium": 64, "full": None}


def _resize_unet(components: dict, size: str, xl: bool) -> None:
    """Swap the kit's tiny UNet (and ControlNet) for one of `size`, keeping the text widths."""
    if size == "tiny":
        return
    from diffusers import UNet2DConditionModel

    from idgen.testing import seeded, tiny_controlnet

    config = dict(components["unet"].config)
    config.update(UNET[size]["xl" if xl else "sd"])
    with seeded(0):
        components["unet"] = UNet2DConditionModel.from_config(config)
    if "controlnet" in components:
        components["controlnet"] = tiny_controlnet(components["unet"], 5)


def latent_side(method: str, size: str) -> int:
    """The latent side of `method`'s images at `size` (full: SDXL's 128 for InstantID, else SD1.5's 64)."""
    return LATENT[size] or (128 if method == "instantid" else 64)


def random_components(method: str, size: str) -> dict:
    """The random-weight components both pipelines of `method` are built from at `size`: the kit's
    (`idgen.testing`) with the UNet (and ControlNet) of `size` and text encoders of its width."""
    from idgen.testing import tiny_controlnet, tiny_sd15_components, tiny_sdxl_components

    if method == "instantid":
        components = tiny_sdxl_components(0)
        if size != "tiny":  # SDXL's two text towers, widened (full: 768 + 1280 -> 2048)
            from idgen.testing import tiny_text_encoder

            w1, w2 = (TEXT_WIDTH[size], TEXT_WIDTH[size]) if size == "medium" else (768, 1280)
            components["text_encoder"] = tiny_text_encoder(2, width=w1)
            components["text_encoder_2"] = tiny_text_encoder(3, width=w2, with_projection=True)
            components["unet"] = components["unet"].__class__.from_config(
                {**components["unet"].config, "cross_attention_dim": w1 + w2, "projection_class_embeddings_input_dim": 6 * 8 + w2})
        components["controlnet"] = tiny_controlnet(components["unet"], 5)
        _resize_unet(components, size, xl=True)
        return components
    width = max(TEXT_WIDTH[size], 512) if method == "arc2face" else TEXT_WIDTH[size]
    components = tiny_sd15_components(0, text_width=width, in_channels=9 if method == "pva" else 4)
    _resize_unet(components, size, xl=False)
    components["requires_safety_checker"] = False
    return components


def build(method: str, size: str, ours: bool):
    import diffusers

    from idgen.pipelines import Arc2FacePipeline, StableDiffusionFaceIDPipeline, StableDiffusionXLInstantIDPipeline
    from idgen.testing import TINY_RESAMPLER, random_faceid_state_dict, random_instantid_state_dict

    components = random_components(method, size)
    if method == "instantid":
        if not ours:
            return diffusers.StableDiffusionXLControlNetPipeline(**components)
        pipe = StableDiffusionXLInstantIDPipeline(**components)
        resampler = OFFICIAL_RESAMPLER if size == "full" else TINY_RESAMPLER
        pipe.load_instantid(random_instantid_state_dict(pipe.unet, resampler_config=resampler), resampler_config=resampler)
        return pipe
    width = components["text_encoder"].config.hidden_size
    if method == "pva":
        from idgen.pipelines import StableDiffusionPVAInpaintPipeline

        if not ours:
            return diffusers.StableDiffusionInpaintPipeline(**components)
        pipe = StableDiffusionPVAInpaintPipeline(**components)  # paper's 10 tokens; the official 8-head encoder
        pipe.init_pva(num_layers=4 if size == "full" else 1, num_heads=8 if width % 8 == 0 else 2)
        return pipe
    if not ours:
        return diffusers.StableDiffusionPipeline(**components)
    if method == "arc2face":
        return Arc2FacePipeline(**components)
    pipe = StableDiffusionFaceIDPipeline(**components)
    pipe.load_faceid(random_faceid_state_dict(pipe.unet, "faceid", rank=128 if size == "full" else 8), variant="faceid")
    return pipe


def run_case(method: str, size: str, ours: bool, device: str, dtype: str, steps: int) -> dict:
    import numpy as np
    from PIL import Image

    torch.set_grad_enabled(False)
    pipe = build(method, size, ours).to(device, getattr(torch, dtype))
    pipe.set_progress_bar_config(disable=True)
    side = latent_side(method, size) * pipe.vae_scale_factor
    kwargs = dict(num_inference_steps=steps, guidance_scale=5.0, height=side, width=side, output_type="latent",
                  generator=torch.Generator("cpu").manual_seed(0))
    face = np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)
    if method == "instantid":
        kwargs.update(prompt="photo of a person", image=Image.new("RGB", (side, side)))
        if ours:
            kwargs["face_embeds"] = face
    elif method in ("faceid", "pva"):
        kwargs["prompt"] = "photo of a person"
        if ours:
            kwargs["face_embeds"] = face
        if method == "pva":
            mask = np.zeros((side, side), np.uint8)
            mask[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 255
            kwargs.update(image=Image.new("RGB", (side, side), (120, 100, 90)), mask_image=Image.fromarray(mask))
    else:
        if ours:
            kwargs["face_embeds"] = face
        else:  # the bare pipeline gets prompt embeddings of the same shape
            kwargs["prompt"] = "photo of a id person"
    stamps: list[float] = []

    def on_step(p, i, t, tensors):
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return tensors

    pipe(**kwargs)  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    pipe(**kwargs, callback_on_step_end=on_step)
    gaps = [b - a for a, b in zip([start] + stamps[:-1], stamps)][1:]  # drop step 0 (includes encoding)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "size": size, "pipeline": type(pipe).__name__, "ours": ours,
            "step_ms": round(1000 * statistics.median(gaps), 3), "call_s": round(time.perf_counter() - start, 3),
            "peak_mib": round(peak, 1), "device": device, "dtype": dtype, "resolution": side}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "medium", "full"], default="tiny")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    parser.add_argument("--case", nargs=2, metavar=("METHOD", "OURS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case[0], args.size, args.case[1] == "1", args.device, args.dtype, args.steps)))
        return 0
    rows = []
    for method in args.methods:
        pair = {}
        for ours in (False, True):
            cmd = [sys.executable, __file__, "--case", method, str(int(ours)), "--size", args.size,
                   "--device", args.device, "--dtype", args.dtype, "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return out.returncode
            pair[ours] = json.loads(out.stdout.strip().splitlines()[-1])
        row = {**pair[True], "base_pipeline": pair[False]["pipeline"], "base_step_ms": pair[False]["step_ms"],
               "base_peak_mib": pair[False]["peak_mib"],
               "step_overhead_pct": round(100 * (pair[True]["step_ms"] / pair[False]["step_ms"] - 1), 1)}
        rows.append(row)
        print(f"{method:10s} {args.size:6s} ours {row['step_ms']:9.2f} ms/step {row['peak_mib']:9.1f} MiB | "
              f"{row['base_pipeline']} {row['base_step_ms']:9.2f} ms/step {row['base_peak_mib']:9.1f} MiB | "
              f"step overhead {row['step_overhead_pct']:+.1f}%", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
