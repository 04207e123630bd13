"""DeepCache-style step cache for diffusers' `UNet2DConditionModel` (SD1.5, SDXL and their
inpainting / ControlNet / identity variants).

DeepCache (Ma et al., "DeepCache: Accelerating Diffusion Models for Free", 2023, arXiv:2312.00858)
rests on the observation that a UNet's deep features change little between adjacent denoising
steps. Every `interval` steps the whole UNet runs and its deep feature is kept; the steps in
between run only the shallow branch around it:

    full step    conv_in, time embedding, down_blocks[*], mid_block, up_blocks[*], conv_out
    cached step  conv_in, time embedding, down_blocks[0], up_blocks[-1], conv_norm_out, conv_out;
                 up_blocks[-1] gets the kept deep feature and this step's fresh skip connections

Why hand-written: diffusers 0.42's cache hooks (FasterCache, PyramidAttentionBroadcast,
FirstBlockCache, MagCache, SeaCache, TaylorSeer, TextKV) cache the transformer blocks or attention
outputs of DiT models and learn the step from a `cache_context` that the pipeline opens around each
denoiser call. `UNet2DConditionModel` has no `enable_cache`, the SD/SDXL pipelines open no cache
context, and none of the hooks skips a UNet's deep branch.

The UNet's own `forward` is left untouched: a forward pre-hook on the UNet decides each step, and
the deep blocks (down_blocks[1:], mid_block, up_blocks[:-1]) get a `forward` that, on a cached
step, returns what they returned on the last full step instead of computing. The UNet's loop then
runs as usual: ControlNet / T2I residuals are still added to the (replayed) deep skips and mid
output, which the replayed up blocks ignore, and to the fresh shallow skips, which matter.
"""

from __future__ import annotations

import enum
import inspect
import numbers
import weakref
from typing import Any, Callable, Optional

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from idgen.validation import InvalidArgumentError

#: The UNets (and cached ControlNets) that have a step cache installed -> its handle.
_INSTALLED: "weakref.WeakKeyDictionary[torch.nn.Module, StepCache]" = weakref.WeakKeyDictionary()


class _Phase(enum.Enum):
    PASS = "pass"      # outside a UNet call, or interval 1: the deep blocks just run
    RECORD = "record"  # full step that later steps may reuse: run and keep the outputs
    REPLAY = "replay"  # cached step: return the kept outputs


