"""RestoreFormer++ (wzhouxiff/RestoreFormerPlusPlus `VQVAEGANMultiHeadTransformer`): a VQGAN whose
decoder attends to the encoder's features (multi-head cross attention at 16x16 and 32x32),
loading the official `RestoreFormer++.ckpt` (and the same repository's `RestoreFormer.ckpt`) unchanged.

    from idgen.restorers.restoreformer import load_restoreformer
    model = load_restoreformer("RestoreFormer++.ckpt")   # eval, float32, CPU
    face = model(x)                                      # x: [B, 3, 512, 512] RGB in [-1, 1]

Module and parameter names are the official ones (`RestoreFormer/modules/vqvae/vqvae_arch.py`); the
code is idgen's own. The official inference (`RestoreFormer/RestoreFormer.py: RestoreFormer.enhance`)
feeds the 512 crop as RGB in [-1, 1] (`img2tensor(bgr / 255, bgr2rgb=True)` then `normalize(0.5,
0.5)`), takes `self.RF(x)[0]` and clamps it to [-1, 1] (`tensor2img(min_max=(-1, 1))`): idgen's
[-1, 1] RGB is the official range, so the only conversion at the boundary is that clamp.

The released files are PyTorch Lightning checkpoints of `RestoreFormerModel`: the model sits in
`checkpoint["state_dict"]` under `vqvae.`, possibly beside the training losses' networks (`loss.*`:
LPIPS, discriminators, ArcFace) that inference never uses; the official loader strips `vqvae.`
and loads with `strict=False`. Here every `vqvae.` key must be there with its shape and `loss.*`
is dropped; anything else is refused by name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn
from torch.nn import functional as F

from idgen.checkpoint import PathOrStateDict, assign_weights, describe_source, first_mismatch, load_checkpoint, module_state_shapes
from idgen.errors import CheckpointError, ModelNotFoundError
from idgen.validation import InvalidArgumentError

#: The released files: RestoreFormer++ (the default) and RestoreFormer (v1), same architecture.
RESTOREFORMER_PP_FILE = "RestoreFormer++.ckpt"
RESTOREFORMER_FILE = "RestoreFormer.ckpt"
RESTOREFORMER_FILES = (RESTOREFORMER_PP_FILE, RESTOREFORMER_FILE)
RESTOREFORMER_HINT = ("Download RestoreFormer++.ckpt (or RestoreFormer.ckpt) from the wzhouxiff/RestoreFormerPlusPlus "
                      "releases: https://github.com/wzhouxiff/RestoreFormerPlusPlus/releases/tag/v1.0.0.")
#: `VQVAEGANMultiHeadTransformer` as the official inference builds it for RestoreFormer++
#: (`head_size=4, ex_multi_scale_num=1`; the rest are the class defaults, = configs/RestoreFormerPlusPlus.yaml).
RESTOREFORMER_PP_CONFIG = {"n_embed": 1024, "embed_dim": 256, "ch": 64, "out_ch": 3, "ch_mult": (1, 2, 2, 4, 4, 8),
                           "num_res_blocks": 2, "attn_resolutions": (16,), "in_channels": 3, "resolution": 512,
                           "z_channels": 256, "head_size": 4, "ex_multi_scale_num": 1}
#: ... and for RestoreFormer (v1): 8 heads, cross attention at 16x16 only.
RESTOREFORMER_CONFIG = {**RESTOREFORMER_PP_CONFIG, "head_size": 8, "ex_multi_scale_num": 0}
#: The Lightning wrapper: the model's prefix inside `state_dict`, and the training-only prefixes dropped.
MODEL_PREFIX = "vqvae."
TRAINING_PREFIXES = ("loss.",)
#: Lightning 1.0-1.4 keys `checkpoint["callbacks"]` by the callback *class* (the official main.py
#: imports `pytorch_lightning.utilities.distributed`, a 1.x module): a weights-only load refuses that
#: global. These names resolve to an inert local class instead (nothing is imported or run).
LIGHTNING_CALLBACK_GLOBALS = ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
                              "pytorch_lightning.callbacks.early_stopping.EarlyStopping")

GROUPS = 32  # the official Normalize(): GroupNorm(32, C, eps=1e-6)


class LightningCallbackName:
    """Stands for a Lightning callback class named in a checkpoint's `callbacks` dict (unused)."""


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice, plus the input (1x1 `nin_shortcut` when the width changes).
    `[B, C_in, H, W] -> [B, C_out, H, W]` (the official `temb` path is off: `temb_channels=0`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # dropout 0.0
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class MultiHeadAttnBlock(nn.Module):
    """Multi-head attention over the H*W positions, residual. Self attention `attn(x)`; with
    `context` (the encoder's feature at the same size) the queries come from `norm2(context)` and
    the keys and values from `norm1(x)`, as in the official decoder. `[B, C, H, W] -> [B, C, H, W]`."""

    def __init__(self, channels: int, head_size: int):
        super().__init__()
        self.head_size = head_size
        self.norm1 = _norm(channels)
        self.norm2 = _norm(channels)  # used only with a context (the encoder's blocks keep it unused)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.norm1(x)
        query = h if context is None else self.norm2(context)
        b, c, height, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, heads, H*W, C / heads]
            return t.reshape(b, self.head_size, c // self.head_size, height * width).transpose(2, 3)

        out = F.scaled_dot_product_attention(heads(self.q(query)), heads(self.k(h)), heads(self.v(h)))
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, height, width))


