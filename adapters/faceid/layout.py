"""The official IP-Adapter-FaceID checkpoint layout, checked and mapped onto diffusers' modules.

An official file (`ip-adapter-faceid_sd15.bin`, `ip-adapter-faceid-plusv2_sd15.bin`,
`ip-adapter-faceid_sdxl.bin`, ...) holds two sub-dicts:

- `image_proj`: FaceID's `MLPProjModel` (`proj.0`, `proj.2`, `norm`) or, for FaceID-Plus, its
  `ProjPlusModel` (the same MLP plus `perceiver_resampler.*` over CLIP image hidden states);
- `ip_adapter`: `torch.nn.ModuleList(unet.attn_processors.values()).state_dict()` of the official
  `LoRAAttnProcessor` / `LoRAIPAttnProcessor`: a LoRA (`{k}.to_{q,k,v,out}_lora.{down,up}.weight`) on
  every attention processor k, plus `{k}.to_k_ip.weight` / `{k}.to_v_ip.weight` on the odd k (the
  cross-attentions). FaceID-Portrait (`ip-adapter-faceid-portrait[-v11]_sd15.bin`,
  `ip-adapter-faceid-portrait_sdxl.bin`, the official `IPAdapterFaceID(..., num_tokens=16, n_cond=N)`
  of `ip_adapter_faceid_separate.py`) has only the `to_k_ip` / `to_v_ip` keys (plain `IPAttnProcessor`,
  no LoRA) and a 16-token projection.

Everything here is pure: `expected_layout` says which keys and shapes a UNet needs (from the
modules' own sizes, so it works on the meta device), `convert_faceid_checkpoint` checks a state
dict against it and renames every key through one explicit map, and `extract_faceid_state_dict` inverts the
map (for saving). The spec is `config.FaceIDSpec`; the projection module `model.build_image_projection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Union

import torch

from idgen.checkpoint import check_state_dict, split_prefixed
from idgen.errors import CheckpointError

from idgen.adapters.faceid.config import (
    DEFAULT_CLIP_DIM, DEFAULT_LORA_RANK, DEFAULT_NUM_TOKENS, ID_EMBED_DIM, ID_MLP_MULT, LORA_TARGETS, RESAMPLER_DEPTH,
    RESAMPLER_DIM_HEAD, RESAMPLER_FF_MULT, VARIANTS, FaceIDSpec,
)

# --------------------------------------------------------------------------------------------
# Processor order and expected layout
# --------------------------------------------------------------------------------------------


def processor_names(unet) -> list[str]:
    """Attention-processor names in the official index order.

    The official loader numbers processors by their position in `unet.attn_processors` (a module
    walk: down blocks, up blocks, mid block; `attn1` then `attn2` inside each transformer block), so
    key `"{k}.to_q_lora.down.weight"` belongs to the k-th name here. Checked: even k are
    self-attentions, odd k cross-attentions, as the official `ip_adapter` keys assume. Processors
    inside `unet.encoder_hid_proj` (the Plus resampler's attentions, once installed) are not UNet
    attention layers and are left out.
    """
    names = [n for n in unet.attn_processors if not n.startswith("encoder_hid_proj.")]
    for k, name in enumerate(names):
        expected = "attn1.processor" if k % 2 == 0 else "attn2.processor"
        if not name.endswith(expected):
            raise CheckpointError(
                f"this UNet's attention processor {k} is {name!r}, not an {expected.split('.')[0]}: "
                "IP-Adapter-FaceID needs the SD1.5/SDXL layout of alternating self/cross attention."
            )
    return names


def _attention(unet, processor_name: str):
    return unet.get_submodule(processor_name[: -len(".processor")])


def _linear_shape(linear) -> tuple[int, int]:
    # peft-wrapped layers keep `in_features`/`out_features`, so user LoRAs loaded earlier are fine.
    return int(linear.out_features), int(linear.in_features)


def image_proj_layout(spec: FaceIDSpec) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the official `image_proj` sub-dict, in file order."""
    d, t, h = spec.cross_attention_dim, spec.num_tokens, ID_EMBED_DIM * ID_MLP_MULT
    out = {
        "proj.0.weight": (h, ID_EMBED_DIM),
        "proj.0.bias": (h,),
        "proj.2.weight": (d * t, h),
        "proj.2.bias": (d * t,),
        "norm.weight": (d,),
        "norm.bias": (d,),
    }
    if spec.is_plus:
        inner = spec.resampler_heads * RESAMPLER_DIM_HEAD
        ff = d * RESAMPLER_FF_MULT
        p = "perceiver_resampler."
        out.update(
            {
                p + "proj_in.weight": (d, spec.clip_dim),
                p + "proj_in.bias": (d,),
                p + "proj_out.weight": (d, d),
                p + "proj_out.bias": (d,),
                p + "norm_out.weight": (d,),
                p + "norm_out.bias": (d,),
            }
        )
        for i in range(RESAMPLER_DEPTH):
            q = f"{p}layers.{i}."
            out.update(
                {
                    q + "0.norm1.weight": (d,),
                    q + "0.norm1.bias": (d,),
                    q + "0.norm2.weight": (d,),
                    q + "0.norm2.bias": (d,),
                    q + "0.to_q.weight": (inner, d),
                    q + "0.to_kv.weight": (2 * inner, d),
                    q + "0.to_out.weight": (d, inner),
                    q + "1.0.weight": (d,),
                    q + "1.0.bias": (d,),
                    q + "1.1.weight": (ff, d),
                    q + "1.3.weight": (d, ff),
                }
            )
    return out


def ip_adapter_layout(unet, spec: FaceIDSpec) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the official `ip_adapter` sub-dict for `unet`, in file order."""
    r = spec.lora_rank
    out: dict[str, tuple[int, ...]] = {}
    for k, name in enumerate(processor_names(unet)):
        attn = _attention(unet, name)
        for official, module_path in LORA_TARGETS if spec.has_lora else ():
            o, i = _linear_shape(attn.get_submodule(module_path))
            out[f"{k}.{official}_lora.down.weight"] = (r, i)
            out[f"{k}.{official}_lora.up.weight"] = (o, r)
        if k % 2 == 1:
            o, i = _linear_shape(attn.to_k)
            out[f"{k}.to_k_ip.weight"] = (o, i)
            out[f"{k}.to_v_ip.weight"] = (o, i)
    return out


def expected_layout(unet, spec: FaceIDSpec) -> dict[str, dict[str, tuple[int, ...]]]:
    """`{"image_proj": {key: shape}, "ip_adapter": {key: shape}}` that `unet` needs for `spec`."""
    return {"image_proj": image_proj_layout(spec), "ip_adapter": ip_adapter_layout(unet, spec)}


# --------------------------------------------------------------------------------------------
# Variant detection
# --------------------------------------------------------------------------------------------


def _detect_family(image_proj: Mapping[str, object]) -> str:
    """"faceid" or "faceid-plus" from the projection's keys; other IP-Adapter kinds are refused.

    Any `perceiver_resampler.*` key makes a Plus file, and `proj.0.weight` a plain one, so that a
    missing key of either is named by the key check, not taken for another kind of file.
    """
    if any(key.startswith("perceiver_resampler.") for key in image_proj):
        return "faceid-plus"
    if "proj.weight" in image_proj or "latents" in image_proj or "proj.3.weight" in image_proj:
        raise CheckpointError(
            "this is an image IP-Adapter checkpoint (plain/Plus/Full: CLIP-image projection keys "
            "such as 'proj.weight' or 'latents'), not IP-Adapter-FaceID; load it with diffusers' "
            "`pipe.load_ip_adapter(...)` instead."
        )
    if "proj.0.weight" in image_proj:
        return "faceid"
    first = next(iter(image_proj), None)
    raise CheckpointError(
        f"image_proj: missing key 'proj.0.weight' (first key present: {first!r}); this is not an "
        "IP-Adapter-FaceID checkpoint."
    )


def resolve_variant(image_proj: Mapping[str, object], variant: str, has_lora: bool = True) -> str:
    """Check the requested `variant` against the file; "auto" picks FaceID, Plus v2 or (a plain
    projection without LoRA keys in `ip_adapter`) FaceID-Portrait."""
    if variant not in VARIANTS + ("auto",):
        raise ValueError(f"variant must be one of {VARIANTS + ('auto',)}, got {variant!r}.")
    family = _detect_family(image_proj)
    if family == "faceid" and not has_lora:
        family = "faceid-portrait"
    if family == "faceid-plus" and not has_lora:
        raise CheckpointError(
            "ip_adapter: no '*_lora.*' keys (expected '0.to_q_lora.down.weight' first); every FaceID-Plus file "
            "has the FaceID LoRA: the file is truncated or of another kind."
        )
    if variant == "auto":
        # Plus v1 and v2 files have identical layouts; v2 (shortcut) is the one published for use.
        return "faceid-plusv2" if family == "faceid-plus" else family
    if family == "faceid-plus" and variant in ("faceid", "faceid-portrait"):
        raise CheckpointError(
            f"variant={variant!r} was asked for, but this checkpoint is IP-Adapter-FaceID-Plus (its "
            "image_proj has 'perceiver_resampler.*' keys and needs a CLIP image encoder): load it "
            "with variant='faceid-plusv2' (or 'faceid-plus' for a v1 file, or 'auto')."
        )
    if family == "faceid-portrait" and variant != family:
        raise CheckpointError(
            f"variant={variant!r} was asked for, but this checkpoint is IP-Adapter-FaceID-Portrait (a plain "
            "projection and no '*_lora.*' keys): load it with variant='faceid-portrait' or 'auto'."
        )
    if family == "faceid" and variant != "faceid":
        raise CheckpointError(
            f"variant={variant!r} was asked for, but this checkpoint is plain IP-Adapter-FaceID (its "
            "image_proj has no 'perceiver_resampler.*' keys, its ip_adapter has the LoRA): load it with "
            "variant='faceid' or 'auto'."
        )
    return variant


def _dim(sd: Mapping[str, object], key: str, axis: int) -> Optional[int]:
    v = sd.get(key)
    if isinstance(v, torch.Tensor) and v.ndim > axis:
        return int(v.shape[axis])
    return None


def infer_spec(
    state_dict: Mapping[str, Mapping[str, object]],
    unet,
    variant: str = "auto",
    *,
    clip_dim: Optional[int] = None,
) -> FaceIDSpec:
    """The `FaceIDSpec` of an official state dict for `unet`.

    What the official constructors take as arguments (token count, LoRA rank, CLIP width) is read
    from the file; the UNet fixes the token width. `convert_faceid_checkpoint` then checks every key.
    """
    image_proj, ip_adapter = state_dict["image_proj"], state_dict["ip_adapter"]
    variant = resolve_variant(image_proj, variant, has_lora=any("_lora." in k for k in ip_adapter))
    d = int(unet.config.cross_attention_dim)
    tokens = DEFAULT_NUM_TOKENS
    out = _dim(image_proj, "proj.2.weight", 0)
    if out is not None and out % d == 0 and out // d > 0:
        tokens = out // d
    if variant == "faceid-portrait":
        rank = 0
    else:
        rank = _dim(ip_adapter, "0.to_q_lora.down.weight", 0) or DEFAULT_LORA_RANK
    if variant in ("faceid-plus", "faceid-plusv2"):
        clip_dim = clip_dim or _dim(image_proj, "perceiver_resampler.proj_in.weight", 1) or DEFAULT_CLIP_DIM
        if d % RESAMPLER_DIM_HEAD:
            raise CheckpointError(
                f"FaceID-Plus needs a cross-attention width divisible by {RESAMPLER_DIM_HEAD} (its "
                f"resampler has width/64 heads); this UNet has {d}."
            )
    else:
        clip_dim = None
    return FaceIDSpec(variant, d, num_tokens=tokens, lora_rank=rank, clip_dim=clip_dim)


# --------------------------------------------------------------------------------------------
# Key maps: official -> diffusers
# --------------------------------------------------------------------------------------------

# A value is the diffusers key, or a pair of keys that split the tensor in two along dim 0
# (the resampler's fused `to_kv`).
KeyTarget = Union[str, tuple[str, str]]


def image_proj_key_map(spec: FaceIDSpec) -> dict[str, KeyTarget]:
    """Official `image_proj` key -> key of `build_image_projection(spec)`'s state dict."""
    if not spec.is_plus:
        # diffusers' IPAdapterFaceIDImageProjection: ff = FeedForward(GELU(proj), Dropout, Linear)
        return {
            "proj.0.weight": "ff.net.0.proj.weight",
            "proj.0.bias": "ff.net.0.proj.bias",
            "proj.2.weight": "ff.net.2.weight",
            "proj.2.bias": "ff.net.2.bias",
            "norm.weight": "norm.weight",
            "norm.bias": "norm.bias",
        }
    # diffusers' IPAdapterFaceIDPlusImageProjection (resampler flattened into it)
    out: dict[str, KeyTarget] = {
        "proj.0.weight": "proj.net.0.proj.weight",
        "proj.0.bias": "proj.net.0.proj.bias",
        "proj.2.weight": "proj.net.2.weight",
        "proj.2.bias": "proj.net.2.bias",
        "norm.weight": "norm.weight",
        "norm.bias": "norm.bias",
    }
    p = "perceiver_resampler."
    for name in ("proj_in", "proj_out", "norm_out"):
        out[f"{p}{name}.weight"] = f"{name}.weight"
        out[f"{p}{name}.bias"] = f"{name}.bias"
    for i in range(RESAMPLER_DEPTH):
        src, dst = f"{p}layers.{i}.", f"layers.{i}."
        out.update(
            {
                src + "0.norm1.weight": dst + "ln0.weight",  # applied to the CLIP features
                src + "0.norm1.bias": dst + "ln0.bias",
                src + "0.norm2.weight": dst + "ln1.weight",  # applied to the latents
                src + "0.norm2.bias": dst + "ln1.bias",
                src + "0.to_q.weight": dst + "attn.to_q.weight",
                src + "0.to_kv.weight": (dst + "attn.to_k.weight", dst + "attn.to_v.weight"),
                src + "0.to_out.weight": dst + "attn.to_out.0.weight",
                src + "1.0.weight": dst + "ff.0.weight",  # LayerNorm
                src + "1.0.bias": dst + "ff.0.bias",
                src + "1.1.weight": dst + "ff.1.net.0.proj.weight",  # Linear (+GELU)
                src + "1.3.weight": dst + "ff.1.net.2.weight",  # Linear
            }
        )
    return out


def lora_key_map(unet) -> dict[str, str]:
    """Official LoRA key -> peft key (`{module}.lora_A.weight`; `down` is A, `up` is B).

    The official `LoRAAttnProcessor` adds `lora_scale * up(down(x))` to `to_q/k/v/out[0]` with
    `lora_scale=1` and no alpha: a peft LoRA with `lora_alpha == r` computes exactly that.
    """
    out = {}
    for k, name in enumerate(processor_names(unet)):
        module = name[: -len(".processor")]
        for official, module_path in LORA_TARGETS:
            out[f"{k}.{official}_lora.down.weight"] = f"{module}.{module_path}.lora_A.weight"
            out[f"{k}.{official}_lora.up.weight"] = f"{module}.{module_path}.lora_B.weight"
    return out


def ip_key_map(unet) -> dict[str, tuple[str, str]]:
    """Official `{k}.to_{k,v}_ip.weight` -> (processor name, key in `IPAdapterAttnProcessor2_0`)."""
    out = {}
    for k, name in enumerate(processor_names(unet)):
        if k % 2 == 1:
            out[f"{k}.to_k_ip.weight"] = (name, "to_k_ip.0.weight")
            out[f"{k}.to_v_ip.weight"] = (name, "to_v_ip.0.weight")
    return out


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


@dataclass
class FaceIDWeights:
    """A checked official checkpoint, renamed for diffusers' modules."""

    spec: FaceIDSpec
    image_proj: dict[str, torch.Tensor]  # keys of build_image_projection(spec)
    processors: dict[str, dict[str, torch.Tensor]]  # processor name -> IPAdapterAttnProcessor2_0 keys
    lora: dict[str, torch.Tensor]  # peft keys, relative to the UNet


#: The two sub-dicts of an official file.
OFFICIAL_PARTS = ("image_proj", "ip_adapter")


def split_official(state_dict: Mapping[str, object]) -> dict[str, dict]:
    """`{"image_proj": {...}, "ip_adapter": {...}}` from a nested dict or a flat safetensors-style
    dict (`"image_proj.proj.0.weight"`)."""
    out = split_prefixed(state_dict, OFFICIAL_PARTS, what="IP-Adapter-FaceID")
    for k in OFFICIAL_PARTS:
        if not out[k]:
            present = next(iter(state_dict), None)
            raise CheckpointError(
                f"missing key {k!r}: an IP-Adapter-FaceID file holds 'image_proj' and 'ip_adapter' "
                f"(nested, or as '{k}.*' prefixes); first key present: {present!r}."
            )
    return out


def convert_faceid_checkpoint(
    state_dict: Mapping[str, object],
    unet,
    variant: str = "auto",
    *,
    clip_dim: Optional[int] = None,
) -> FaceIDWeights:
    """Check an official FaceID state dict against `unet` and rename it for diffusers.

    Raises:
        CheckpointError: wrong kind of file, wrong variant, or the first missing / mis-shaped /
            unexpected key (named, in file order).
    """
    sd = split_official(state_dict)
    spec = infer_spec(sd, unet, variant, clip_dim=clip_dim)
    layout = expected_layout(unet, spec)
    what = f"IP-Adapter-FaceID ({spec.variant}, cross_attention_dim {spec.cross_attention_dim})"
    check_state_dict(sd["image_proj"], layout["image_proj"], what=f"{what} image_proj")
    check_state_dict(sd["ip_adapter"], layout["ip_adapter"], what=f"{what} ip_adapter")

    image_proj: dict[str, torch.Tensor] = {}
    for src, dst in image_proj_key_map(spec).items():
        value = sd["image_proj"][src]
        if isinstance(dst, tuple):
            first, second = value.chunk(2, dim=0)
            image_proj[dst[0]], image_proj[dst[1]] = first, second
        else:
            image_proj[dst] = value
    processors: dict[str, dict[str, torch.Tensor]] = {}
    for src, (name, dst) in ip_key_map(unet).items():
        processors.setdefault(name, {})[dst] = sd["ip_adapter"][src]
    lora = {dst: sd["ip_adapter"][src] for src, dst in lora_key_map(unet).items()} if spec.has_lora else {}
    return FaceIDWeights(spec, image_proj, processors, lora)


def extract_faceid_state_dict(
    unet, spec: FaceIDSpec, image_projection: torch.nn.Module, adapter_name: str
) -> dict[str, dict[str, torch.Tensor]]:
    """The official layout back from live modules (inverse of `convert_faceid_checkpoint`)."""
    proj_sd = image_projection.state_dict()
    image_proj = {}
    for src, dst in image_proj_key_map(spec).items():
        if isinstance(dst, tuple):
            image_proj[src] = torch.cat([proj_sd[dst[0]], proj_sd[dst[1]]], dim=0)
        else:
            image_proj[src] = proj_sd[dst]
    processors = unet.attn_processors
    lora_sources = {}
    for src, dst in lora_key_map(unet).items() if spec.has_lora else ():
        module_path, ab = dst.rsplit(".lora_", 1)
        layer = unet.get_submodule(module_path)
        table = layer.lora_A if ab.startswith("A") else layer.lora_B
        lora_sources[src] = table[adapter_name].weight
    ip_sources = {src: processors[name].state_dict()[dst] for src, (name, dst) in ip_key_map(unet).items()}
    # file order: the LoRA of processor k, then its to_k_ip/to_v_ip
    ip_adapter = {}
    for key in ip_adapter_layout(unet, spec):
        ip_adapter[key] = (lora_sources.get(key) if key in lora_sources else ip_sources[key]).detach()
    return {"image_proj": {k: v.detach() for k, v in image_proj.items()}, "ip_adapter": ip_adapter}
