"""InstantID adapter pieces without a pipeline: official layout at full size (meta device), checkpoint
errors, the Resampler, the identity attention processor (scale, masks) and scale expansion."""

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from idgen.adapters.instantid import (
    IdentityAttentionInputs,
    InstantIDAdapter,
    InstantIDAttnProcessor,
    Resampler,
    ResamplerConfig,
    attn_processor_order,
    expand_identity_scale,
    identity_processors_installed,
    load_instantid_adapter,
    official_state_dict,
)
from idgen.errors import CheckpointError, IdgenError
from idgen.testing.released import SD15_UNET, SDXL_UNET, meta_unet



@pytest.fixture(scope="module")
def layout(layouts_dir):
    return json.loads((layouts_dir / "instantid.json").read_text())["instantid_ip-adapter.bin"]


def meta_state_dict(layout):
    """The official file's structure, every tensor on the meta device (nothing allocated)."""
    return {part: {k: torch.empty(shape, device="meta") for k, shape in layout[part].items()} for part in ("image_proj", "ip_adapter")}


def test_official_layout_loads_at_full_size_on_meta(layout):
    unet = meta_unet(SDXL_UNET)
    assert attn_processor_order(unet) == layout["processor_order"]
    adapter = load_instantid_adapter(meta_state_dict(layout), unet)  # official Resampler defaults
    assert adapter.device.type == "meta"
    ours = adapter.state_dict()
    expected = {f"{p}.{k}": tuple(s) for p in ("image_proj", "ip_adapter") for k, s in layout[p].items()}
    assert list(ours) == list(expected)
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected
    assert all(v.is_meta for v in ours.values())
    assert sorted(adapter.layer_names) == list(range(1, 140, 2))


def test_sd15_layout_has_odd_keys_1_to_31():
    unet = meta_unet(SD15_UNET)
    names = attn_processor_order(unet)
    assert len(names) == 32 and names == list(unet.attn_processors)
    with torch.device("meta"):
        adapter = InstantIDAdapter.for_unet(unet)
    assert sorted(adapter.layer_names) == list(range(1, 32, 2))
    assert adapter.config.output_dim == 768
    sd = {
        "image_proj": {k[len("image_proj."):]: v for k, v in adapter.state_dict().items() if k.startswith("image_proj.")},
        "ip_adapter": {k[len("ip_adapter."):]: v for k, v in adapter.state_dict().items() if k.startswith("ip_adapter.")},
    }
    assert set(sd["ip_adapter"]) == {f"{k}.to_{p}_ip.weight" for k in range(1, 32, 2) for p in "kv"}
    loaded = load_instantid_adapter(sd, unet)
    assert loaded.ip_adapter["1"].to_k_ip.weight.shape == (320, 768)


def test_sdxl_file_is_rejected_by_sd15_unet_naming_a_key(layout):
    with pytest.raises(CheckpointError, match=r"ip_adapter\.1\.to_k_ip\.weight|image_proj"):
        load_instantid_adapter(meta_state_dict(layout), meta_unet(SD15_UNET))


def _save(obj, path):
    torch.save(obj, path)
    return path


def small_official_file(tmp_path, unet, cfg):
    adapter = InstantIDAdapter.for_unet(unet, cfg)
    sd = adapter.state_dict()
    nested = {
        "image_proj": {k[11:]: v for k, v in sd.items() if k.startswith("image_proj.")},
        "ip_adapter": {k[11:]: v for k, v in sd.items() if k.startswith("ip_adapter.")},
    }
    return nested


@pytest.fixture(scope="module")
def parity_unet(parity_dir):
    return UNet2DConditionModel.from_pretrained(parity_dir / "instantid" / "unet")


@pytest.fixture(scope="module")
def parity_resampler(parity_dir):
    return json.loads((parity_dir / "instantid" / "case.json").read_text())["resampler"]


