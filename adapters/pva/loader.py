"""Loading PVA weights: idgen's `pva_adapter/` folder or the official `FPIP.bin` / fine-tune `.bin`.

Official layout (`PVADiffusion.simple_state_dict`): `{"transform_network": {"0.weight", "0.bias",
"1.layers.{i}.self_attn.in_proj_weight", ..., "1.norm.weight"}, "unet": {"<attn2 path>.to_visual_
{q,k,v}.weight"}}` (other entries such as `modifier_vec` are ignored), nested or flattened with those
two prefixes. The encoder hyperparameters are read off the shapes (heads are not stored: official 8).

Layers, as diffusers' loaders: `official_key_map` / `convert_official_state_dict` (file -> the
`PVAAdapter` state dict, checked key by key) and its inverse `official_state_dict`;
`load_pva_adapter` (file or folder -> module); `PVALoaderMixin` for pipelines (`load_pva`,
`set_identity_scale`, `unload_pva`, `init_pva` for training).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Mapping, Optional

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from idgen.checkpoint import PathOrStateDict, check_state_dict, resolve_state_dict, split_prefixed
from idgen.errors import CheckpointError, IdgenError

from idgen.adapters.pva.attention import PVAAttnProcessor
from idgen.adapters.pva.config import OFFICIAL_NUM_HEADS, check_identity_scale
from idgen.adapters.pva.model import PVAAdapter, match_unet

OFFICIAL_PARTS = ("transform_network", "unet")
#: Official `transform_network.{0,1}` (the input Linear, the TransformerEncoder) -> our encoder's names.
ENCODER_PARTS = {"0": "proj", "1": "transformer"}


def official_key_map(adapter: PVAAdapter) -> dict[str, str]:
    """`{official key: adapter state-dict key}`, official keys flat: `transform_network.<key>` and
    `unet.<attn2 path>.to_visual_{q,k,v}.<weight|bias>`. The learned queries of `num_tokens > 0`
    have no official counterpart and are not in the map."""
    encoder_parts = {ours: official for official, ours in ENCODER_PARTS.items()}
    mapping = {}
    for key in adapter.state_dict():
        group, _, rest = key.partition(".")
        head, _, tail = rest.partition(".")
        if group == "identity_encoder" and head in encoder_parts:
            mapping[f"transform_network.{encoder_parts[head]}.{tail}"] = key
        elif group == "visual":
            mapping[f"unet.{adapter.config.layer_names[int(head)]}.{tail}"] = key
    return mapping


def official_state_dict(adapter: PVAAdapter) -> dict[str, dict[str, torch.Tensor]]:
    """The inverse of `convert_official_state_dict`: the adapter in the official nested layout
    (`transform_network` + `unet`). Only adapters with `num_tokens=0` have one."""
    if adapter.config.num_tokens:
        raise IdgenError("only PVA adapters with num_tokens=0 (one token per reference) have the official layout.")
    own = adapter.state_dict()
    out: dict[str, dict[str, torch.Tensor]] = {part: {} for part in OFFICIAL_PARTS}
    for official, ours in official_key_map(adapter).items():
        part, _, key = official.partition(".")
        out[part][key] = own[ours]
    return out


def _official_parts(state_dict: Mapping[str, object], what: str) -> dict[str, dict]:
    parts = split_prefixed(state_dict, OFFICIAL_PARTS, what=what)
    if not all(parts.values()):
        raise CheckpointError(
            f"{what}: expected PVA's `transform_network` and `unet` (to_visual_q/k/v) entries; found keys "
            f"{list(state_dict)[:4]}. Is this an official PVA file (FPIP.bin)?"
        )
    return parts


def _weight_shape(encoder: Mapping[str, object], key: str, what: str) -> tuple[int, int]:
    """`(out, in)` of the Linear weight `transform_network.<key>`, or a CheckpointError naming it."""
    value = encoder.get(key)
    if not isinstance(value, torch.Tensor) or value.ndim != 2 or 0 in value.shape:
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CheckpointError(f"{what}: key 'transform_network.{key}' should be a Linear weight [out, in], "
                              f"found {found}; this is not an official PVA file.")
    return int(value.shape[0]), int(value.shape[1])


def _layer_indices(encoder: Mapping[str, object], what: str) -> set[int]:
    """The transformer layers `i` of the `transform_network.1.layers.<i>.*` keys."""
    indices = set()
    for key in encoder:
        if key.startswith("1.layers."):
            index = key.split(".")[2]
            if not index.isdecimal():
                raise CheckpointError(f"{what}: unexpected key 'transform_network.{key}' (layer index {index!r} "
                                      "is not a number).")
            indices.add(int(index))
    if not indices:
        raise CheckpointError(f"{what}: missing key 'transform_network.1.layers.0.self_attn.in_proj_weight' "
                              "(no transformer layer); the file is truncated or not a PVA checkpoint.")
    return indices


def _encoder_config(encoder: Mapping[str, object], what: str, num_heads: int) -> dict:
    """`PVAConfig` settings read off official `transform_network` shapes (one token per reference).

    Raises:
        CheckpointError: a shape the settings are read from is missing or impossible (named).
        IdgenError: `num_heads` is not a positive integer.
    """
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise IdgenError(f"num_heads must be a positive integer, got {num_heads!r}.")
    width, embedding_dim = _weight_shape(encoder, "0.weight", what)
    if width % num_heads:
        raise CheckpointError(f"{what}: key 'transform_network.0.weight' gives a width of {width}, not divisible "
                              f"by num_heads={num_heads}; pass the num_heads the file was trained with.")
    has_ff = "1.layers.0.linear1.weight" in encoder
    feedforward = _weight_shape(encoder, "1.layers.0.linear1.weight", what)[0] if has_ff else 2048
    return dict(embedding_dim=embedding_dim, cross_attention_dim=width, num_layers=len(_layer_indices(encoder, what)),
                feedforward_dim=feedforward, num_tokens=0, num_heads=num_heads)


def convert_official_state_dict(state_dict: Mapping[str, object], adapter: PVAAdapter, *,
                                what: str = "PVA checkpoint") -> dict[str, torch.Tensor]:
    """Official checkpoint dict -> `adapter` state dict, checking every key and shape.

    Raises:
        CheckpointError: no PVA parts, a UNet layer the adapter does not have (another UNet), or
            the first missing / misshaped / unexpected key, named as in the file.
    """
    parts = _official_parts(state_dict, what)
    flat = {f"{part}.{k}": v for part in OFFICIAL_PARTS for k, v in parts[part].items()}
    mapping = official_key_map(adapter)
    stray = sorted(k for k in flat if k.startswith("unet.") and k not in mapping)
    if stray:
        raise CheckpointError(f"{what}: unexpected UNet key {stray[0][len('unet.'):]!r}; the file was made for "
                              "another UNet.")
    target = adapter.state_dict()
    check_state_dict(flat, {official: tuple(target[ours].shape) for official, ours in mapping.items()}, what=what)
    return {ours: flat[official] for official, ours in mapping.items()}


def load_pva_adapter(source: PathOrStateDict, unet, *, num_heads: int = OFFICIAL_NUM_HEADS) -> PVAAdapter:
    """A `PVAAdapter` for `unet` (on its device and dtype, eval mode) from a saved `pva_adapter/`
    folder, an official `.bin`/`.safetensors` file, or the dict such a file holds.

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
        state_dict = resolve_state_dict(source)
        encoder = _official_parts(state_dict, what)["transform_network"]
        adapter = PVAAdapter.for_unet(unet, init_from_text=False, **_encoder_config(encoder, what, num_heads))
        adapter.load_state_dict(convert_official_state_dict(state_dict, adapter, what=what))
    return match_unet(adapter, unet).eval()


