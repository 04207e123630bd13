"""A style reference beside the identity (InstantStyle): a standard IP-Adapter file loaded with
`load_style_adapter` next to FaceID (diffusers' multi-IP-Adapter) and InstantID (its identity
processors carry the style's K/V), on tiny models, CPU."""

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from PIL import Image

from idgen.adapters.instantid import InstantIDAttnProcessor
from idgen.adapters.style import get_style_adapter, style_scale_config
from idgen.errors import CheckpointError, IdgenError, ModelNotFoundError
from idgen.pipelines import StableDiffusionFaceIDPipeline
from idgen.style import style_block_scales
from idgen.testing import random_faceid_state_dict, tiny_clip_vision_encoder, tiny_sd15_components
from idgen.testing.style import random_style_state_dict

import test_instantid_pipeline as instantid

FACE = np.random.default_rng(0).normal(size=(1, 512)).astype(np.float32)
STYLE = Image.fromarray((np.random.default_rng(1).random((48, 48, 3)) * 255).astype(np.uint8))
OTHER_STYLE = Image.fromarray((np.random.default_rng(2).random((48, 48, 3)) * 255).astype(np.uint8))
UP = {"up": {"block_0": 1.0}}  # the tiny UNets' only up block with attention


def faceid_pipe(style=True, **style_kwargs):
    pipe = StableDiffusionFaceIDPipeline(**tiny_sd15_components(0, with_image_encoder=True))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_faceid(random_faceid_state_dict(pipe.unet, seed=1))
    if style:
        pipe.load_style_adapter(random_style_state_dict(pipe.unet, 32, seed=2), **{"blocks": UP, **style_kwargs})
    return pipe


def run(pipe, **kwargs):
    args = dict(prompt="a photo", face_embeds=FACE, num_inference_steps=2, height=64, width=64,
                generator=torch.Generator().manual_seed(0), output_type="np")
    args.update(kwargs)
    return pipe(**args).images


@pytest.fixture(scope="module")
def faceid_base():
    return run(faceid_pipe(style=False))


def test_faceid_style_scale_zero_is_exact_and_style_changes_the_output(faceid_base):
    pipe = faceid_pipe()
    pipe.set_style_scale(0.0, blocks=UP)
    assert np.array_equal(run(pipe, ip_adapter_image=STYLE), faceid_base)
    assert np.array_equal(run(pipe), faceid_base)  # no style image: the style is off for the call
    pipe.set_style_scale(1.0, blocks="all")
    styled = run(pipe, ip_adapter_image=STYLE)
    assert np.abs(styled - faceid_base).max() > 1e-3
    assert np.abs(run(pipe, ip_adapter_image=OTHER_STYLE) - styled).max() > 1e-3
    # the identity still acts (identity scale 0 with the style on is another image)
    assert np.abs(run(pipe, ip_adapter_image=STYLE, identity_scale=0.0) - styled).max() > 1e-3
    # embeds twin: diffusers' layout, negative then positive
    embeds = pipe.encode_style_image(STYLE, "cpu", 1, True)
    assert np.array_equal(run(pipe, ip_adapter_image_embeds=[embeds]), styled)
    pipe.unload_style_adapter()
    assert np.array_equal(run(pipe), faceid_base)
    assert not any(len(p.scale) != 1 for p in pipe.unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0))


def test_style_acts_only_in_the_chosen_blocks():
    pipe = faceid_pipe()
    pipe.set_style_scale(0.6, blocks=UP)
    procs = {n: p for n, p in pipe.unet.attn_processors.items() if isinstance(p, IPAdapterAttnProcessor2_0)}
    assert {n: p.scale[1] for n, p in procs.items() if p.scale[1]} == {
        n: 0.6 for n in procs if n.startswith("up_blocks.0.")}
    assert all(p.scale[0] == 1.0 for p in procs.values())  # identity everywhere
    # zeroing the style K/V outside the chosen blocks changes nothing; inside it does
    styled = run(pipe, ip_adapter_image=STYLE)
    with torch.no_grad():
        for name, proc in procs.items():
            if not name.startswith("up_blocks.0."):
                proc.to_k_ip[1].weight.zero_()
    assert np.array_equal(run(pipe, ip_adapter_image=STYLE), styled)
    with torch.no_grad():
        procs[next(n for n in procs if n.startswith("up_blocks.0."))].to_v_ip[1].weight.zero_()
    assert np.abs(run(pipe, ip_adapter_image=STYLE) - styled).max() > 1e-5