def test_parity_file_loads_and_missing_key_is_named(tmp_path, parity_dir, parity_unet, parity_resampler):
    path = parity_dir / "instantid" / "ip-adapter.bin"
    adapter = load_instantid_adapter(path, parity_unet, resampler_config=parity_resampler)
    raw = torch.load(path, weights_only=True)
    assert torch.equal(adapter.ip_adapter["15"].to_v_ip.weight, raw["ip_adapter"]["15.to_v_ip.weight"])
    assert torch.equal(adapter.image_proj.latents, raw["image_proj"]["latents"])

    # a file that lost its last layers: the first missing key is named
    del raw["ip_adapter"]["13.to_k_ip.weight"], raw["ip_adapter"]["15.to_v_ip.weight"]
    with pytest.raises(CheckpointError, match=r"missing key 'ip_adapter\.13\.to_k_ip\.weight'"):
        load_instantid_adapter(_save(raw, tmp_path / "partial.bin"), parity_unet, resampler_config=parity_resampler)


def test_wrong_shape_and_extra_keys_are_named(tmp_path, parity_dir, parity_unet, parity_resampler):
    raw = torch.load(parity_dir / "instantid" / "ip-adapter.bin", weights_only=True)
    bad = {"image_proj": dict(raw["image_proj"]), "ip_adapter": dict(raw["ip_adapter"])}
    bad["ip_adapter"]["5.to_v_ip.weight"] = torch.zeros(3, 64)
    with pytest.raises(CheckpointError, match=r"'ip_adapter\.5\.to_v_ip\.weight' has shape \(3, 64\)"):
        load_instantid_adapter(bad, parity_unet, resampler_config=parity_resampler)
    extra = {"image_proj": dict(raw["image_proj"]), "ip_adapter": {**raw["ip_adapter"], "17.to_k_ip.weight": torch.zeros(64, 64)}}
    with pytest.raises(CheckpointError, match=r"unexpected key 'ip_adapter\.17\.to_k_ip\.weight'"):
        load_instantid_adapter(extra, parity_unet, resampler_config=parity_resampler)
    with pytest.raises(CheckpointError, match="not an InstantID adapter"):
        load_instantid_adapter({"foo.weight": torch.zeros(1)}, parity_unet, resampler_config=parity_resampler)


def test_wrong_resampler_config_names_key_and_hints(parity_dir, parity_unet):
    # the official (large) defaults do not fit the small parity file
    with pytest.raises(CheckpointError, match=r"image_proj\.latents.*resampler_config"):
        load_instantid_adapter(parity_dir / "instantid" / "ip-adapter.bin", parity_unet)
    with pytest.raises(IdgenError, match="unknown keys"):
        load_instantid_adapter(parity_dir / "instantid" / "ip-adapter.bin", parity_unet, resampler_config={"width": 3})


def test_truncated_file_is_a_checkpoint_error(tmp_path, parity_dir, parity_unet, parity_resampler):
    data = (parity_dir / "instantid" / "ip-adapter.bin").read_bytes()
    path = tmp_path / "truncated.bin"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_instantid_adapter(path, parity_unet, resampler_config=parity_resampler)


def test_flat_safetensors_layout_loads(tmp_path, parity_dir, parity_unet, parity_resampler):
    from safetensors.torch import save_file

    raw = torch.load(parity_dir / "instantid" / "ip-adapter.bin", weights_only=True)
    flat = {f"{p}.{k}": v.contiguous() for p in raw for k, v in raw[p].items()}
    save_file(flat, tmp_path / "ip-adapter.safetensors")
    adapter = load_instantid_adapter(tmp_path / "ip-adapter.safetensors", parity_unet, resampler_config=parity_resampler)
    assert torch.equal(adapter.image_proj.proj_in.weight, raw["image_proj"]["proj_in.weight"])


def test_resampler_shapes_and_config_validation():
    cfg = ResamplerConfig(dim=32, depth=2, dim_head=8, heads=4, num_queries=16, embedding_dim=512, output_dim=48, ff_mult=2)
    r = Resampler(cfg)
    out = r(torch.randn(3, 1, 512))
    assert out.shape == (3, 16, 48)
    # several input embeddings per sample (the official multi-embedding call) still give 16 tokens
    assert r(torch.randn(1, 4, 512)).shape == (1, 16, 48)
    with pytest.raises(IdgenError, match="depth"):
        ResamplerConfig(depth=0)


# -- the identity attention processor ----------------------------------------------------------


def _attn_and_inputs(scale=0.7, mask=None):
    torch.manual_seed(0)
    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)
    hidden = torch.randn(2, 16, 8)  # a 4x4 attention map
    text = torch.randn(2, 5, 6)
    k_ip, v_ip = torch.nn.Linear(6, 8, bias=False), torch.nn.Linear(6, 8, bias=False)
    tokens = torch.randn(2, 3, 6)
    inputs = IdentityAttentionInputs(
        kv={1: [(k_ip(tokens), v_ip(tokens))]}, scales={1: [scale]}, masks=[mask], latent_size=(4, 4)
    )
    return attn, hidden, text, inputs


