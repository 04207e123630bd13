"""IP-Adapter-FaceID on SDXL (`ip-adapter-faceid_sdxl.bin` layout: same keys, 4 tokens at the
UNet's width) on the tiny SDXL components of the InstantID parity case, CPU. The generic checks
include components reuse, `from_pipe`, a swapped VAE and the `*_embeds` twins (pooled ones too)."""

import copy
import functools

import numpy as np
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from idgen.pipelines import StableDiffusionXLFaceIDInpaintPipeline, StableDiffusionXLFaceIDPipeline

from conftest import SHARED
from pipeline_checks import PipelineChecks
from test_faceid import FACE, OTHER_FACE, reference_tokens, synthetic_faceid_state_dict

SDXL_DIR = SHARED / "parity" / "instantid"


SDXL_CLASSES = {"vae": AutoencoderKL, "text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection,
                "unet": UNet2DConditionModel, "scheduler": EulerDiscreteScheduler}


@functools.lru_cache(maxsize=None)
def _sdxl_parts():
    tokenizer = CLIPTokenizer.from_pretrained(SDXL_DIR / "tokenizer")  # both text encoders use it
    parts = {name: cls.from_pretrained(SDXL_DIR / name) for name, cls in SDXL_CLASSES.items()}
    return {**parts, "tokenizer": tokenizer, "tokenizer_2": tokenizer}


def sdxl_components():
    return {k: (v if k.startswith("tokenizer") else copy.deepcopy(v)) for k, v in _sdxl_parts().items()}


def make_pipeline(load=True):
    pipe = StableDiffusionXLFaceIDPipeline(**sdxl_components(), add_watermarker=False)
    if load:
        pipe.load_faceid(synthetic_faceid_state_dict(pipe.unet, "faceid", seed=1))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(seed=0, **overrides):
    base = dict(
        prompt="photo of a person", negative_prompt="low quality", face_embeds=FACE, num_inference_steps=2,
        height=64, width=64, generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
    )
    base.update(overrides)
    return base


def run(pipe, **overrides):
    return pipe(**inputs(**overrides)).images


class TestFaceIDXLPipeline(PipelineChecks):
    get_pipeline = staticmethod(make_pipeline)
    get_inputs = staticmethod(inputs)


def test_sdxl_tokens_and_identity_effect():
    pipe = make_pipeline()
    sd = pipe.faceid_state_dict()
    assert pipe.faceid_spec.cross_attention_dim == pipe.unet.config.cross_attention_dim
    emb = torch.from_numpy(FACE)
    with torch.no_grad():
        ours = pipe.unet.encoder_hid_proj([emb[:, None]])[0][:, 0]
    torch.testing.assert_close(ours, reference_tokens(sd["image_proj"], emb), rtol=1e-5, atol=1e-5)
    a, b, none = run(pipe), run(pipe, face_embeds=OTHER_FACE), run(pipe, identity_scale=0.0)
    assert np.abs(a - none).max() > 1e-4 and np.abs(a - b).max() > 1e-4
    assert pipe.unet.config.cross_attention_dim == 64 and a.shape == (1, 64, 64, 3)


def test_sdxl_unload_restores_plain_sdxl_exactly():
    pipe = make_pipeline()
    pipe.unload_faceid()
    args = inputs()
    args.pop("face_embeds")
    ours = pipe(**args).images
    plain = StableDiffusionXLPipeline(**sdxl_components(), add_watermarker=False)
    plain.set_progress_bar_config(disable=True)
    args = inputs()
    args.pop("face_embeds")
    np.testing.assert_array_equal(ours, plain(**args).images)


def test_sdxl_masks_and_plus_v2():
    pipe = make_pipeline()
    left = np.zeros((64, 64), np.float32)
    left[:, :32] = 1
    people = [{"face_embeds": FACE, "mask": left}, {"face_embeds": OTHER_FACE, "mask": 1 - left}]
    assert np.isfinite(run(pipe, face_embeds=None, identities=people)).all()
    # Plus v2 on SDXL (the official ip-adapter-faceid-plusv2_sdxl.bin layout) with a tiny CLIP encoder
    from test_faceid import wide_components

    _, encoder = wide_components()
    plus = make_pipeline(load=False)
    sd = synthetic_faceid_state_dict(plus.unet, "faceid-plusv2", clip_dim=32, seed=2)
    plus.load_faceid(sd, image_encoder=encoder)
    crop = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    assert plus.faceid_spec.variant == "faceid-plusv2"
    image = run(plus, face_crop=crop)
    assert np.isfinite(image).all() and np.abs(image - run(plus, face_crop=crop, s_scale=0.0)).max() > 1e-5


def test_from_pipe_of_a_plain_sdxl_pipeline_and_sharing_the_adapter():
    plain = StableDiffusionXLPipeline(**sdxl_components(), add_watermarker=False)
    for cls in (StableDiffusionXLFaceIDPipeline, StableDiffusionXLFaceIDInpaintPipeline):
        made = cls.from_pipe(plain)
        assert type(made) is cls and made.unet is plain.unet and not made.faceid_loaded
    pipe = make_pipeline()
    shared = StableDiffusionXLFaceIDInpaintPipeline.from_pipe(pipe)  # the same UNet: the adapter too
    assert shared.faceid_spec == pipe.faceid_spec
