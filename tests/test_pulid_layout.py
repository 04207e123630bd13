"""PuLID's official file layouts at real size (tests/data/layouts/, written from the official modules
by bench/parity/pulid.py): they load unchanged, and a missing or misshaped key is refused by name.

The state dicts are meta tensors (nothing allocated: the real adapters hold ~0.5 G parameters)."""

import json
from pathlib import Path

import pytest
import torch

from idgen.adapters.pulid import load_eva_clip, load_pulid_adapter
from idgen.adapters.pulid.config import EVA02_L_336
from idgen.errors import CheckpointError
from idgen.testing.released import SDXL_UNET, meta_unet

LAYOUTS = Path(__file__).parent / "data" / "layouts"


def layout(name):
    return {k: tuple(v) for k, v in json.loads((LAYOUTS / f"{name}.json").read_text())["keys"].items()}


def meta_state_dict(keys):
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


@pytest.fixture(scope="module")
def unet():
    return meta_unet(SDXL_UNET)


@pytest.mark.parametrize("name,version", [("pulid_v1", "v1"), ("pulid_v1.1", "v1.1")])
def test_official_pulid_layout_loads_unchanged(unet, name, version):
    keys = layout(name)
    adapter = load_pulid_adapter(meta_state_dict(keys), unet)  # version detected, official sizes
    assert adapter.version == version
    assert {k: tuple(v.shape) for k, v in adapter.state_dict().items()} == keys
    assert sorted(adapter.layer_names) == list(range(1, 140, 2))


@pytest.mark.parametrize("name", ["pulid_v1", "pulid_v1.1"])
def test_pulid_missing_or_misshaped_key_is_named(unet, name):
    keys = layout(name)
    victim = sorted(keys)[len(keys) // 2]
    missing = meta_state_dict({k: s for k, s in keys.items() if k != victim})
    with pytest.raises(CheckpointError, match=f"missing key '{victim}'"):
        load_pulid_adapter(missing, unet)
    wrong = meta_state_dict({**keys, victim: tuple(d + 1 for d in keys[victim])})
    with pytest.raises(CheckpointError, match=f"'{victim}' has shape"):
        load_pulid_adapter(wrong, unet)
    extra = meta_state_dict({**keys, "id_adapter.extra.weight": (3,)})
    with pytest.raises(CheckpointError, match="id_adapter.extra.weight"):
        load_pulid_adapter(extra, unet)


def test_official_eva_clip_layout_loads_unchanged():
    keys = layout("eva02_clip_l_336")
    full_clip = {**meta_state_dict(keys), "text.token_embedding.weight": torch.empty(49408, 768, device="meta"),
                 "logit_scale": torch.empty((), device="meta")}
    tower = load_eva_clip(full_clip)
    ours = {f"visual.{k}": tuple(v.shape) for k, v in tower.state_dict().items()}
    rope = {k for k in keys if k.endswith(("freqs_cos", "freqs_sin"))}  # stored by the official tower, computed here
    assert len(rope) == 2 * 25
    assert ours == {k: s for k, s in keys.items() if k not in rope}
    assert tower.config.image_size == EVA02_L_336["image_size"]


def test_eva_clip_missing_key_is_named():
    keys = layout("eva02_clip_l_336")
    del keys["visual.blocks.7.mlp.w3.weight"]
    with pytest.raises(CheckpointError, match="blocks.7.mlp.w3.weight"):
        load_eva_clip(meta_state_dict(keys))
