"""CodeFormer (sczhou/CodeFormer `basicsr/archs/codeformer_arch.py`): a transformer predicts the
VQGAN code of every latent pixel of a degraded face; the generator decodes the codes, fused with
the degraded face's encoder features by a fidelity weight `w`. Loads the official `codeformer.pth`
(`params_ema`) unchanged.

    from idgen.restorers.codeformer import load_codeformer
    model = load_codeformer("models/CodeFormer/codeformer.pth")  # eval, float32, CPU
    with torch.no_grad():
        face = model(x, w=0.5)  # x: [B, 3, 512, 512] RGB in [-1, 1] -> the same

Module and parameter names are the official ones (`encoder.blocks.*`, `quantize.embedding.weight`,
`generator.blocks.*`, `position_emb`, `feat_emb`, `ft_layers.*`, `idx_pred_layer.*`,
`fuse_convs_dict.{resolution}.*`); the code is idgen's own, without basicsr.

`forward` is the official one as `inference_codeformer.py` calls it (`net(x, w=w, adain=True)[0]`):
the codebook features are AdaIN-matched to the encoder's latent before decoding, and the fusion
is skipped at `w == 0`. Where the official class hard-codes the 512-px sizes (the 16x16 latent,
`emb_dim` 256, the per-resolution widths and block indices), they are derived here from the
constructor's sizes, which default to the official ones.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from idgen.checkpoint import (
    PathOrStateDict, assign_weights, check_state_dict, describe_source, module_state_shapes, resolve_state_dict,
    unwrap_training_weights,
)
from idgen.errors import CheckpointError, ModelNotFoundError
from idgen.restorers.vqgan import NORM_GROUPS, Encoder, Generator, ResBlock, VectorQuantizer
from idgen.validation import InvalidArgumentError, check_number

#: The released weights (`params_ema` of the official checkpoint).
CODEFORMER_FILE = "codeformer.pth"
CODEFORMER_HINT = (f"Download {CODEFORMER_FILE} from the sczhou/CodeFormer releases: "
                   "https://github.com/sczhou/CodeFormer/releases/tag/v0.1.0")
#: The wrappers official training files keep the weights under, in the order they are taken.


def adaptive_instance_norm(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`content` `[B, C, H, W]` renormalised to the per-channel mean and std of `style` (same B, C):
    the official `adaptive_instance_normalization` (unbiased variance, `eps` added to it)."""

    def mean_std(feat):
        flat = feat.flatten(2)
        return flat.mean(dim=2)[..., None, None], (flat.var(dim=2) + eps).sqrt()[..., None, None]

    style_mean, style_std = mean_std(style)
    content_mean, content_std = mean_std(content)
    return (content - content_mean) / content_std * style_std + style_mean


