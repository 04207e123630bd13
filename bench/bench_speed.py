"""Speed and memory of idgen's pipelines and acceleration switches against the official InstantID
pipeline, on random weights (no downloads): every case in one process, on one device.

    python bench/bench_speed.py --size tiny --device cpu --steps 2 --repeats 1 --out /tmp/bench_smoke
    python bench/bench_speed.py --size full --device cuda --dtype bfloat16 --official-instantid /path/to/InstantID --out bench/results

Workloads: instantid-sdxl (1024 px, 30 steps, CFG 5), faceid-sd15 (512 px, 30 steps), svfr (16 frames
of 512 px, 30 steps); --size full builds the real architectures. Cases: official, idgen-default, -fast,
-step-cache, -few-step (LCM), -memory-low; each a warm-up call, then --repeats timed calls. Writes
results.json and speed.png to --out and prints the table and the issue's targets (not asserted).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import importlib
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from bench_pipelines import OFFICIAL_RESAMPLER, TEXT_WIDTH, latent_side, random_components

WORKLOADS = ("instantid-sdxl", "faceid-sd15", "svfr")
CASES = ("official", "idgen-default", "idgen-fast", "idgen-step-cache", "idgen-few-step", "idgen-memory-low")
DTYPES = ("auto", "float32", "float16", "bfloat16")
PROMPT = "photo of a person"
FRAMES = 16  # the SVFR clip: one official 16-frame window
STEP_CACHE_INTERVAL = 3
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
REPO = Path(__file__).resolve().parents[1]

#: Peak dense bf16 FLOP/s by GPU name: every substring must occur; the first match wins.
PEAK_BF16_FLOPS = ((("H200",), 989.4e12), (("H100", "PCIe"), 756e12), (("H100", "HBM3"), 989.4e12),
                   (("H100", "SXM"), 989.4e12), (("A100",), 312e12))

# The real architectures of the parts bench_pipelines keeps tiny at "full" (VAE, text towers).
FULL_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              hidden_act="quick_gelu", projection_dim=768)
OPENCLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                     hidden_act="gelu", projection_dim=1280)
IDENTITYNET_CONDITIONING = (16, 32, 96, 256)  # ControlNet's condition encoder for a VAE factor of 8
# SVD UNets by size ("tiny" is the kit's); "full" is stable-video-diffusion-img2vid's.
SVD_UNET = {
    "medium": dict(block_out_channels=(128, 256, 256), layers_per_block=2, cross_attention_dim=TEXT_WIDTH["medium"],
                   num_attention_heads=(4, 8, 8),
                   down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 2 + ("DownBlockSpatioTemporal",),
                   up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 2),
    "full": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
                 num_attention_heads=(5, 10, 20, 20), transformer_layers_per_block=1, sample_size=96,
                 addition_time_embed_dim=256, projection_class_embeddings_input_dim=3 * 256,
                 down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
                 up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3),
}


#: What every row of results.json has besides workload, case, status and note (None when not measured).
ROW_KEYS = ("pipeline", "steps", "guidance_scale", "setup_s", "warmup_s", "s_per_image", "s_per_image_runs", "it_per_s",
            "peak_memory_gb", "host_overhead_pct", "denoiser_flops_per_step", "acceleration", "speedup_vs_official",
            "speedup_vs_default", "tflops_per_s", "flops_fraction_of_peak")


class Unavailable(Exception):
    """A case the pipeline cannot run: reported with its reason, and the run goes on."""


@dataclass
class Workload:
    """One benchmarked job. `parts` (components on the CPU, in the bench dtype) and `adapter` (the
    identity checkpoint, official layout) are copied for every case; `make(parts, adapter)` builds
    the idgen pipeline; `call` / `official_call` are the call arguments except steps, CFG and the
    generator (`official_call` None: no official baseline)."""

    name: str
    parts: dict
    adapter: Optional[dict]
    make: Callable
    call: dict
    steps: int
    guidance_scale: float
    output: str
    official_call: Optional[dict] = None
    notes: list = field(default_factory=list)
    lora_rank: int = 4  # of the few-step case's random LCM-LoRA (LCM-LoRA's own: 64)


# -- components ------------------------------------------------------------------------------


def full_text_encoder(kit_encoder, sizes: dict, seed: int):
    """A CLIP text tower of the real `sizes`, with the kit encoder's tokens (its tokenizer still works)."""
    from transformers import CLIPTextConfig

    from idgen.testing import seeded

    config = CLIPTextConfig.from_dict({**kit_encoder.config.to_dict(), **sizes})
    with seeded(seed):
        return type(kit_encoder)(config).eval()


