"""What a standard IP-Adapter file is, checked before diffusers converts it.

The files used as InstantStyle's style reference (`ip-adapter_sd15.bin`, `ip-adapter_sdxl.bin`,
`ip-adapter_sdxl_vit-h.bin`, `ip-adapter-plus_sd15.bin`, `ip-adapter-plus_sdxl_vit-h.bin`,
`ip-adapter-full-face_sd15.bin`, their `.safetensors`) hold two sub-dicts:

- `image_proj`: the image projection. Plain: `ImageProjModel` (`proj` Linear CLIP image embeds
  `[E]` -> `4 x D`, `norm` LayerNorm(D)); Plus: the perceiver `Resampler` over CLIP hidden states
  (`latents [1, Q, W]`, `proj_in`, `layers.*`, `proj_out` -> D, `norm_out`); Full face:
  `MLPProjModel` (`proj.0`, `proj.2`, `proj.3` LayerNorm) over CLIP hidden states (257 tokens).
- `ip_adapter`: `{k}.to_k_ip.weight` / `{k}.to_v_ip.weight` (Linear D -> hidden, no bias) for the odd
  k of `unet.attn_processors` (the cross-attentions).

Identity adapters share that outer layout; they are told apart here and refused with the loader
that takes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from idgen.checkpoint import check_state_dict, split_prefixed
from idgen.errors import CheckpointError

WHAT = "style IP-Adapter"
#: Width of ArcFace embeddings: a resampler over 512-d inputs is InstantID's, not a CLIP adapter.
_ARCFACE_DIM = 512


@dataclass(frozen=True)
class StyleSpec:
    """One standard IP-Adapter file, for one UNet.

    Attributes:
        kind: "ip-adapter" (plain), "ip-adapter-plus" or "ip-adapter-full-face".
        clip_dim: the CLIP feature width the projection takes: the image-embedding (projection)
            width for the plain kind (1024 ViT-H, 1280 ViT-bigG), the hidden size otherwise.
        num_tokens: image tokens per reference image (4 plain, Q for Plus, 257 full face).
        uses_hidden_states: CLIP hidden states[-2] (Plus, full face) rather than image embeds.
    """

    kind: str
    clip_dim: int
    num_tokens: int

    @property
    def uses_hidden_states(self) -> bool:
        return self.kind != "ip-adapter"


def split_style_file(state_dict: Mapping[str, object]) -> dict[str, dict]:
    """`{"image_proj": ..., "ip_adapter": ...}` (nested or flat `image_proj.*` keys), checked present."""
    parts = split_prefixed(state_dict, ("image_proj", "ip_adapter"), what=WHAT)
    for part in ("image_proj", "ip_adapter"):
        if not parts[part]:
            raise CheckpointError(
                f"{WHAT}: missing {part!r} (first key present: {next(iter(state_dict), None)!r}); a standard "
                "IP-Adapter file (ip-adapter_sdxl.bin, ip-adapter_sd15.bin) holds 'image_proj' and 'ip_adapter'."
            )
    return parts


def _shape(sd: Mapping[str, object], key: str) -> tuple:
    value = sd.get(key)
    return tuple(value.shape) if isinstance(value, torch.Tensor) else ()


def infer_style_spec(parts: Mapping[str, Mapping[str, object]], unet) -> StyleSpec:
    """The kind and sizes of a standard IP-Adapter file; identity adapters refused by name.

    Raises:
        CheckpointError: an IP-Adapter-FaceID / FaceID-Portrait / InstantID file, an unknown
            projection, or a projection whose token width is not this UNet's.
    """
    image_proj, ip_adapter = parts["image_proj"], parts["ip_adapter"]
    d = int(unet.config.cross_attention_dim)
    if any("_lora." in k for k in ip_adapter) or any(k.startswith("perceiver_resampler.") for k in image_proj) or (
        "proj.0.weight" in image_proj and "proj.3.weight" not in image_proj
    ):
        raise CheckpointError(
            f"{WHAT}: this is an IP-Adapter-FaceID file (identity projection 'proj.0.weight' / "
            "'perceiver_resampler.*' or '*_lora.*' keys), not a style (CLIP image) IP-Adapter; load it with "
            "`pipe.load_faceid(path)` and give the style adapter ip-adapter_sdxl.bin / ip-adapter_sd15.bin."
        )
    if "proj.weight" in image_proj:
        out, clip_dim = _shape(image_proj, "proj.weight") or (0, 0)
        tokens, width = 4, out // 4
    elif "proj.3.weight" in image_proj:
        clip_dim, tokens, width = (_shape(image_proj, "proj.0.weight") or (0,))[-1], 257, _shape(image_proj, "proj.3.weight")[0]
    elif "latents" in image_proj:
        clip_dim = (_shape(image_proj, "proj_in.weight") or (0,))[-1]
        if clip_dim == _ARCFACE_DIM:
            raise CheckpointError(
                f"{WHAT}: this is InstantID's ip-adapter.bin (a resampler over 512-d face embeddings), not a "
                "style IP-Adapter; load it with `pipe.load_instantid(path)`."
            )
        tokens, width = _shape(image_proj, "latents")[1], (_shape(image_proj, "proj_out.weight") or (0,))[0]
    else:
        raise CheckpointError(
            f"{WHAT} image_proj: missing key 'proj.weight' (first key present: {next(iter(image_proj), None)!r}); "
            "not a standard IP-Adapter file."
        )
    if width != d:
        raise CheckpointError(
            f"{WHAT}: its image tokens are {width} wide but this UNet's cross-attention is {d} wide; the file "
            "was made for another base model (ip-adapter_sd15.bin: 768, ip-adapter_sdxl.bin: 2048)."
        )
    kind = {"proj.weight": "ip-adapter", "proj.3.weight": "ip-adapter-full-face"}
    return StyleSpec(next((v for k, v in kind.items() if k in image_proj), "ip-adapter-plus"), int(clip_dim), int(tokens))


def ip_adapter_layout(unet) -> dict[str, tuple[int, int]]:
    """`{"{k}.to_k_ip.weight": (hidden, D), ...}` for the odd k (cross-attentions) of `unet`."""
    # here, not at the top: the FaceID loader builds on this package (import cycle)
    from idgen.adapters.faceid.layout import processor_names

    out = {}
    for k, name in enumerate(processor_names(unet)):
        if k % 2 == 1:
            to_k = unet.get_submodule(name[: -len(".processor")]).to_k
            for proj in ("to_k_ip", "to_v_ip"):
                out[f"{k}.{proj}.weight"] = (int(to_k.out_features), int(to_k.in_features))
    return out


def plain_image_proj_layout(spec: StyleSpec, cross_attention_dim: int) -> dict[str, tuple[int, ...]]:
    """Keys of the plain `ImageProjModel` (the other kinds are checked by loading them strictly)."""
    d = cross_attention_dim
    return {"proj.weight": (4 * d, spec.clip_dim), "proj.bias": (4 * d,), "norm.weight": (d,), "norm.bias": (d,)}


def check_style_file(parts: Mapping[str, Mapping[str, object]], unet) -> StyleSpec:
    """Check a split standard IP-Adapter file against `unet`; returns its `StyleSpec`.

    Raises:
        CheckpointError: naming the first missing / mis-shaped / unexpected key.
    """
    spec = infer_style_spec(parts, unet)
    what = f"{WHAT} ({spec.kind}, cross_attention_dim {unet.config.cross_attention_dim})"
    check_state_dict(parts["ip_adapter"], ip_adapter_layout(unet), what=f"{what} ip_adapter")
    if spec.kind == "ip-adapter":
        check_state_dict(parts["image_proj"], plain_image_proj_layout(spec, int(unet.config.cross_attention_dim)),
                         what=f"{what} image_proj")
    return spec