class TransformerSALayer(nn.Module):
    """Pre-norm transformer layer on `[L, B, C]` tokens: self-attention whose queries and keys get
    the position embedding (values do not), then a GELU MLP; both residual."""

    def __init__(self, embed_dim: int, nhead: int, dim_mlp: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dim, nhead)
        self.linear1 = nn.Linear(embed_dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(tokens)
        query = normed + pos
        tokens = tokens + self.self_attn(query, query, value=normed, need_weights=False)[0]
        return tokens + self.linear2(F.gelu(self.linear1(self.norm2(tokens))))


class FuseSFTBlock(nn.Module):
    """Controllable feature transform: a scale and shift computed from `[encoder, decoder]`
    features, added to the decoder features times the fidelity weight `w` (official `Fuse_sft_block`)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.encode_enc = ResBlock(2 * in_ch, out_ch)
        self.scale = nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1))
        self.shift = nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1))

    def forward(self, enc_feat: torch.Tensor, dec_feat: torch.Tensor, w: float) -> torch.Tensor:
        feat = self.encode_enc(torch.cat([enc_feat, dec_feat], dim=1))
        return dec_feat + w * (dec_feat * self.scale(feat) + self.shift(feat))


class CodeFormer(nn.Module):
    """CodeFormer face restorer: `[B, 3, img_size, img_size]` RGB in [-1, 1] -> the same.

    Args:
        dim_embd, n_head, n_layers: the code-prediction transformer (MLP width `2 * dim_embd`).
        codebook_size: number of VQGAN codes; emb_dim: their width.
        latent_size: number of latent pixels, `(img_size / 2**(len(ch_mult) - 1))**2`.
        connect_list: resolutions (strings, as the official keys `fuse_convs_dict.{res}`) where
            encoder features are fused into the generator.
        img_size, nf, ch_mult, res_blocks, attn_resolutions: the VQGAN (level i works at
            `img_size / 2**i` px with `nf * ch_mult[i]` channels, every width a multiple of 32).

    Raises:
        InvalidArgumentError: sizes that do not make a CodeFormer.
    """

    def __init__(self, dim_embd: int = 512, n_head: int = 8, n_layers: int = 9, codebook_size: int = 1024,
                 latent_size: int = 256, connect_list: Sequence[str] = ("32", "64", "128", "256"),
                 img_size: int = 512, nf: int = 64, ch_mult: Sequence[int] = (1, 2, 2, 4, 4, 8), res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), emb_dim: int = 256):
        super().__init__()
        widths = _check_sizes(dim_embd, n_head, latent_size, connect_list, img_size, nf, ch_mult, res_blocks)
        self.img_size = img_size
        self.latent_res = img_size // 2 ** (len(ch_mult) - 1)
        self.connect_list = [str(r) for r in connect_list]

        # the official class is a VQAutoEncoder: its parts sit at the top level
        self.encoder = Encoder(3, nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions)
        self.quantize = VectorQuantizer(codebook_size, emb_dim)
        self.generator = Generator(nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions)

        self.position_emb = nn.Parameter(torch.zeros(latent_size, dim_embd))
        self.feat_emb = nn.Linear(emb_dim, dim_embd)
        self.ft_layers = nn.Sequential(*[TransformerSALayer(dim_embd, n_head, 2 * dim_embd) for _ in range(n_layers)])
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False))
        self.fuse_convs_dict = nn.ModuleDict({r: FuseSFTBlock(widths[int(r)], widths[int(r)])
                                              for r in self.connect_list})

        fused = {int(r) for r in self.connect_list}
        self._encoder_taps = {i: str(r) for i, r in self.encoder.taps.items() if r in fused}
        self._generator_taps = {i: str(r) for i, r in self.generator.taps.items() if r in fused}

    def check_inputs(self, x, w) -> float:
        """`w` as a float; raises `InvalidArgumentError` for an input or weight `forward` cannot take."""
        w = check_number("CodeFormer fidelity weight w", w, low=0.0, high=1.0,
                         hint=" (0: the most restoration, 1: the most faithful to the input)")
        if not isinstance(x, torch.Tensor):
            raise InvalidArgumentError(f"CodeFormer takes a [B, 3, S, S] tensor, got a {type(x).__name__}.")
        size = self.img_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0 or x.shape[2:] != (size, size):
            raise InvalidArgumentError(
                f"CodeFormer takes [B, 3, {size}, {size}] RGB crops in [-1, 1] (the aligned face crop it was trained "
                f"on), got shape {list(x.shape)}; align and resize the face to {size}x{size} first."
            )
        weight = self.position_emb
        if not x.is_floating_point() or x.dtype != weight.dtype or x.device != weight.device:
            raise InvalidArgumentError(
                f"CodeFormer input is {x.dtype} on {x.device}, the model is {weight.dtype} on {weight.device}; "
                "convert the input with `x.to(device, dtype)`."
            )
        return w

    def forward(self, x: torch.Tensor, w: float = 0.5) -> torch.Tensor:
        """Restore faces.

        Args:
            x: `[B, 3, img_size, img_size]` RGB in [-1, 1], the model's dtype and device.
            w: fidelity weight in [0, 1]: 0 decodes the predicted codes alone, higher values fuse
                more of the input's own features (0.5 is the official default).

        Returns:
            `[B, 3, img_size, img_size]` restored RGB, nominally in [-1, 1] (not clamped, as the official).
        """
        w = self.check_inputs(x, w)

        # 1. Encode, keeping the features of the fused resolutions
        enc_feats = {}
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i in self._encoder_taps:
                enc_feats[self._encoder_taps[i]] = x
        lq_feat = x

        # 2. Predict a code per latent pixel: [B, C, h, w] -> [h*w, B, C] tokens
        tokens = self.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))
        pos = self.position_emb.unsqueeze(1)
        for layer in self.ft_layers:
            tokens = layer(tokens, pos)
        logits = self.idx_pred_layer(tokens).transpose(0, 1)  # [B, h*w, codebook_size]
        indices = F.softmax(logits, dim=2).argmax(dim=2)  # the official top-1 of the softmax

        # 3. Look the codes up, matched to the input's latent statistics (official `adain=True`)
        quant_feat = self.quantize.lookup(indices, lq_feat.shape[2:])
        x = adaptive_instance_norm(quant_feat, lq_feat)

        # 4. Decode, fusing the encoder's features with weight w
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            if w > 0 and i in self._generator_taps:
                name = self._generator_taps[i]
                x = self.fuse_convs_dict[name](enc_feats[name], x, w)
        return x


def _check_sizes(dim_embd, n_head, latent_size, connect_list, img_size, nf, ch_mult, res_blocks) -> dict[int, int]:
    """`{resolution: width}` of the VQGAN pyramid; raises `InvalidArgumentError` for impossible sizes."""
    if not ch_mult or res_blocks < 1 or n_head < 1 or dim_embd % n_head:
        raise InvalidArgumentError(f"CodeFormer: need ch_mult levels, res_blocks >= 1 and dim_embd divisible by "
                                   f"n_head; got ch_mult={ch_mult}, res_blocks={res_blocks}, dim_embd={dim_embd}, "
                                   f"n_head={n_head}.")
    levels = len(ch_mult)
    if img_size % 2 ** (levels - 1):
        raise InvalidArgumentError(f"CodeFormer: img_size {img_size} is not divisible by 2**{levels - 1}.")
    widths = {img_size // 2**i: nf * m for i, m in enumerate(ch_mult)}
    if any(c % NORM_GROUPS for c in widths.values()):
        raise InvalidArgumentError(f"CodeFormer: every width nf * ch_mult must be a multiple of {NORM_GROUPS}, "
                                   f"got {sorted(set(widths.values()))}.")
    latent_res = img_size // 2 ** (levels - 1)
    if latent_size != latent_res**2:
        raise InvalidArgumentError(f"CodeFormer: latent_size must be {latent_res}**2 = {latent_res**2} for "
                                   f"img_size {img_size} and {levels} levels, got {latent_size}.")
    bad = [r for r in connect_list if not str(r).isdigit() or int(r) not in widths]
    if bad:
        raise InvalidArgumentError(f"CodeFormer: connect_list {list(connect_list)} has {bad[0]!r}, not one of the "
                                   f"resolutions {sorted(widths)}.")
    return widths


def load_codeformer(source: PathOrStateDict, config: Optional[Mapping[str, object]] = None) -> CodeFormer:
    """`CodeFormer` from the official `codeformer.pth` (or a state dict), in eval mode, float32, on
    CPU (meta tensors stay meta: nothing is allocated).

    Args:
        source: path (torch pickle read with weights_only, or `.safetensors`) or state dict; the
            weights may sit under `params_ema` (taken first, as the official inference does),
            `params` or `state_dict`.
        config: `CodeFormer` arguments that differ from the official sizes.

    Raises:
        ModelNotFoundError: no source, or the file does not exist (the message says where to get it).
        CheckpointError: unreadable, or a key missing / misshaped / unexpected (the first named).
        InvalidArgumentError: `config` has an unknown key or impossible sizes.
    """
    if source is None or (isinstance(source, (str, os.PathLike)) and not Path(source).is_file()):
        given = "no CodeFormer checkpoint was given" if source is None else \
            f"CodeFormer checkpoint {str(source)!r} does not exist"
        raise ModelNotFoundError(f"{given}. {CODEFORMER_HINT}")
    what = f"CodeFormer checkpoint {describe_source(source)}"
    config = dict(config or {})
    unknown = sorted(set(config) - set(inspect.signature(CodeFormer).parameters))
    if unknown:
        raise InvalidArgumentError(f"CodeFormer config: unknown key {unknown[0]!r}; the sizes are "
                                   f"{', '.join(inspect.signature(CodeFormer).parameters)}.")
    state_dict = unwrap_training_weights(resolve_state_dict(source), what)
    with torch.device("meta"):
        model = CodeFormer(**config)
    expected = module_state_shapes(model)
    if state_dict and not set(state_dict) & set(expected):
        first = next(iter(state_dict))
        raise CheckpointError(f"{what}: none of CodeFormer's keys are present (the first key is {first!r}, "
                              f"expected e.g. 'position_emb'); this is not {CODEFORMER_FILE}.")
    check_state_dict(state_dict, expected, what=what)
    return assign_weights(model, state_dict)