def full_periphery(parts: dict, xl: bool) -> None:
    """Complete bench_pipelines' "full" components (real UNet and ControlNet; tiny VAE and 2-layer text
    towers) with the real VAE, CLIP text towers and, for the VAE's factor 8, IdentityNet's condition encoder."""
    from diffusers import AutoencoderKL
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    from idgen.testing import seeded

    with seeded(11):
        parts["vae"] = AutoencoderKL(**FULL_VAE, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
                                     sample_size=1024 if xl else 512, scaling_factor=0.13025 if xl else 0.18215)
    parts["text_encoder"] = full_text_encoder(parts["text_encoder"], CLIP_L, 12)
    if xl:
        parts["text_encoder_2"] = full_text_encoder(parts["text_encoder_2"], OPENCLIP_BIGG, 13)
    if "controlnet" in parts:
        controlnet = parts["controlnet"]
        with seeded(14):
            controlnet.controlnet_cond_embedding = ControlNetConditioningEmbedding(
                controlnet.config.block_out_channels[0], block_out_channels=IDENTITYNET_CONDITIONING)
        controlnet.register_to_config(conditioning_embedding_out_channels=IDENTITYNET_CONDITIONING)


def image_side(method: str, size: str, vae) -> int:
    """The output side in pixels: bench_pipelines' latent side x the VAE's factor (tiny VAE 2, real 8)."""
    return latent_side(method, size) * 2 ** (len(vae.config.block_out_channels) - 1)


def random_face() -> np.ndarray:
    """A raw ArcFace-like embedding `[1, 512]` (the bench needs no face analysis)."""
    return np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)


def instantid_workload(size: str) -> Workload:
    """SDXL + IdentityNet + the official Resampler and identity projections (official layout)."""
    from PIL import Image

    from idgen.pipelines import StableDiffusionXLInstantIDPipeline
    from idgen.testing import random_instantid_state_dict

    parts = random_components("instantid", size)
    if size == "full":
        full_periphery(parts, xl=True)
    adapter = random_instantid_state_dict(parts["unet"], resampler_config=OFFICIAL_RESAMPLER)

    def make(parts, adapter):
        pipe = StableDiffusionXLInstantIDPipeline(**parts)
        pipe.load_instantid(adapter, resampler_config=OFFICIAL_RESAMPLER)
        return pipe

    side, face = image_side("instantid", size, parts["vae"]), random_face()
    common = dict(prompt=PROMPT, image=Image.new("RGB", (side, side)), height=side, width=side,
                  controlnet_conditioning_scale=0.8)  # the scales of the official infer.py, idgen's defaults
    return Workload("instantid-sdxl", parts, adapter, make, {**common, "face_embeds": face, "identity_scale": 0.8},
                    30, 5.0, f"{side}x{side} image",
                    official_call={**common, "image_embeds": face[0], "ip_adapter_scale": 0.8})


def faceid_workload(size: str) -> Workload:
    """SD1.5 + IP-Adapter-FaceID (its LoRA at the official rank 128 at full size)."""
    from idgen.pipelines import StableDiffusionFaceIDPipeline
    from idgen.testing import random_faceid_state_dict

    parts = random_components("faceid", size)
    if size == "full":
        full_periphery(parts, xl=False)
    adapter = random_faceid_state_dict(parts["unet"], "faceid", rank=128 if size == "full" else 8)

    def make(parts, adapter):
        pipe = StableDiffusionFaceIDPipeline(**parts)
        pipe.load_faceid(adapter, variant="faceid")
        return pipe

    side = image_side("faceid", size, parts["vae"])
    call = dict(prompt=PROMPT, face_embeds=random_face(), height=side, width=side)
    return Workload("faceid-sd15", parts, adapter, make, call, 30, 7.5, f"{side}x{side} image")