class Downsample(nn.Module):
    """Pad right/bottom by one, conv3x3 stride 2: `[B, C, H, W] -> [B, C, H/2, W/2]`."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2, conv3x3: `[B, C, H, W] -> [B, C, 2H, 2W]`."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Stage(nn.Module):
    """One resolution: `block` (ResnetBlocks), `attn` (one per block, or none) and an optional
    `downsample` / `upsample` (the official code's bare `nn.Module()` containers)."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run(self, h: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h, context)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, head_size: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = MultiHeadAttnBlock(channels, head_size)
        self.block_2 = ResnetBlock(channels, channels)


class MultiHeadEncoder(nn.Module):
    """`[B, 3, R, R]` -> (`[B, z_channels, R / 2**(L-1), R / 2**(L-1)]`, skips): `skips[i]` is the
    level-`i` feature the decoder attends to (before the downsample; at the last level the output
    of `mid.block_1`), `skips["mid"]` the middle's output (L = len(ch_mult))."""

    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution, z_channels,
                 head_size):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        res, block_in = resolution, ch
        for level, mult in enumerate(ch_mult):
            block_out = ch * mult
            blocks = [ResnetBlock(block_in if i == 0 else block_out, block_out) for i in range(num_res_blocks)]
            attns = [MultiHeadAttnBlock(block_out, head_size) for _ in blocks] if res in attn_resolutions else []
            stage = _Stage(blocks, attns)
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(block_out)
                res //= 2
            self.down.append(stage)
            block_in = block_out
        self.mid = _Mid(block_in, head_size)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)  # double_z=False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        skips: dict = {}
        h = self.conv_in(x)
        for level, stage in enumerate(self.down):
            h = stage.run(h)
            if hasattr(stage, "downsample"):
                skips[level] = h
                h = stage.downsample(h)
        h = self.mid.block_1(h)
        skips[len(self.down) - 1] = h
        h = self.mid.block_2(self.mid.attn_1(h))
        skips["mid"] = h
        return self.conv_out(F.silu(self.norm_out(h))), skips


class MultiHeadDecoderTransformer(nn.Module):
    """(`[B, z_channels, r, r]`, the encoder's skips) -> `[B, out_ch, R, R]`; every attention
    block queries the encoder's feature of its level (`MultiHeadEncoder`)."""

    def __init__(self, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels, head_size):
        super().__init__()
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _Mid(block_in, head_size)
        stages = []
        for level in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[level]
            blocks = [ResnetBlock(block_in if i == 0 else block_out, block_out) for i in range(num_res_blocks + 1)]
            attns = [MultiHeadAttnBlock(block_out, head_size) for _ in blocks] if res in attn_resolutions else []
            stage = _Stage(blocks, attns)
            if level != 0:
                stage.upsample = Upsample(block_out)
                res *= 2
            stages.insert(0, stage)
            block_in = block_out
        self.up = nn.ModuleList(stages)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z: torch.Tensor, skips: Mapping) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_1(h)
        h = self.mid.attn_1(h, skips["mid"])
        h = self.mid.block_2(h)
        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            h = stage.run(h, skips[level] if len(stage.attn) else None)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest codebook entry per position (squared L2, the official `z^2 + e^2 - 2 z.e`):
    `[B, e_dim, H, W] -> [B, e_dim, H, W]`."""

    def __init__(self, n_e: int, e_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_e, e_dim)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """`[B, e_dim, H, W]` -> the codebook indices `[B, H, W]` (int64)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        codebook = self.embedding.weight
        distance = (flat ** 2).sum(1, keepdim=True) + (codebook ** 2).sum(1) - 2 * flat @ codebook.t()
        return distance.argmin(1).view(b, h, w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.indices(z)).permute(0, 3, 1, 2).contiguous()


