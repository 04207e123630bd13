"""Will a request fit? A coarse estimate of the activation memory of one diffusion call, checked
against what the device has free before the call, so that an oversized request is refused with a
message instead of being killed by the operating system (CPU) or failing deep inside torch (GPU).

The estimate is deliberately simple and errs high: the UNet's largest feature maps (with the skip
connections kept for the decoder) for the whole CFG batch, and the VAE decoder's full-resolution
feature maps for the images decoded at once. Set `IDGEN_MEMORY_CHECK=0` to skip the check.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from idgen.errors import InsufficientMemoryError

#: Live feature maps of the UNet's first resolution (activations plus skip connections), as
#: multiples of one latent-resolution map of its first block's width.
UNET_LIVE_MAPS = 40
#: Live full-resolution feature maps of the VAE decoder's last block (GroupNorm and SiLU copies).
VAE_LIVE_MAPS = 6
#: The share of the free memory a request may plan to use.
HEADROOM = 0.9
GIB = 2**30


def available_bytes(device: torch.device) -> Optional[int]:
    """Free memory of `device` in bytes: CUDA's free memory, or the system's MemAvailable for the
    CPU (None where it can't be read)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimate_call_bytes(pipe, width: int, height: int, num_images: int, guidance: bool = True) -> int:
    """Bytes of activations one call of `pipe` at `width` x `height` with `num_images` needs:
    the UNet's first-resolution maps for the CFG batch plus the VAE decoder's full-resolution
    maps (all images at once, or one with VAE slicing)."""
    unet, vae = pipe.unet, pipe.vae
    scale = getattr(pipe, "vae_scale_factor", 8)
    element = torch.finfo(unet.dtype).bits // 8
    batch = num_images * (2 if guidance else 1)
    latent_pixels = (width // scale) * (height // scale)
    unet_bytes = batch * latent_pixels * unet.config.block_out_channels[0] * UNET_LIVE_MAPS * element
    decoded_at_once = 1 if getattr(vae, "use_slicing", False) else num_images
    vae_element = torch.finfo(vae.dtype).bits // 8
    vae_bytes = decoded_at_once * width * height * vae.config.block_out_channels[0] * VAE_LIVE_MAPS * vae_element
    return unet_bytes + vae_bytes


def check_fits(pipe, width: int, height: int, num_images: int, guidance: bool = True) -> None:
    """Raise InsufficientMemoryError when `estimate_call_bytes` exceeds the free memory of the
    pipeline's device (skipped with IDGEN_MEMORY_CHECK=0, or when free memory can't be read)."""
    if os.environ.get("IDGEN_MEMORY_CHECK", "1").lower() in ("0", "false", "no"):
        return
    free = available_bytes(pipe.device)
    if free is None:
        return
    needed = estimate_call_bytes(pipe, width, height, num_images, guidance)
    if needed > HEADROOM * free:
        raise InsufficientMemoryError(
            f"{num_images} image(s) of {width}x{height} need about {needed / GIB:.1f} GiB of working memory; "
            f"{pipe.device.type} has {free / GIB:.1f} GiB free. Ask for fewer images or a smaller size "
            "(or set IDGEN_MEMORY_CHECK=0 to try anyway).")