@torch.no_grad()
def test_processor_without_identity_is_plain_sdpa_and_scale_zero_is_exact():
    attn, hidden, text, inputs = _attn_and_inputs(scale=0.0)
    proc = InstantIDAttnProcessor(1)
    plain = AttnProcessor2_0()(attn, hidden, text)
    assert torch.equal(proc(attn, hidden, text), plain)
    assert torch.equal(proc(attn, hidden, text, ip_hidden_states=inputs), plain)
    attn, hidden, text, inputs = _attn_and_inputs(scale=0.7)
    assert not torch.allclose(proc(attn, hidden, text, ip_hidden_states=inputs), plain)


@torch.no_grad()
def test_identity_branch_is_zero_outside_its_mask():
    mask = torch.zeros(1, 1, 8, 8)  # pixel-space mask: left half of the image
    mask[..., :, :4] = 1
    attn, hidden, text, inputs = _attn_and_inputs(scale=0.9, mask=mask)
    proc = InstantIDAttnProcessor(1)
    plain = proc(attn, hidden, text).view(2, 4, 4, 8)
    masked = proc(attn, hidden, text, ip_hidden_states=inputs).view(2, 4, 4, 8)
    assert torch.equal(masked[:, :, 2:], plain[:, :, 2:])  # right half: exactly the text attention
    assert (masked[:, :, :2] - plain[:, :, :2]).abs().amin() > 0  # left half: every position changed


def test_scale_expansion_float_and_block_dict(parity_unet):
    from idgen.adapters.instantid.model import identity_layers

    names, _ = identity_layers(parity_unet)
    layer_names = {k: n for k, n in enumerate(names) if not n.endswith("attn1.processor")}
    assert set(expand_identity_scale(parity_unet, layer_names, 0.5, what="s").values()) == {0.5}
    per = expand_identity_scale(parity_unet, layer_names, {"up": {"block_0": [0.0, 1.0]}}, what="s")
    ups = {k: v for k, v in per.items() if layer_names[k].startswith("up_blocks.0.attentions.1.")}
    assert ups and set(ups.values()) == {1.0}
    assert all(v == 0.0 for k, v in per.items() if k not in ups)  # unnamed blocks get 0 (as diffusers)
    with pytest.raises(IdgenError, match="ip_adapter_scale"):
        expand_identity_scale(parity_unet, layer_names, {"down": {"block_7": 1.0}}, what="ip_adapter_scale")
    with pytest.raises(IdgenError, match="finite"):
        expand_identity_scale(parity_unet, layer_names, float("nan"), what="s")


def test_official_state_dict_round_trips(parity_dir, parity_unet, parity_resampler):
    adapter = load_instantid_adapter(parity_dir / "instantid" / "ip-adapter.bin", parity_unet, resampler_config=parity_resampler)
    official = official_state_dict(adapter)
    assert all(k.startswith(("image_proj.", "ip_adapter.")) for k in official)
    again = load_instantid_adapter(official, parity_unet, resampler_config=parity_resampler).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in adapter.state_dict().items())


def test_identity_processors_live_for_the_with_block_only(parity_dir, parity_unet, parity_resampler):
    adapter = load_instantid_adapter(parity_dir / "instantid" / "ip-adapter.bin", parity_unet, resampler_config=parity_resampler)
    before = parity_unet.attn_processors
    with pytest.raises(RuntimeError, match="inside"):
        with identity_processors_installed(parity_unet, adapter):
            inside = parity_unet.attn_processors
            order = attn_processor_order(parity_unet)
            assert {k for k, name in enumerate(order) if isinstance(inside[name], InstantIDAttnProcessor)} == set(adapter.layer_names)
            raise RuntimeError("inside")
    assert all(parity_unet.attn_processors[name] is p for name, p in before.items())  # restored, even on errors
    with torch.device("meta"):
        other = InstantIDAdapter.for_unet(meta_unet(SD15_UNET))
    with pytest.raises(IdgenError, match="another UNet layout"):
        with identity_processors_installed(parity_unet, other):
            pass