def svfr_workload(size: str) -> Workload:
    """SVD's UNet widened by SVFR, its temporal VAE and identity projection: one 16-frame window."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    from idgen.adapters.svfr import init_svfr
    from idgen.pipelines import SVFRPipeline
    from idgen.testing import seeded, tiny_svd_components

    kit = tiny_svd_components(0)
    unet, vae = kit["unet"], kit["vae"]
    if size != "tiny":
        with seeded(0):
            unet = UNetSpatioTemporalConditionModel.from_config({**unet.config, **SVD_UNET[size]})
    if size == "full":
        with seeded(1):
            vae = AutoencoderKLTemporalDecoder(**FULL_VAE, sample_size=768)
    with seeded(2):
        projection = init_svfr(unet.eval())  # widens conv_in to SVFR's 12 channels
    parts = {"vae": vae.eval(), "unet": unet, "scheduler": kit["scheduler"], "id_projection": projection.eval()}
    side = image_side("svfr", size, vae)
    rng = np.random.default_rng(0)
    video = (rng.random((FRAMES, side, side, 3)) * 255).astype(np.uint8)
    call = dict(video=video, reference=video[0], identity_features=rng.normal(size=512).astype(np.float32),
                self_refine=False)  # a reference and identity: guidance on, one pass
    notes = [] if size == "full" else [f"SVD UNet of size {size!r}, not stable-video-diffusion's"]
    return Workload("svfr", parts, None, lambda parts, adapter: SVFRPipeline(**parts), call, 30, 2.0,
                    f"{FRAMES} frames of {side}x{side}", notes=notes)


BUILDERS = {"instantid-sdxl": instantid_workload, "faceid-sd15": faceid_workload, "svfr": svfr_workload}


def random_lora(unet, rank: int, seed: int = 0) -> dict:
    """A random LoRA for `unet` in diffusers' file layout (peft keys prefixed "unet.", as the tests'
    `_lora_file`), its shapes read from a copy of the UNet on the meta device (no weights copied)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    if not hasattr(unet, "add_adapter"):
        raise Unavailable(f"{type(unet).__name__} takes no peft adapter, so no LoRA can be made for it")
    with torch.device("meta"):
        donor = type(unet).from_config(unet.config)
    donor.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, init_lora_weights=False))
    generator = torch.Generator().manual_seed(seed)
    return {f"unet.{k}": torch.randn(v.shape, generator=generator) * 0.01
            for k, v in get_peft_model_state_dict(donor).items()}


def official_instantid_class(directory: Path):
    """`StableDiffusionXLInstantIDPipeline` of a clone of github.com/InstantID/InstantID, imported as
    it is (the clone goes on sys.path: its pipeline imports the clone's `ip_adapter` package)."""
    import diffusers.models.controlnets.multicontrolnet as multicontrolnet

    # The official file imports MultiControlNetModel from where older diffusers kept it.
    sys.modules.setdefault("diffusers.pipelines.controlnet.multicontrolnet", multicontrolnet)
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    return importlib.import_module("pipeline_stable_diffusion_xl_instantid").StableDiffusionXLInstantIDPipeline


def official_instantid(directory: Path, parts: dict, adapter: dict, device: torch.device):
    """The official pipeline on `parts` (in the bench dtype), moved to `device` and then loaded with
    `adapter` through its own `load_ip_adapter_instantid` (the order of its infer.py: the loader
    puts its modules on the pipeline's device and dtype)."""
    pipe = official_instantid_class(directory)(**parts).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "ip-adapter.bin"
        torch.save(adapter, checkpoint)
        pipe.load_ip_adapter_instantid(str(checkpoint))
    return pipe


# -- measuring -------------------------------------------------------------------------------


def denoisers(pipe) -> list:
    """The models a denoising step runs: the UNet and, when there is one, the ControlNet."""
    return [m for m in (pipe.unet, getattr(pipe, "controlnet", None)) if isinstance(m, torch.nn.Module)]