class RestoreFormerPP(nn.Module):
    """RestoreFormer++ (`VQVAEGANMultiHeadTransformer`), official sizes by default; RestoreFormer
    (v1) is `RestoreFormerPP(**RESTOREFORMER_CONFIG)`.

    Args (the official constructor's; `double_z=False`, `enable_mid=True`, dropout 0 are fixed):
        n_embed, embed_dim: codebook size and width. ch, ch_mult: widths per level (every width a
        multiple of 32, GroupNorm's groups). num_res_blocks: per encoder level (+1 in the decoder).
        attn_resolutions: where the encoder attends (16); the decoder also at twice the last size,
        `ex_multi_scale_num` times. resolution: the input size R (the attention sizes depend on it).
        head_size: attention heads. in_channels, out_ch, z_channels: image and latent channels.
    """

    def __init__(self, n_embed: int = 1024, embed_dim: int = 256, ch: int = 64, out_ch: int = 3,
                 ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16,), in_channels: int = 3, resolution: int = 512,
                 z_channels: int = 256, head_size: int = 4, ex_multi_scale_num: int = 1):
        super().__init__()
        _check_sizes(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, head_size, ex_multi_scale_num)
        self.resolution, self.in_channels = resolution, in_channels
        attn_resolutions = list(attn_resolutions)
        self.encoder = MultiHeadEncoder(ch, ch_mult, num_res_blocks, attn_resolutions, in_channels, resolution,
                                        z_channels, head_size)
        for _ in range(ex_multi_scale_num):  # the official widening, verbatim: [first, last * 2]
            attn_resolutions = [attn_resolutions[0], attn_resolutions[-1] * 2]
        self.decoder = MultiHeadDecoderTransformer(ch, out_ch, ch_mult, num_res_blocks, attn_resolutions,
                                                   resolution, z_channels, head_size)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)

    def forward(self, x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """`x`: `[B, in_channels, R, R]` RGB in [-1, 1] (R = `resolution`, 512) -> the restored
        `[B, out_ch, R, R]`, clamped to [-1, 1] as the official `tensor2img` does (`clamp=False`:
        the decoder's raw output, the official `model(x)[0]`)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4 \
                or tuple(x.shape[1:]) != (self.in_channels, self.resolution, self.resolution):
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidArgumentError(
                f"RestoreFormer++ input: expected a float tensor [B, {self.in_channels}, {self.resolution}, "
                f"{self.resolution}] (RGB in [-1, 1], the aligned face crop), got {got}.")
        z, skips = self.encoder(x)
        quant = self.quantize(self.quant_conv(z))
        out = self.decoder(self.post_quant_conv(quant), skips)
        return out.clamp(-1.0, 1.0) if clamp else out


def _check_sizes(ch, ch_mult, num_res_blocks, attn_resolutions, resolution, head_size, ex_multi_scale_num):
    widths = [ch * m for m in ch_mult]
    if not ch_mult or any(w <= 0 or w % GROUPS for w in widths):
        raise InvalidArgumentError(f"RestoreFormer++ ch={ch!r}, ch_mult={tuple(ch_mult)!r}: every width "
                                   f"({widths}) must be a positive multiple of {GROUPS} (GroupNorm groups).")
    if resolution % 2 ** (len(ch_mult) - 1):
        raise InvalidArgumentError(f"RestoreFormer++ resolution={resolution!r}: must be divisible by "
                                   f"2**{len(ch_mult) - 1} (the {len(ch_mult)} levels).")
    if head_size < 1 or any(w % head_size for w in widths):
        raise InvalidArgumentError(f"RestoreFormer++ head_size={head_size!r}: must divide every width ({widths}).")
    if num_res_blocks < 1 or ex_multi_scale_num < 0 or not attn_resolutions:
        raise InvalidArgumentError("RestoreFormer++ num_res_blocks >= 1, ex_multi_scale_num >= 0 and a non-empty "
                                   f"attn_resolutions are required, got {num_res_blocks!r}, {ex_multi_scale_num!r}, "
                                   f"{attn_resolutions!r}.")


def restoreformer_state_shapes(config: Optional[Mapping[str, object]] = None) -> dict[str, tuple[int, ...]]:
    """`{key: shape}` of `RestoreFormerPP(**config)` (no `vqvae.` prefix; released sizes by default)."""
    with torch.device("meta"):
        model = RestoreFormerPP(**_full_config(config))
    return module_state_shapes(model)


def unwrap_state_dict(state_dict: Mapping[str, object], what: str) -> dict:
    """The model's weights in an official file: `checkpoint["state_dict"]` when present, the
    `vqvae.` prefix stripped and the training losses (`loss.*`) dropped; other keys are kept (and
    then refused as unexpected). A bare, already unprefixed state dict passes as it is.

    Raises:
        CheckpointError: not a dict, or a key is not a string.
    """
    inner = state_dict.get("state_dict")
    if isinstance(inner, Mapping):
        state_dict = inner
    for key in state_dict:
        if not isinstance(key, str):
            raise CheckpointError(f"{what}: key {key!r} is a {type(key).__name__}, not a string; this is not a "
                                  "state dict.")
    if not any(k.startswith(MODEL_PREFIX) for k in state_dict):
        return dict(state_dict)
    return {k[len(MODEL_PREFIX):] if k.startswith(MODEL_PREFIX) else k: v for k, v in state_dict.items()
            if not k.startswith(TRAINING_PREFIXES)}


def detect_config(state_dict: Mapping[str, object]) -> dict:
    """The released config a (prefix-free) state dict is for: RestoreFormer++ when the decoder has
    its extra 32x32 attention (`decoder.up.4.attn.*`), else RestoreFormer (v1)."""
    return dict(RESTOREFORMER_PP_CONFIG if "decoder.up.4.attn.0.q.weight" in state_dict else RESTOREFORMER_CONFIG)


def _full_config(config: Optional[Mapping[str, object]]) -> dict:
    config = dict(config or {})
    unknown = sorted(set(config) - set(RESTOREFORMER_PP_CONFIG))
    if unknown:
        raise InvalidArgumentError(f"RestoreFormer++ config: unknown key {unknown[0]!r}; expected some of "
                                   f"{sorted(RESTOREFORMER_PP_CONFIG)}.")
    return {**RESTOREFORMER_PP_CONFIG, **config}


def read_restoreformer_file(path: os.PathLike | str) -> dict:
    """The dict in an official `.ckpt` (or a `.safetensors` / `.pth` state dict), read by
    `load_checkpoint` (weights-only). The Lightning callback classes the file may name as
    `callbacks` keys (`LIGHTNING_CALLBACK_GLOBALS`) resolve to `LightningCallbackName`.

    Raises:
        ModelNotFoundError: no such file (the message says where to get it).
        CheckpointError: unreadable; when the weights-only load refused a global, it is named.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"RestoreFormer++ checkpoint {str(path)!r} does not exist. {RESTOREFORMER_HINT}")
    inert = [(LightningCallbackName, name) for name in LIGHTNING_CALLBACK_GLOBALS]
    try:
        with torch.serialization.safe_globals(inert):
            return load_checkpoint(path)
    except CheckpointError as e:
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e.__context__ or ""))
        if refused is None:
            raise
        raise CheckpointError(
            f"RestoreFormer++ checkpoint {str(path)!r} pickles {refused.group(1)}, which a weights-only load "
            "refuses (idgen never runs code from a checkpoint). If you trust the file, save its "
            "checkpoint['state_dict'] once as a .safetensors (or weights-only .pth) file and load that.") from None