class PVALoaderMixin:
    """Pipeline mixin: the `pva_adapter` component, PVA processors in the UNet, and the default
    identity scale (`identity_scale` in the pipeline config)."""

    pva_adapter: Optional[PVAAdapter]

    def _register_pva(self, pva_adapter: Optional[PVAAdapter], identity_scale: float) -> None:
        """The pipeline `__init__`'s part: the component, its processors, the default scale."""
        self.register_modules(pva_adapter=pva_adapter)
        self.set_identity_scale(identity_scale)
        if pva_adapter is not None:
            self._install_pva_processors()

    def load_pva(self, source: PathOrStateDict, *, num_heads: int = OFFICIAL_NUM_HEADS) -> None:
        """Load PVA weights (see `load_pva_adapter`) and install the processors."""
        self.register_modules(pva_adapter=load_pva_adapter(source, self.unet, num_heads=num_heads))
        self._install_pva_processors()

    def init_pva(self, **encoder_config) -> PVAAdapter:
        """A fresh adapter for this UNet (visual projections copied from the text ones; random
        encoder; `encoder_config`: `PVAConfig` settings), installed; the starting point of training."""
        self.register_modules(pva_adapter=PVAAdapter.for_unet(self.unet, **encoder_config))
        self._install_pva_processors()
        return self.pva_adapter

    def set_identity_scale(self, scale: float) -> None:
        """Set the default identity scale s >= 0 (1 = official; 0 = the base pipeline). Stored in
        the pipeline config, so it survives `save_pretrained` / `from_pretrained` / `from_pipe`."""
        self.register_to_config(identity_scale=check_identity_scale(scale))

    @property
    def default_identity_scale(self):
        """The identity scale of a call that gives none (`set_identity_scale`, kept in the config)."""
        return self.config.identity_scale

    def unload_pva(self) -> None:
        """Remove the PVA branch: plain SDPA processors and no `pva_adapter`."""
        self.unet.set_attn_processor({
            name: AttnProcessor2_0() if isinstance(p, PVAAttnProcessor) else p
            for name, p in self.unet.attn_processors.items()
        })
        self.register_modules(pva_adapter=None)

    def _require_pva(self) -> PVAAdapter:
        if getattr(self, "pva_adapter", None) is None:
            raise IdgenError("no PVA adapter is loaded: call `pipe.load_pva(path)` (or `init_pva()` to train one).")
        return self.pva_adapter

    @contextlib.contextmanager
    def pva_processors_installed(self) -> Iterator[None]:
        """The PVA processors on the adapter's layers for one call, whatever replaced them since
        loading (e.g. `enable_attention_slicing`); the UNet's processors are restored after."""
        saved = self.unet.attn_processors
        self._install_pva_processors()
        try:
            yield
        finally:
            self.unet.set_attn_processor(saved)

    def _install_pva_processors(self) -> None:
        adapter = self.pva_adapter
        adapter.check_unet(self.unet)
        index = {name: i for i, name in enumerate(adapter.config.layer_names)}
        processors = {}
        for name, proc in self.unet.attn_processors.items():
            layer = name[: -len(".processor")]
            processors[name] = PVAAttnProcessor(index[layer]) if layer in index else proc
        self.unet.set_attn_processor(processors)