class LoopClock:
    """Times one pipeline call's denoising loop: from the first UNet / ControlNet forward to the end
    of step `steps - 1` (device-synchronised at both ends only). With `time_denoisers`, the device
    is also synchronised around every denoiser forward and their time summed (`denoiser_s`)."""

    def __init__(self, pipe, sync: Callable, steps: int, time_denoisers: bool = False):
        self.sync, self.last = sync, steps - 1
        self.start: Optional[float] = None
        self.end: Optional[float] = None
        self.denoiser_s = 0.0
        self._opened: Optional[float] = None
        self._hooks = []
        for model in denoisers(pipe):
            self._hooks.append(model.register_forward_pre_hook(self._before))
            if time_denoisers:
                self._hooks.append(model.register_forward_hook(self._after))
        self._time_denoisers = time_denoisers

    def _before(self, module, args):
        if self.start is None or self._time_denoisers:
            self.sync()
            self._opened = time.perf_counter()
            if self.start is None:
                self.start = self._opened

    def _after(self, module, args, output):
        self.sync()
        self.denoiser_s += time.perf_counter() - self._opened

    def on_step_end(self, pipe, step, timestep, tensors):
        if step == self.last:
            self.sync()
            self.end = time.perf_counter()
        return tensors

    @property
    def loop_s(self) -> Optional[float]:
        return self.end - self.start if self.start is not None and self.end is not None else None

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


def call_pipe(pipe, call: dict, steps: int, guidance: float, **extra):
    return pipe(**call, num_inference_steps=steps, guidance_scale=guidance,
                generator=torch.Generator("cpu").manual_seed(0), **extra)


def timed_call(pipe, call, steps, guidance, sync, time_denoisers=False) -> tuple[float, LoopClock]:
    """(seconds of one synchronised call, its `LoopClock`)."""
    clock = LoopClock(pipe, sync, steps, time_denoisers)
    try:
        start = time.perf_counter()
        call_pipe(pipe, call, steps, guidance, callback_on_step_end=clock.on_step_end)
        sync()
        return time.perf_counter() - start, clock
    finally:
        clock.remove()


def step_flops(pipe, call: dict, guidance: float) -> int:
    """FLOPs of one denoising step on `pipe`: a 1-step call (no decoding) under `FlopCounterMode`,
    summing the UNet's and ControlNet's forwards (the whole CFG batch, every SVFR window). CPU
    attention is counted too (torch only registers the CUDA kernels' formula)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    names = {type(m).__name__ for m in denoisers(pipe)}  # top-level modules are keyed by class name
    counter = FlopCounterMode(display=False,
                              custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention})
    with counter:
        call_pipe(pipe, call, 1, guidance, output_type="latent")
    return sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if name in names)


def peak_flops(device: torch.device) -> Optional[float]:
    """The device's peak dense bf16 FLOP/s (`PEAK_BF16_FLOPS`), None on CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for parts, peak in PEAK_BF16_FLOPS if all(p in name for p in parts)), None)


def _method(pipe, name: str) -> Callable:
    """`pipe.<name>`, the acceleration API of idgen's pipelines; `Unavailable` when it lacks it."""
    method = getattr(pipe, name, None)
    if method is None:
        raise Unavailable(f"{type(pipe).__name__} has no {name}() (it does not use idgen's AccelerationMixin)")
    return method


