"""IP-Adapter-FaceID-Portrait (SD1.5, SDXL): the official files' layout at full size (meta device),
parity with the official `IPAdapterFaceID(..., num_tokens=16, n_cond=3).generate` on tiny weights,
and several photos of one person as concatenated tokens (no LoRA)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.adapters.faceid import expected_layout, load_faceid_into_unet
from idgen.adapters.faceid.loader import unet_adapters
from idgen.errors import CheckpointError
from idgen.pipelines import StableDiffusionFaceIDPipeline
from idgen.testing import random_faceid_state_dict, tiny_clip_vision_encoder
from idgen.testing.released import SD15_UNET, SDXL_UNET, meta_unet
from idgen.testing.style import random_style_state_dict

from conftest import SHARED
from pipeline_checks import parity_sd15_components

CASE_DIR = Path(__file__).parent / "data" / "parity" / "faceid-portrait"
LAYOUTS = Path(__file__).parent / "data" / "layouts" / "ip-adapter-faceid-portrait.json"
BASE_DIR = SHARED / "parity" / "faceid-sd15"
CASE = json.loads((CASE_DIR / "case.json").read_text())["case"]
FACES = np.load(CASE_DIR / "face_embeds.npy")  # [3, 512]
UNETS = {"ip-adapter-faceid-portrait_sd15.bin": SD15_UNET, "ip-adapter-faceid-portrait-v11_sd15.bin": SD15_UNET,
         "ip-adapter-faceid-portrait_sdxl.bin": SDXL_UNET}


def make_pipeline():
    pipe = StableDiffusionFaceIDPipeline(**parity_sd15_components(BASE_DIR))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_faceid(random_faceid_state_dict(pipe.unet, "faceid-portrait", seed=CASE["checkpoint_seed"]))
    return pipe


def run(pipe, **kwargs):
    args = dict(prompt=CASE["prompt"], negative_prompt=CASE["negative_prompt"], face_embeds=FACES,
                identity_scale=CASE["scale"], num_inference_steps=CASE["num_inference_steps"],
                guidance_scale=CASE["guidance_scale"], height=CASE["height"], width=CASE["width"],
                generator=torch.Generator("cpu").manual_seed(CASE["seed"]), output_type="np")
    args.update(kwargs)
    return pipe(**args).images


def test_parity_with_official_faceid_portrait():
    out = run(make_pipeline())
    expected = np.load(CASE_DIR / "expected.npy")
    assert out.shape == expected.shape == (1, 64, 64, 3)
    diff = float(np.abs(out - expected).max())
    print(f"FaceID-Portrait parity max abs diff: {diff:.3e}")
    assert diff <= 1e-4


@pytest.mark.parametrize("name", sorted(UNETS))
def test_official_layout_loads_at_full_size_on_meta(name):
    manifest = json.loads(LAYOUTS.read_text())[name]
    unet = meta_unet(UNETS[name])
    state_dict = {part: {k: torch.empty(s, device="meta") for k, s in keys.items()} for part, keys in manifest.items()}
    state = load_faceid_into_unet(unet, state_dict, "auto")
    assert (state.spec.variant, state.spec.num_tokens, state.spec.lora_rank) == ("faceid-portrait", 16, 0)
    layout = expected_layout(unet, state.spec)
    for part in ("image_proj", "ip_adapter"):
        assert list(layout[part].items()) == [(k, tuple(s)) for k, s in manifest[part].items()]
    assert unet_adapters(unet) == []  # no LoRA


def test_several_photos_are_concatenated_tokens_without_lora():
    pipe = make_pipeline()
    assert pipe.faceid_spec.variant == "faceid-portrait" and unet_adapters(pipe.unet) == []
    seen = []
    handle = pipe.unet.encoder_hid_proj.register_forward_hook(lambda m, i, o: seen.append(o[0].shape))
    concat = run(pipe)
    handle.remove()
    assert seen[0][1:] == (3, 16, 32)  # n_cond photos x 16 tokens, attended together
    assert np.array_equal(run(pipe, reference_mode="concat"), concat)  # Portrait's default
    assert np.abs(run(pipe, reference_mode="mean") - concat).max() > 1e-4
    assert np.abs(run(pipe, face_embeds=FACES[:1]) - concat).max() > 1e-4
    # lora_scale has nothing to act on
    pipe.set_faceid_scale(lora_scale=0.5)
    assert np.array_equal(run(pipe), concat)
    pipe.unload_faceid()
    assert pipe.unet.encoder_hid_proj is None


def test_save_pretrained_round_trip(tmp_path):
    pipe = make_pipeline()
    before = run(pipe)
    pipe.save_pretrained(tmp_path)
    loaded = StableDiffusionFaceIDPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.faceid_spec.variant == "faceid-portrait"
    assert np.array_equal(run(loaded), before)


def test_wrong_variants_are_refused():
    pipe = make_pipeline()
    state_dict = random_faceid_state_dict(pipe.unet, "faceid-portrait", seed=0)
    with pytest.raises(CheckpointError, match="faceid-portrait"):
        pipe.load_faceid(state_dict, variant="faceid")
    with pytest.raises(CheckpointError, match="plain IP-Adapter-FaceID"):
        pipe.load_faceid(random_faceid_state_dict(pipe.unet, seed=0), variant="faceid-portrait")


def test_portrait_with_a_style_reference():
    pipe = make_pipeline()
    base = run(pipe)
    encoder, processor = tiny_clip_vision_encoder(4)
    pipe.load_style_adapter(random_style_state_dict(pipe.unet, 32, seed=2), image_encoder=encoder,
                            feature_extractor=processor, blocks="all")
    style = Image.fromarray((np.random.default_rng(1).random((48, 48, 3)) * 255).astype(np.uint8))
    assert np.abs(run(pipe, ip_adapter_image=style) - base).max() > 1e-3
    pipe.set_style_scale(0.0, blocks="all")
    assert np.array_equal(run(pipe, ip_adapter_image=style), base)