def test_instantstyle_block_presets_follow_idgen_style():
    pipe = faceid_pipe()
    # read from the UNet's own structure: the tiny UNet's style block is its only up block with
    # attention (SD1.5's rule: the whole block), its layout blocks the last down block and the mid block
    assert style_scale_config(pipe.unet, 1.0, "style") == {
        "up_blocks.0.attentions.0": 1.0, "up_blocks.0.attentions.1": 1.0,
        "down_blocks.1.attentions.0": 0.0, "mid_block.attentions.0": 0.0}
    assert set(style_scale_config(pipe.unet, 0.5, "style+layout").values()) == {0.5}
    assert style_scale_config(pipe.unet, 0.5, "all") == 0.5 == style_block_scales("sd15", "all", 0.5)
    with pytest.raises(IdgenError, match="style blocks"):
        pipe.set_style_scale(1.0, blocks="everywhere")


def test_identity_scale_changes_leave_the_style_scale(faceid_base):
    pipe = faceid_pipe()
    pipe.set_style_scale(0.7, blocks=UP)
    pipe.set_faceid_scale(0.5)
    procs = [p for p in pipe.unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]
    assert {p.scale[0] for p in procs} == {0.5} and {p.scale[1] for p in procs} == {0.0, 0.7}
    # reloading FaceID (and unloading it) keeps the style with its scales
    pipe.load_faceid(random_faceid_state_dict(pipe.unet, seed=1))
    procs = [p for p in pipe.unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]
    assert {p.scale[1] for p in procs} == {0.0, 0.7} and pipe.style_adapter_loaded
    styled = run(pipe, ip_adapter_image=STYLE)
    pipe.unload_faceid()
    assert pipe.style_adapter_loaded and get_style_adapter(pipe.unet).index == 0
    style_only = run(pipe, face_embeds=None, ip_adapter_image=STYLE)
    assert np.abs(style_only - styled).max() > 1e-3


def test_reload_is_bit_identical():
    pipe = faceid_pipe()
    pipe.set_style_scale(0.8, blocks=UP)
    first = run(pipe, ip_adapter_image=STYLE)
    pipe.unload_style_adapter()
    pipe.load_style_adapter(random_style_state_dict(pipe.unet, 32, seed=2), blocks=UP, scale=0.8)
    assert np.array_equal(run(pipe, ip_adapter_image=STYLE), first)
    # loading again replaces the style adapter
    pipe.load_style_adapter(random_style_state_dict(pipe.unet, 32, seed=2), blocks=UP, scale=0.8)
    assert np.array_equal(run(pipe, ip_adapter_image=STYLE), first)


def test_save_pretrained_keeps_faceid_and_leaves_the_style_loaded(tmp_path):
    pipe = faceid_pipe()
    pipe.set_style_scale(0.8, blocks=UP)
    before = run(pipe, ip_adapter_image=STYLE)
    pipe.save_pretrained(tmp_path)
    assert np.array_equal(run(pipe, ip_adapter_image=STYLE), before)
    loaded = StableDiffusionFaceIDPipeline.from_pretrained(tmp_path)
    assert loaded.faceid_loaded and not loaded.style_adapter_loaded


def test_plus_style_adapter_uses_hidden_states(faceid_base):
    pipe = faceid_pipe(style=False)
    pipe.load_style_adapter(random_style_state_dict(pipe.unet, 32, kind="ip-adapter-plus", seed=3), blocks="all")
    assert get_style_adapter(pipe.unet).spec.kind == "ip-adapter-plus"
    assert np.abs(run(pipe, ip_adapter_image=STYLE) - faceid_base).max() > 1e-3
    pipe.set_style_scale(0.0, blocks=UP)
    assert np.array_equal(run(pipe, ip_adapter_image=STYLE), faceid_base)