def prepare(workload: Workload, case: str, device: torch.device, dtype: torch.dtype, official: Optional[Path]):
    """(pipeline on `device`, call arguments, steps, CFG, what the acceleration did or None) for `case`,
    on fresh copies of the workload's components."""
    parts, adapter = copy.deepcopy((workload.parts, workload.adapter))
    steps, guidance = workload.steps, workload.guidance_scale
    if case == "official":
        return official_instantid(official, parts, adapter, device), workload.official_call, steps, guidance, None
    pipe = workload.make(parts, adapter)
    record = None
    if case == "idgen-memory-low":  # built on the CPU; the mode moves the pipeline itself
        record = _method(pipe, "set_memory_mode")("low", device=device).to_dict()
        return pipe, workload.call, steps, guidance, record
    if case == "idgen-few-step":  # the preset goes in first (`load_fast_preset`'s rule)
        load = _method(pipe, "load_fast_preset")
        mode = load("lcm", random_lora(workload.parts["unet"], workload.lora_rank))
        steps, guidance, record = mode.num_inference_steps, mode.guidance_scale, mode.to_dict()
    pipe.to(device)
    if case == "idgen-fast":
        record = _method(pipe, "enable_fast_inference")(dtype=dtype).to_dict()
    elif case == "idgen-step-cache":
        enable = _method(pipe, "enable_step_cache")
        try:
            record = enable(interval=STEP_CACHE_INTERVAL)  # the handle; its counters are read after the run
        except ImportError as error:
            raise Unavailable(f"idgen.acceleration.step_cache is not importable yet ({error})") from error
    return pipe, workload.call, steps, guidance, record


def step_cache_record(handle) -> dict:
    """The step cache's interval and step counters (warm-up and timed calls together)."""
    names = ("interval", "full_steps", "cached_steps", "controlnet_full_steps", "controlnet_cached_steps")
    return {name: getattr(handle, name) for name in names if hasattr(handle, name)}


def run_case(workload: Workload, case: str, args, device: torch.device, dtype: torch.dtype, sync: Callable) -> dict:
    """Measure one (workload, case): never raises; a failure is a row with status "error"."""
    row = {"workload": workload.name, "case": case, "status": "ok", "note": None, **dict.fromkeys(ROW_KEYS)}
    if case == "official" and workload.official_call is None:
        return {**row, "status": "skipped", "note": "no official baseline for this workload"}
    if case == "official" and args.official_instantid is None:
        return {**row, "status": "skipped",
                "note": "pass --official-instantid DIR (a clone of github.com/InstantID/InstantID)"}
    pipe = record = None
    try:
        from idgen.errors import IdgenError

        start = time.perf_counter()
        try:
            pipe, call, steps, guidance, record = prepare(workload, case, device, dtype, args.official_instantid)
        except IdgenError as error:  # idgen's own refusal: this pipeline cannot take this switch
            raise Unavailable(str(error)) from error
        pipe.set_progress_bar_config(disable=True)
        row.update(pipeline=f"{type(pipe).__module__}.{type(pipe).__name__}", steps=steps, guidance_scale=guidance,
                   setup_s=round(time.perf_counter() - start, 3))
        start = time.perf_counter()
        call_pipe(pipe, call, steps, guidance)  # warm-up (compiles, autotunes, allocates)
        sync()
        row["warmup_s"] = round(time.perf_counter() - start, 3)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        runs = [timed_call(pipe, call, steps, guidance, sync) for _ in range(args.repeats)]
        loops = [clock.loop_s for _, clock in runs]
        row["s_per_image_runs"] = [round(seconds, 4) for seconds, _ in runs]
        row["s_per_image"] = round(statistics.median(seconds for seconds, _ in runs), 4)
        row["it_per_s"] = round(steps / statistics.median(loops), 3) if None not in loops else None
        if device.type == "cuda":
            row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 3)
        if case in ("official", "idgen-default"):  # one more call, synchronised around every denoiser forward
            _, clock = timed_call(pipe, call, steps, guidance, sync, time_denoisers=True)
            if clock.loop_s:
                row["host_overhead_pct"] = round(100 * (1 - clock.denoiser_s / clock.loop_s), 2)
            row["denoiser_flops_per_step"] = step_flops(pipe, call, guidance)
        row["acceleration"] = step_cache_record(record) if case == "idgen-step-cache" else record
    except Unavailable as reason:
        row.update(status="unavailable", note=str(reason))
    except Exception as error:  # noqa: BLE001 - a failed case is reported, the others still run
        traceback.print_exc()
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        row.update(status="error", note=f"{type(error).__name__}: {first_line}")
    finally:
        pipe = record = None
        if case == "idgen-fast":
            torch._dynamo.reset()  # drop the compiled graphs (and the modules they hold)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


