"""Loading PVA weights: idgen's `pva_adapter/` folder or the official `FPIP.bin` / fine-tune `.bin`.

Official layout (`PVADiffusion.simple_state_dict`): `{"transform_network": {"0.weight", "0.bias",
"1.layers.{i}.self_attn.in_proj_weight", ..., "1.norm.weight"}, "unet": {"<attn2 path>.to_visual_
{q,k,v}.weight"}}` (other entries such as `modifier_vec` are ignored), nested or flattened with those
two prefixes. The encoder hyperparameters are read off the shapes (heads are not stored: official 8).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from idgen.checkpoint import check_state_dict, resolve_state_dict, split_prefixed
from idgen.errors import CheckpointError, IdgenError

from idgen.adapters.pva.attention import PVAAttnProcessor
from idgen.adapters.pva.model import PVAAdapter, match_unet, pva_layers

PathOrStateDict = Union[str, os.PathLike, Mapping[str, object]]
OFFICIAL_PARTS = ("transform_network", "unet")
VISUAL = ("to_visual_q", "to_visual_k", "to_visual_v")


def _encoder_config(encoder: Mapping[str, torch.Tensor], what: str) -> dict:
    """PVAIdentityEncoder hyperparameters from official `transform_network` shapes."""
    if "0.weight" not in encoder:
        raise CheckpointError(f"{what}: `transform_network` has no `0.weight` (its input Linear).")
    width, embedding_dim = encoder["0.weight"].shape
    layers = {int(k.split(".")[2]) for k in encoder if k.startswith("1.layers.")}
    ff = encoder.get("1.layers.0.linear1.weight")
    return dict(embedding_dim=int(embedding_dim), cross_attention_dim=int(width), num_layers=len(layers),
                feedforward_dim=int(ff.shape[0]) if ff is not None else 2048, num_tokens=0)


def convert_official_state_dict(state_dict: Mapping[str, object], unet, *, num_heads: int = 8,
                                what: str = "PVA checkpoint") -> PVAAdapter:
    """An adapter for `unet` holding the official checkpoint's weights (shapes checked)."""
    parts = split_prefixed(state_dict, OFFICIAL_PARTS)
    encoder, visual = parts["transform_network"], parts["unet"]
    if not encoder or not visual:
        raise CheckpointError(
            f"{what}: expected PVA's `transform_network` and `unet` (to_visual_q/k/v) entries; found keys "
            f"{sorted(state_dict)[:4]}. Is this an official PVA file (FPIP.bin)?"
        )
    adapter = PVAAdapter.for_unet(unet, init_from_text=False, num_heads=num_heads, **_encoder_config(encoder, what))
    ours = {}
    for key, value in encoder.items():
        head, _, rest = key.partition(".")
        ours[f"identity_encoder.{ {'0': 'proj', '1': 'transformer'}.get(head, head) }.{rest}"] = value
    for i, layer in enumerate(adapter.config.layer_names):
        for name in VISUAL:
            for suffix in ("weight", "bias"):
                key = f"{layer}.{name}.{suffix}"
                if key in visual:
                    ours[f"visual.{i}.{name}.{suffix}"] = visual[key]
    expected = {k: tuple(v.shape) for k, v in adapter.state_dict().items()}
    check_state_dict(ours, expected, what=what)
    extra = sorted(set(visual) - {f"{layer}.{n}.{s}" for layer in adapter.config.layer_names for n in VISUAL
                                  for s in ("weight", "bias")})
    if extra:
        raise CheckpointError(f"{what}: unexpected UNet key {extra[0]!r}; the file was made for another UNet.")
    adapter.load_state_dict({k: v.to(device=adapter.device, dtype=adapter.dtype) for k, v in ours.items()})
    return adapter


def load_pva_adapter(source: PathOrStateDict, unet, *, num_heads: int = 8) -> PVAAdapter:
    """A `PVAAdapter` for `unet` from a saved `pva_adapter/` folder, an official `.bin`/`.safetensors`
    file, or the dict such a file holds.

    Raises:
        ModelNotFoundError: the path does not exist.
        CheckpointError: unreadable file, or keys/shapes that do not fit `unet`.
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        if not (Path(source) / PVAAdapter.config_name).is_file():
            raise CheckpointError(f"{str(source)!r} is a folder without {PVAAdapter.config_name}: not a saved pva_adapter/.")
        adapter = PVAAdapter.from_pretrained(str(source))
        adapter.check_unet(unet, what=f"PVA adapter {str(source)!r}")
    else:
        what = f"PVA checkpoint {str(source)!r}" if not isinstance(source, Mapping) else "PVA state dict"
        adapter = convert_official_state_dict(resolve_state_dict(source), unet, num_heads=num_heads, what=what)
    return match_unet(adapter, unet).eval()


def official_state_dict(adapter: PVAAdapter) -> dict[str, dict[str, torch.Tensor]]:
    """The adapter in the official nested layout (`transform_network` + `unet`), for tools that expect
    it. Only adapters with `num_tokens=0` have an exact official counterpart."""
    if adapter.config.num_tokens:
        raise IdgenError("only PVA adapters with num_tokens=0 (one token per reference) have the official layout.")
    state = adapter.state_dict()
    encoder = {}
    for key, value in state.items():
        if key.startswith("identity_encoder."):
            rest = key[len("identity_encoder."):]
            head, _, tail = rest.partition(".")
            encoder[f"{ {'proj': '0', 'transformer': '1'}[head] }.{tail}"] = value
    unet = {}
    for i, layer in enumerate(adapter.config.layer_names):
        for key, value in adapter.visual[i].state_dict().items():
            unet[f"{layer}.{key}"] = value
    return {"transform_network": encoder, "unet": unet}


class PVALoaderMixin:
    """Pipeline mixin: the `pva_adapter` component and PVA processors in the UNet."""

    pva_adapter: Optional[PVAAdapter]

    def load_pva(self, source: PathOrStateDict, *, num_heads: int = 8) -> None:
        """Load PVA weights (see `load_pva_adapter`) and install the processors."""
        self.register_modules(pva_adapter=load_pva_adapter(source, self.unet, num_heads=num_heads))
        self._install_pva_processors()

    def init_pva(self, **encoder_config) -> PVAAdapter:
        """A fresh adapter for this UNet (visual projections copied from the text ones; random
        encoder), installed; the starting point of training."""
        self.register_modules(pva_adapter=PVAAdapter.for_unet(self.unet, **encoder_config))
        self._install_pva_processors()
        return self.pva_adapter

    def _install_pva_processors(self) -> None:
        adapter = self.pva_adapter
        adapter.check_unet(self.unet)
        index = {name: i for i, name in enumerate(adapter.config.layer_names)}
        processors = {}
        for name, proc in self.unet.attn_processors.items():
            layer = name[: -len(".processor")]
            processors[name] = PVAAttnProcessor(index[layer]) if layer in index else proc
        self.unet.set_attn_processor(processors)

    def unload_pva(self) -> None:
        """Remove the PVA branch: plain SDPA processors and no `pva_adapter`."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.unet.set_attn_processor({
            name: AttnProcessor2_0() if isinstance(p, PVAAttnProcessor) else p
            for name, p in self.unet.attn_processors.items()
        })
        self.register_modules(pva_adapter=None)


__all__ = ["PVALoaderMixin", "convert_official_state_dict", "load_pva_adapter", "official_state_dict", "pva_layers"]