def test_bad_files_and_inputs_are_refused_clearly():
    pipe = faceid_pipe(style=False)
    with pytest.raises(IdgenError, match="load_style_adapter"):
        run(pipe, ip_adapter_image=STYLE)
    with pytest.raises(CheckpointError, match="IP-Adapter-FaceID file"):
        pipe.load_style_adapter(random_faceid_state_dict(pipe.unet, seed=1))
    good = random_style_state_dict(pipe.unet, 32, seed=2)
    broken = {"image_proj": good["image_proj"], "ip_adapter": dict(good["ip_adapter"])}
    first = next(iter(broken["ip_adapter"]))
    del broken["ip_adapter"][first]
    with pytest.raises(CheckpointError, match=first):
        pipe.load_style_adapter(broken)
    wrong_width = random_style_state_dict(pipe.unet, 32, seed=2)
    wrong_width["image_proj"]["norm.weight"] = torch.ones(8)
    with pytest.raises(CheckpointError, match="norm.weight"):
        pipe.load_style_adapter(wrong_width)
    with pytest.raises(IdgenError, match="1024-d CLIP"):  # ip-adapter_sd15.bin-like: ViT-H embeds
        pipe.load_style_adapter(random_style_state_dict(pipe.unet, 1024, seed=2))
    no_encoder = StableDiffusionFaceIDPipeline(**tiny_sd15_components(0))
    with pytest.raises(ModelNotFoundError, match="image_encoder"):
        no_encoder.load_style_adapter(good)
    assert not pipe.style_adapter_loaded
    pipe.load_style_adapter(good, blocks=UP)
    with pytest.raises(IdgenError, match="at most one"):
        run(pipe, ip_adapter_image=STYLE, ip_adapter_image_embeds=[torch.zeros(2, 1, 32)])
    with pytest.raises(IdgenError, match="before `load_ip_adapter"):
        pipe.load_ip_adapter("h94/IP-Adapter")


# -- InstantID + style ---------------------------------------------------------------------


def instantid_pipe(style=True):
    pipe = instantid.make_pipeline()
    if style:
        encoder, processor = tiny_clip_vision_encoder(4)
        pipe.load_style_adapter(random_style_state_dict(pipe.unet, 32, seed=2), image_encoder=encoder,
                                feature_extractor=processor, blocks="all")
    return pipe


def test_instantid_with_style(monkeypatch):
    base = instantid.run(instantid_pipe(style=False))
    pipe = instantid_pipe()
    pipe.set_style_scale(0.0, blocks=UP)
    assert np.array_equal(instantid.run(pipe, ip_adapter_image=STYLE), base)
    pipe.set_style_scale(1.0, blocks="all")
    styled = instantid.run(pipe, ip_adapter_image=STYLE)
    assert np.abs(styled - base).max() > 1e-3
    assert np.array_equal(instantid.run(pipe), base)  # no style image: the style is off for the call
    # the identity processors carry the style for the call; the IdentityNet never sees style tokens
    seen, calls = [], []
    original = InstantIDAttnProcessor._add_image_adapters
    monkeypatch.setattr(InstantIDAttnProcessor, "_add_image_adapters",
                        lambda self, *a: seen.append(self.index) or original(self, *a))
    controlnet_forward = pipe.controlnet.forward

    def record(*a, **k):
        out = controlnet_forward(*a, **k)
        calls.append((k.get("encoder_hidden_states"), out))
        return out

    monkeypatch.setattr(pipe.controlnet, "forward", record)
    assert np.array_equal(instantid.run(pipe, ip_adapter_image=STYLE), styled)
    assert seen and calls and pipe.controlnet.encoder_hid_proj is None
    assert all(isinstance(context, torch.Tensor) for context, _ in calls)  # identity tokens, no style tuple
    styled_first = calls[0][1]
    calls.clear()
    pipe.set_style_scale(0.0, blocks=UP)
    instantid.run(pipe, ip_adapter_image=STYLE)
    # the first step's IdentityNet residuals do not depend on the style
    for a, b in zip(torch.utils._pytree.tree_leaves(styled_first), torch.utils._pytree.tree_leaves(calls[0][1])):
        assert torch.equal(a, b)
    # the style only in chosen blocks: processors outside them skip it
    pipe.set_style_scale(1.0, blocks=UP)
    seen.clear()
    up_only = instantid.run(pipe, ip_adapter_image=STYLE)
    assert np.abs(up_only - styled).max() > 1e-4 and np.abs(up_only - base).max() > 1e-4
    pipe.unload_style_adapter()
    assert np.array_equal(instantid.run(pipe), base)