# -- results ---------------------------------------------------------------------------------


def derive(rows: list[dict], peak: Optional[float]) -> None:
    """Add per row: speedups vs official and vs idgen-default (ratios of s/image), the denoisers'
    TFLOP/s and the fraction of the device's peak. FLOPs = one plain-path step (idgen-default, else
    official) x the case's steps, halved when the case drops the CFG batch the plain path runs
    (a few-step preset at CFG <= 1); a step-cache case is credited the full FLOPs (effective rate)."""
    by_workload: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_workload.setdefault(row["workload"], {})[row["case"]] = row
    for cases in by_workload.values():
        reference = {name: cases.get(name, {}).get("s_per_image") for name in ("official", "idgen-default")}
        plain = next((cases[name] for name in ("idgen-default", "official")
                      if cases.get(name, {}).get("denoiser_flops_per_step")), None)
        for row in cases.values():
            seconds = row["s_per_image"]
            for name, key in (("official", "speedup_vs_official"), ("idgen-default", "speedup_vs_default")):
                row[key] = round(reference[name] / seconds, 3) if seconds and reference[name] else None
            if not seconds or plain is None:
                row["tflops_per_s"] = row["flops_fraction_of_peak"] = None
                continue
            cfg = 0.5 if plain["guidance_scale"] > 1 >= row["guidance_scale"] else 1.0
            rate = plain["denoiser_flops_per_step"] * row["steps"] * cfg / seconds
            row["tflops_per_s"] = round(rate / 1e12, 4)
            row["flops_fraction_of_peak"] = round(rate / peak, 4) if peak else None


@dataclass(frozen=True)
class Target:
    """A target of the issue, printed beside the table: the best `metric` over `cases` of instantid-sdxl
    (only rows run at `steps` steps, when given)."""

    text: str
    cases: tuple
    metric: str
    limit: float
    lower_is_better: bool
    steps: Optional[int] = None


TARGETS = (
    Target("idgen default >= 1.3x official InstantID", ("idgen-default",), "speedup_vs_official", 1.3, False),
    Target("idgen fast >= 2.5x official InstantID", ("idgen-fast",), "speedup_vs_official", 2.5, False),
    Target("InstantID 1024^2, 30 steps <= 1.6 s (fastest 30-step idgen case)",
           ("idgen-default", "idgen-fast", "idgen-step-cache"), "s_per_image", 1.6, True, steps=30),
    Target("few-step <= 0.4 s/image", ("idgen-few-step",), "s_per_image", 0.4, True),
    Target("memory-low peak <= 12 GB", ("idgen-memory-low",), "peak_memory_gb", 12.0, True),
    Target("CPU pipeline overhead <= 5% (idgen default: loop time outside the UNet/ControlNet forwards)",
           ("idgen-default",), "host_overhead_pct", 5.0, True),
)


def evaluate_targets(rows: list[dict], size: str, device: torch.device) -> list[dict]:
    """Each target (on instantid-sdxl) with its value and whether it is met (None: not measured, or
    not at --size full on CUDA, where the value is still shown)."""
    out = []
    for target in TARGETS:
        values = [(r[target.metric], r["case"]) for r in rows
                  if r["workload"] == "instantid-sdxl" and r["case"] in target.cases and r[target.metric] is not None
                  and (target.steps is None or r["steps"] == target.steps)]
        value, case = (min(values) if target.lower_is_better else max(values)) if values else (None, None)
        met = None if value is None else (value <= target.limit if target.lower_is_better else value >= target.limit)
        note = None
        if value is None:
            note = "not measured" + (f" (needs {target.steps} steps)" if target.steps else "")
        elif size != "full" or device.type != "cuda":  # the targets are for the real models on a GPU
            note, met = f"not comparable: size {size} on {device.type}", None
        out.append({"target": target.text, "case": case, "value": value, "limit": target.limit, "met": met,
                    "note": note})
    return out


def _cell(value, fmt: str, suffix: str = "") -> str:
    """`value` in `fmt` (e.g. "9.3f") and `suffix`, or "-", right-aligned in the format's width."""
    width = int(fmt.split(".")[0])
    return f"{'-' if value is None else format(value, fmt).strip() + suffix:>{width}}"


