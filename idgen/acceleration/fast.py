"""Fast paths for a diffusers pipeline with a UNet (and optionally a ControlNet): half precision,
fused attention projections, channels-last memory and regional `torch.compile`, in one call.

What is already fast in idgen needs no switch and is kept: classifier-free guidance runs as one
batch of 2B through the UNet and the IdentityNet (diffusers' loop), and the identity tokens and
per-layer identity keys/values are computed once per call, not per step or per CFG branch
(`InstantIDPipelineMixin.encode_identities`, the FaceID projections likewise).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0
from peft.tuners.tuners_utils import BaseTunerLayer

from idgen.errors import IdgenError

logger = logging.getLogger(__name__)

#: Components of a pipeline the fast paths touch, when present.
DENOISERS = ("unet", "controlnet")
CONV_MODELS = ("unet", "controlnet", "vae")


@dataclass
class FastInference:
    """What `enable_fast_inference` did (kept on the pipeline as `pipe.fast_inference`).

    Attributes:
        dtype: the pipeline's compute dtype afterwards.
        fused_attention: how many attention modules got fused q/k/v (self-attention) or k/v
            (cross-attention) projections.
        channels_last: whether the UNet, ControlNet and VAE use channels-last memory.
        compiled: the components whose repeated blocks are compiled.
        notes: what was skipped, and why.
    """

    dtype: torch.dtype
    fused_attention: int = 0
    channels_last: bool = False
    compiled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"dtype": str(self.dtype).replace("torch.", ""), "fused_attention": self.fused_attention,
                "channels_last": self.channels_last, "compiled": list(self.compiled), "notes": list(self.notes)}


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA devices that support it (it has float32's range, so SDXL's VAE cannot
    overflow as it does in float16), float16 on older CUDA devices (diffusers' SDXL pipelines then
    decode in float32 when the VAE asks for it, `vae.config.force_upcast`), float32 elsewhere
    (CPU half precision is slower than float32 on most CPUs)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def fuse_attention_projections(model: torch.nn.Module) -> tuple[int, int]:
    """Fuse the projections of every attention module of `model` that runs diffusers' stock
    `AttnProcessor2_0`: q/k/v into one matmul for self-attention, k/v for cross-attention, with
    diffusers' `FusedAttnProcessor2_0`.

    diffusers' own `fuse_qkv_projections()` replaces every processor of the model, which would drop
    the identity processors (FaceID's persistent IP-Adapter processors, PVA's); this fuses only the
    modules whose processor is stock. The separate `to_q`/`to_k`/`to_v` stay, so the identity
    processors InstantID installs for a call keep working. Modules with unfused LoRA layers are
    left alone (the fused copy would lose the LoRA): fuse LoRAs first (`pipe.fuse_lora()`).

    Returns:
        `(fused, kept for LoRA)`: the attention modules fused, and those left unfused because
        their projections carry LoRA layers (e.g. IP-Adapter-FaceID's own LoRA).
    """
    fused = with_lora = 0
    for module in model.modules():
        if not isinstance(module, Attention) or getattr(module, "fused_projections", False):
            continue
        if type(module.processor) is not AttnProcessor2_0:
            continue
        if any(isinstance(getattr(module, name), BaseTunerLayer) for name in ("to_q", "to_k", "to_v")):
            with_lora += 1
            continue
        module.fuse_projections()
        module.set_processor(FusedAttnProcessor2_0())
        fused += 1
    return fused, with_lora


def has_fused_attention(model: torch.nn.Module) -> bool:
    """Whether any attention module of `model` runs fused projections (a LoRA loaded now would
    not reach them)."""
    return any(isinstance(m, Attention) and getattr(m, "fused_projections", False) for m in model.modules())


def compile_blocks(model: torch.nn.Module, **compile_kwargs) -> None:
    """Regional compilation: `torch.compile` each repeated transformer block of `model` (diffusers'
    `compile_repeated_blocks`), so the compile cost is that of one block per shape and a call of
    the same size reuses the compiled code. diffusers declares the repeated blocks on
    `UNet2DConditionModel` only; a `ControlNetModel` repeats the same `BasicTransformerBlock`s, so
    it gets the UNet's list."""
    if not getattr(model, "_repeated_blocks", None):
        model._repeated_blocks = UNet2DConditionModel._repeated_blocks
    model.compile_repeated_blocks(**compile_kwargs)


def _components(pipe, names) -> dict[str, torch.nn.Module]:
    return {n: getattr(pipe, n) for n in names if isinstance(getattr(pipe, n, None), torch.nn.Module)}


def enable_fast_inference(
    pipe,
    *,
    dtype: Union[str, torch.dtype, None] = "auto",
    fuse_qkv: bool = True,
    channels_last: bool = True,
    compile: Union[bool, str] = "auto",
    compile_kwargs: Optional[dict] = None,
) -> FastInference:
    """Turn on every fast path that keeps the output within floating-point tolerance of the plain
    path (see `tests/test_acceleration.py` for the bounds on tiny weights). Composable with step
    caching, few-step presets and memory modes; call it after loading LoRAs / presets.

    Args:
        pipe: a diffusers pipeline with a `unet` (and optionally a `controlnet` and `vae`).
        dtype: the compute dtype: "auto" (`default_dtype` of the pipeline's device), a torch dtype,
            or None to keep the current one.
        fuse_qkv: fuse attention projections (`fuse_attention_projections`).
        channels_last: channels-last memory format for the convolutional models.
        compile: regional `torch.compile` of the UNet's and ControlNet's transformer blocks; "auto"
            compiles on CUDA only (on CPU it needs a C++ toolchain and rarely pays off).
        compile_kwargs: passed to `torch.compile` (e.g. `{"backend": "inductor", "mode":
            "max-autotune-no-cudagraphs"}`); default `{"fullgraph": False}`.

    Returns:
        A `FastInference` record, also kept as `pipe.fast_inference`.
    """
    if getattr(pipe, "unet", None) is None:
        raise IdgenError(f"{type(pipe).__name__} has no UNet: the fast paths are for UNet pipelines.")
    device = pipe.device
    if dtype == "auto":
        dtype = default_dtype(device)
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise IdgenError(f"dtype must be 'auto', None or a torch dtype, got {dtype!r}.")
    if dtype is not None and dtype != pipe.unet.dtype:
        pipe.to(dtype=dtype)
    record = FastInference(dtype=pipe.unet.dtype)
    if fuse_qkv:
        counts = [fuse_attention_projections(m) for m in _components(pipe, DENOISERS).values()]
        record.fused_attention = sum(fused for fused, _ in counts)
        with_lora = sum(kept for _, kept in counts)
        if with_lora:
            record.notes.append(f"{with_lora} attention modules with LoRA layers left unfused")
    if channels_last:
        for name, model in _components(pipe, CONV_MODELS).items():
            if any(p.ndim == 5 for p in model.parameters()):  # video models' 3-D convolutions
                record.notes.append(f"{name}: channels-last skipped (5-D weights)")
                continue
            model.to(memory_format=torch.channels_last)
        record.channels_last = True
    if compile == "auto":
        compile = device.type == "cuda"
        if not compile:
            record.notes.append(f"torch.compile skipped on {device.type} (pass compile=True to force it)")
    if compile:
        for name, model in _components(pipe, DENOISERS).items():
            compile_blocks(model, **(compile_kwargs or {"fullgraph": False}))
            record.compiled.append(name)
    pipe.fast_inference = record
    logger.info("fast inference: %s", record.to_dict())
    return record