class StepCache:
    """Handle of a step cache installed by `enable_step_cache`; `remove()` uninstalls it.

    Steps and calls: each UNet call is one denoising step. A pipeline call is a run of steps whose
    timesteps strictly decrease; a timestep that does not decrease starts a new call, and the first
    step of every call is a full step. A cached step is only taken when the latents
    `sample` `[B, C, H, W]` (B = 2 x batch under classifier-free guidance) have the shape, dtype
    and device of the last full step. `reset()` forces the next step to be full.

    What is kept from the last full step (only when `interval > 1`):
        - the deep feature: the output of up_blocks[-2] (after its upsampler), `[B, C', H, W]` with
          C' its output channels and H, W the latent size (e.g. 640 x 128 x 128 for SDXL at 1024 px);
        - the outputs of down_blocks[1:] (`(hidden, res_samples)`) and of mid_block, so that the
          UNet can still add ControlNet residuals to tensors of the right shapes on cached steps;
        - with `controlnet=`, that ControlNet's `(down_residuals, mid_residual)` output.
    They hold activation memory between steps (less than one full UNet step's activations).

    Attributes:
        interval: a full step every `interval` steps (1: every step, the plain UNet).
        controlnet: the ControlNet whose output is reused on cached steps, or None.
        full_steps, cached_steps: UNet calls run fully / from the cache, since `enable_step_cache`.
        controlnet_full_steps, controlnet_cached_steps: the same for `controlnet`.
    """

    def __init__(self, unet: UNet2DConditionModel, interval: int, controlnet: Optional[ControlNetModel]):
        self.unet, self.interval, self.controlnet = unet, interval, controlnet
        self.full_steps = self.cached_steps = 0
        self.controlnet_full_steps = self.controlnet_cached_steps = 0
        self._phase = _Phase.PASS
        self._last_timestep: Optional[float] = None
        self._age: Optional[int] = None  # steps since the last full step of this call; None: none yet
        self._opened_by_controlnet: Optional[float] = None  # timestep of a step the ControlNet began
        self._key: Optional[tuple] = None  # (shape, dtype, device) of the sample of the last full step
        self._outputs: dict[Any, Any] = {}
        self._controlnet_key: Optional[tuple] = None
        self._controlnet_output: Any = None
        self._restore: list[tuple[torch.nn.Module, Optional[Callable]]] = []
        self._hooks = [
            unet.register_forward_pre_hook(self._before_unet, with_kwargs=True),
            unet.register_forward_hook(self._after_unet, always_call=True),
        ]
        for index, block in enumerate(unet.down_blocks[1:]):
            self._replace_forward(block, self._cached_block_forward(block.forward, slot=index, keep=True))
        if unet.mid_block is not None:
            self._replace_forward(unet.mid_block, self._cached_block_forward(unet.mid_block.forward, "mid", keep=True))
        # Every replayed up block returns the deep feature: only up_blocks[-2]'s reaches a live block.
        deepest = len(unet.up_blocks) - 2
        for index, block in enumerate(unet.up_blocks[:-1]):
            self._replace_forward(block, self._cached_block_forward(block.forward, "deep", keep=index == deepest))
        if controlnet is not None:
            self._replace_forward(controlnet, self._cached_controlnet_forward(controlnet.forward))

    def reset(self) -> None:
        """Forget the kept features: the next step is a full step and starts a new call."""
        self._last_timestep = self._age = self._opened_by_controlnet = None
        self._key = self._controlnet_key = self._controlnet_output = None
        self._outputs.clear()

    def remove(self) -> None:
        """Uninstall: the UNet (and ControlNet) compute exactly as before `enable_step_cache`."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for module, previous in reversed(self._restore):
            if previous is None:
                del module.forward
            else:
                module.forward = previous
        self._restore.clear()
        _INSTALLED.pop(self.unet, None)
        if self.controlnet is not None:
            _INSTALLED.pop(self.controlnet, None)
        self.reset()

    # -- installation -------------------------------------------------------------------------

    def _replace_forward(self, module: torch.nn.Module, forward: Callable) -> None:
        # Keep an instance-level `forward` someone else set (accelerate's offload hooks do).
        self._restore.append((module, module.__dict__.get("forward")))
        module.forward = forward

    def _cached_block_forward(self, original: Callable, slot: Any, keep: bool) -> Callable:
        def forward(*args, **kwargs):
            if self._phase is _Phase.REPLAY:
                return self._replayed(slot)
            output = original(*args, **kwargs)
            if keep and self._phase is _Phase.RECORD:
                # A copy of the deep feature: up blocks may scale their input in place (diffusers'
                # FreeU does on the two deepest levels, which include up_blocks[-1] in 2-level UNets).
                self._outputs[slot] = output.clone() if slot == "deep" else output
            return output

        return forward

    def _replayed(self, slot: Any) -> Any:
        output = self._outputs[slot]
        return output.clone() if slot == "deep" else output

    def _cached_controlnet_forward(self, original: Callable) -> Callable:
        signature = inspect.signature(original)

        def forward(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            timestep = _timestep_value(arguments["timestep"])
            if self._opened_by_controlnet != timestep:
                self._open_step(timestep)
                self._opened_by_controlnet = timestep
            sample, cond = arguments["sample"], arguments["controlnet_cond"]
            # The residuals scale with conditioning_scale, which the pipeline changes outside
            # control_guidance_start/end: a different scale (or shape, or mode) runs the ControlNet.
            key = (_tensor_key(sample), tuple(cond.shape), float(arguments["conditioning_scale"]),
                   arguments["guess_mode"], arguments["return_dict"])
            if self._may_replay() and key == self._controlnet_key:
                self.controlnet_cached_steps += 1
                return self._controlnet_output
            self.controlnet_full_steps += 1
            output = original(*args, **kwargs)
            if self.interval > 1:
                self._controlnet_key, self._controlnet_output = key, output
            return output

        return forward

    # -- stepping -----------------------------------------------------------------------------

    def _open_step(self, timestep: float) -> None:
        """Start the step at `timestep`; a timestep that does not decrease starts a new call."""
        if self._last_timestep is None or timestep >= self._last_timestep:
            self.reset()
        elif self._age is not None:
            self._age += 1
        self._last_timestep = timestep

    def _may_replay(self) -> bool:
        return self._age is not None and 0 < self._age < self.interval

    def _before_unet(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        timestep = _timestep_value(args[1] if len(args) > 1 else kwargs["timestep"])
        if self._opened_by_controlnet != timestep:
            self._open_step(timestep)
        self._opened_by_controlnet = None
        key = _tensor_key(sample)
        # "deep" is kept last (up_blocks[-2] runs after the other deep blocks): a full step that
        # raised before it left nothing to replay.
        if self._may_replay() and key == self._key and "deep" in self._outputs:
            self._phase = _Phase.REPLAY
            self.cached_steps += 1
            return None
        self._age = 0
        self.full_steps += 1
        self._outputs.clear()
        if self.interval > 1:
            self._phase, self._key = _Phase.RECORD, key
        return None

    def _after_unet(self, module, args, output):
        self._phase = _Phase.PASS
        return None


def _timestep_value(timestep) -> float:
    """The timestep as a float (the largest, if it is a per-sample tensor)."""
    return float(torch.as_tensor(timestep).max())


def _tensor_key(tensor: torch.Tensor) -> tuple:
    return tuple(tensor.shape), tensor.dtype, tensor.device


def enable_step_cache(unet, interval: int = 3, *, controlnet=None) -> StepCache:
    """Install a DeepCache-style step cache on `unet`: a full UNet step every `interval` steps,
    the shallow branch only (down_blocks[0] and up_blocks[-1] around the kept deep feature) on the
    steps in between. Works for any pipeline loop that calls the UNet once per step (batched
    classifier-free guidance, SDXL `added_cond_kwargs`, `cross_attention_kwargs`, ControlNet
    residuals, step callbacks); see `StepCache` for what is kept and when a call starts.

    Args:
        unet: a diffusers `UNet2DConditionModel` of at least two levels.
        interval: a full step every `interval` steps; 1 reproduces the plain UNet bit for bit.
            DeepCache's paper uses 3 to 5 for SD1.5; larger is faster and drifts further.
        controlnet: a `ControlNetModel` the pipeline runs before the UNet each step (InstantID's
            IdentityNet), to be skipped on cached steps too: its residuals from the last full step
            are returned instead. Only its shallow residuals (conv_in and down_blocks[0] levels)
            reach a cached UNet step, so this trades their freshness for skipping a whole
            ControlNet encoder per cached step. A change of `conditioning_scale` runs it again.

    Returns:
        The `StepCache` handle (`.remove()`, `.reset()`, step counters).

    Raises:
        InvalidArgumentError: `unet` is not a `UNet2DConditionModel` (video UNets such as SVFR's
            `UNetSpatioTemporalConditionModel` are not supported) or has one level only;
            `interval` is not an integer ≥ 1; `controlnet` is not a `ControlNetModel`; or `unet`
            or `controlnet` already has a step cache (call `disable_step_cache(unet)` first:
            a second cache is refused rather than silently replacing the first).
    """
    if not isinstance(unet, UNet2DConditionModel):
        raise InvalidArgumentError(
            f"the step cache needs a diffusers UNet2DConditionModel (SD1.5 / SDXL), got {type(unet).__name__}; "
            "video UNets (UNetSpatioTemporalConditionModel, as in SVFR) are not supported.")
    if isinstance(interval, bool) or not isinstance(interval, numbers.Integral) or interval < 1:
        raise InvalidArgumentError(f"interval must be an integer ≥ 1 (1 = no caching), got {interval!r}.")
    if len(unet.down_blocks) < 2:
        raise InvalidArgumentError("the step cache needs a UNet with at least two down blocks; this one has one.")
    first = unet.down_blocks[0]
    shallow_skips = 1 + len(first.resnets) + (getattr(first, "downsamplers", None) is not None)
    if len(unet.up_blocks[-1].resnets) > shallow_skips:
        raise InvalidArgumentError(
            "the step cache needs the last up block to take its skip connections from conv_in and the first "
            f"down block only; this UNet's last up block takes {len(unet.up_blocks[-1].resnets)}, "
            f"they give {shallow_skips}.")
    if controlnet is not None and not isinstance(controlnet, ControlNetModel):
        raise InvalidArgumentError(
            f"controlnet must be a diffusers ControlNetModel (or None), got {type(controlnet).__name__}; "
            "a MultiControlNetModel is not supported.")
    for module, what in ((unet, "this UNet"), (controlnet, "this ControlNet")):
        if module is not None and module in _INSTALLED:
            raise InvalidArgumentError(
                f"{what} already has a step cache (interval {_INSTALLED[module].interval}); "
                "call disable_step_cache(unet) before enabling another.")
    handle = StepCache(unet, int(interval), controlnet)
    _INSTALLED[unet] = handle
    if controlnet is not None:
        _INSTALLED[controlnet] = handle
    return handle


def disable_step_cache(unet) -> None:
    """Remove the step cache installed on `unet` (and its ControlNet), if any."""
    handle = _INSTALLED.get(unet)
    if handle is not None:
        handle.remove()