def table(rows: list[dict]) -> str:
    """The printed table: one line per (workload, case)."""
    header = (f"{'workload':15} {'case':17} {'s/image':>9} {'it/s':>8} {'peak GB':>8} {'TFLOP/s':>8} {'%peak':>6} "
              f"{'vs off.':>7} {'vs def.':>7} {'host %':>6}")
    lines = [header, "-" * len(header)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['workload']:15} {r['case']:17} {r['status']}: {r['note']}")
            continue
        fraction = r["flops_fraction_of_peak"]
        lines.append(f"{r['workload']:15} {r['case']:17} {_cell(r['s_per_image'], '9.3f')} "
                     f"{_cell(r['it_per_s'], '8.2f')} {_cell(r['peak_memory_gb'], '8.2f')} {_cell(r['tflops_per_s'], '8.3f')} "
                     f"{_cell(None if fraction is None else 100 * fraction, '6.1f')} "
                     f"{_cell(r['speedup_vs_official'], '7.2f', 'x')} {_cell(r['speedup_vs_default'], '7.2f', 'x')} "
                     f"{_cell(r['host_overhead_pct'], '6.1f')}")
    return "\n".join(lines)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def bar_chart(report: dict, path: Path) -> None:
    """speed.png: one panel per workload, a bar of s/image per case (value on top; the status of a
    case that did not run), each panel on its own scale."""
    from PIL import Image, ImageDraw

    colors = [(96, 96, 96), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    font, small = _font(15), _font(12)
    panel_h, width, left, top = 250, 980, 60, 50
    workloads = list(report["workloads"])
    image = Image.new("RGB", (width, top + panel_h * max(1, len(workloads))), "white")
    draw = ImageDraw.Draw(image)
    settings = report["settings"]
    draw.text((10, 12), f"s/image (lower is better): {report['device']['name']}, size {settings['size']}, "
              f"{settings['dtype']}, median of {settings['repeats']}", fill="black", font=font)
    for index, name in enumerate(workloads):
        y0 = top + index * panel_h
        rows = [r for r in report["results"] if r["workload"] == name]
        info = report["workloads"][name]
        draw.text((10, y0 + 4), f"{name}: {info['output']}", fill="black", font=font)
        base, plot_h = y0 + panel_h - 45, panel_h - 90
        draw.line((left, base, width - 20, base), fill="black")
        highest = max([r["s_per_image"] for r in rows if r["s_per_image"]] or [1.0])
        slot = (width - 20 - left) / max(1, len(rows))
        for i, row in enumerate(rows):
            x0 = left + i * slot + slot * 0.15
            x1 = x0 + slot * 0.7
            seconds = row["s_per_image"]
            if seconds:
                y = base - plot_h * seconds / highest
                draw.rectangle((x0, y, x1, base), fill=colors[CASES.index(row["case"]) % len(colors)])
                draw.text((x0, y - 16), f"{seconds:.3g} s", fill="black", font=small)
            else:
                draw.text((x0, base - 16), row["status"], fill=(150, 150, 150), font=small)
            draw.text((x0, base + 6), row["case"].replace("idgen-", ""), fill="black", font=small)
    image.save(path)


def environment(device: torch.device) -> dict:
    """Device, versions, date and git commit for results.json."""
    import diffusers
    import peft
    import transformers

    def git(*command) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(REPO), *command], capture_output=True, text=True, timeout=20)
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": {"type": device.type, "name": name, "peak_bf16_dense_flops": peak_flops(device),
                   "cpu_threads": torch.get_num_threads()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                     "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,  # None where the checkout has no .git
        "git_dirty": None if commit is None else bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def write_outputs(report: dict, out: Path) -> None:
    """results.json (strict JSON: NaN / infinity refused) and speed.png, rewritten after every case."""
    (out / "results.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    bar_chart(report, out / "speed.png")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "medium", "full"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="auto: bfloat16 on CUDA (float16 without bf16), float32 on CPU")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--steps", type=int,
                        help="denoising steps (default: each workload's 30; the few-step case keeps its preset's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case after the warm-up (median reported)")
    parser.add_argument("--official-instantid", type=Path, metavar="DIR", help="a clone of github.com/InstantID/InstantID")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                        help="folder for results.json and speed.png")
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--repeats and --steps must be at least 1")
    if args.official_instantid is not None:
        args.official_instantid = args.official_instantid.resolve()
        if not (args.official_instantid / "pipeline_stable_diffusion_xl_instantid.py").is_file() or \
                not (args.official_instantid / "ip_adapter").is_dir():
            parser.error(f"--official-instantid {args.official_instantid} is not a clone of "
                         "github.com/InstantID/InstantID (no pipeline_stable_diffusion_xl_instantid.py and ip_adapter/)")
    return args