def load_restoreformer(source: PathOrStateDict, config: Optional[Mapping[str, object]] = None) -> RestoreFormerPP:
    """`RestoreFormerPP` from the official `RestoreFormer++.ckpt` / `RestoreFormer.ckpt` (or a state
    dict), in eval mode, float32, on CPU (meta tensors stay meta: nothing is allocated).

    Args:
        source: path (torch pickle read weights-only, or `.safetensors`) or state dict: the Lightning
            checkpoint as released (`{"state_dict": {"vqvae.…": …, "loss.…": …}, …}`), its
            `state_dict`, or the model's own keys.
        config: `RestoreFormerPP` arguments that differ from the released ones; None: RestoreFormer++
            (`RESTOREFORMER_PP_CONFIG`), or RestoreFormer v1 (`RESTOREFORMER_CONFIG`) when the file
            has no 32x32 decoder attention.

    Raises:
        ModelNotFoundError: the file does not exist (the message says where to get it).
        CheckpointError: unreadable, or a key missing / misshaped / unexpected (the first named).
        InvalidArgumentError: `config` has an unknown key or impossible sizes.
    """
    what = f"RestoreFormer++ checkpoint {describe_source(source)}"
    if isinstance(source, (str, os.PathLike)):
        raw = read_restoreformer_file(source)
    elif isinstance(source, Mapping):
        raw = source
    else:
        raise CheckpointError(f"expected a checkpoint path or a dict of tensors, got {type(source).__name__}.")
    state_dict = unwrap_state_dict(raw, what)
    config = _full_config(detect_config(state_dict) if config is None else config)
    with torch.device("meta"):
        model = RestoreFormerPP(**config)
    first_mismatch(model, state_dict, what)
    return assign_weights(model, state_dict)


__all__ = ["RESTOREFORMER_CONFIG", "RESTOREFORMER_FILE", "RESTOREFORMER_FILES", "RESTOREFORMER_HINT",
           "RESTOREFORMER_PP_CONFIG", "RESTOREFORMER_PP_FILE", "RestoreFormerPP", "load_restoreformer",
           "read_restoreformer_file", "restoreformer_state_shapes", "unwrap_state_dict"]