@torch.no_grad()  # scoped, not set_grad_enabled(False): main() also runs inside the test process
def main(argv=None) -> int:
    """Run the benchmark; 0 when every case that ran succeeded, 1 when one failed."""
    args = parse_args(argv)
    from idgen.acceleration.fast import default_dtype

    device = torch.device(args.device)
    dtype = default_dtype(device) if args.dtype == "auto" else getattr(torch, args.dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {**environment(device), "benchmark": "bench/bench_speed.py",
              "settings": {"size": args.size, "dtype": str(dtype).replace("torch.", ""), "steps": args.steps,
                           "repeats": args.repeats, "workloads": args.workloads, "cases": args.cases,
                           "official_instantid": str(args.official_instantid) if args.official_instantid else None},
              "notes": ["s/image: median wall time of a whole call (encoding, denoising, decoding to PIL / numpy), "
                        "synchronised; it/s: steps / denoising-loop time",
                        "FLOPs: one plain-path step (UNet + ControlNet, CFG batch) counted with FlopCounterMode on "
                        "idgen-default, x the case's steps, / s/image; step-cache cases are credited the full FLOPs",
                        "host overhead: share of the denoising loop outside the UNet/ControlNet forwards, in one extra "
                        "call synchronised around every forward (an upper bound)"],
              "workloads": {}, "results": [], "targets": []}
    if device.type != "cuda":
        report["notes"].append("peak memory: n/a on CPU (ru_maxrss is the process's lifetime peak, meaningless "
                               "for one case of several in one process); %peak: n/a on CPU")
    print(f"device {report['device']['name']} ({device}), {report['settings']['dtype']}, size {args.size}, "
          f"torch {torch.__version__}, diffusers {report['versions']['diffusers']}", flush=True)
    failed = False
    for name in args.workloads:
        start = time.perf_counter()
        workload = BUILDERS[name](args.size)
        for module in workload.parts.values():
            if isinstance(module, torch.nn.Module) and any(p.dtype != dtype for p in module.parameters()):
                module.to(dtype)
        if args.steps:
            workload.steps = args.steps
        if args.size == "full":
            workload.lora_rank = 64
        report["workloads"][name] = {"output": workload.output, "steps": workload.steps,
                                     "guidance_scale": workload.guidance_scale, "notes": workload.notes,
                                     "build_s": round(time.perf_counter() - start, 2)}
        for case in args.cases:
            row = run_case(workload, case, args, device, dtype, sync)
            failed |= row["status"] == "error"
            report["results"].append(row)
            derive(report["results"], report["device"]["peak_bf16_dense_flops"])
            report["targets"] = evaluate_targets(report["results"], args.size, device)
            write_outputs(report, args.out)
            seconds = f" {row['s_per_image']:.3f} s/image" if row["s_per_image"] else ""
            print(f"  {name} {case}: {row['status']}{seconds}" + (f" ({row['note']})" if row["note"] else ""), flush=True)
        del workload
        gc.collect()
    print("\n" + table(report["results"]) + "\n\ntargets (instantid-sdxl; printed, not asserted):")
    for t in report["targets"]:
        verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        print(f"  [{verdict:6}] {t['target']}: {value}" + (f" ({t['note']})" if t["note"] else ""))
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'speed.png'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
