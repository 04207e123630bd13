"""InstantID with extra ControlNets (the official "full" pipeline's IdentityNet-first convention),
`control_mask`, and the style IP-Adapter arguments' pass-through (tiny models, CPU).

The parity case (`tests/data/parity/instantid-full/`, made by `bench/parity/instantid_full.py`
with the official `pipeline_stable_diffusion_xl_instantid_full.py`) is the acceptance test. Its
models are rebuilt here from seeds by `parity_kit`, which the img2img tests and the bench scripts
use too.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    MultiControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
    UNet2DConditionModel,
)
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
from PIL import Image

from idgen.conditioning import draw_kps
from idgen.errors import IdgenError
from idgen.pipelines import (
    StableDiffusionInstantIDPipeline,
    StableDiffusionXLInstantIDImg2ImgPipeline,
    StableDiffusionXLInstantIDInpaintPipeline,
    StableDiffusionXLInstantIDPipeline,
)
from idgen.testing import (
    TINY_RESAMPLER,
    random_instantid_state_dict,
    seeded,
    tiny_controlnet,
    tiny_sd15_components,
    tiny_sdxl_components,
    tiny_unet,
)

CASE_DIR = Path(__file__).parent / "data" / "parity" / "instantid-full"
CASE = json.loads((CASE_DIR / "case.json").read_text())
FACE = np.load(CASE_DIR / "face_embeds.npy")
KPS_IMAGE = Image.open(CASE_DIR / "kps.png").convert("RGB")
DEPTH = Image.open(CASE_DIR / "depth.png").convert("RGB")
MASK = Image.open(CASE_DIR / "control_mask.png")
KPS = np.asarray(CASE["keypoints"], np.float32)

#: The SDXL layout at tiny widths: 3 levels, 2 layers each (9 down residuals, as the official
#: `control_mask` code assumes), VAE factor 8 (its masks are made at 1/8, 1/16, 1/32 of the image).
UNET_SHAPE = dict(
    block_out_channels=(32, 32, 64), layers_per_block=2, attention_head_dim=(2, 2, 4),
    transformer_layers_per_block=(1, 1, 2), sample_size=8,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
VAE_SHAPE = dict(block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4, sample_size=64)
CONDITION_CHANNELS = (8, 8, 16, 16)  # 3 stride-2 steps: the condition image at the latent size


def parity_controlnet(unet, seed: int):
    """`tiny_controlnet(unet, seed)` with a conditioning embedding for VAE factor 8 whose output
    convolution is random too (diffusers zero-initialises it), so the condition image matters."""
    controlnet = tiny_controlnet(unet, seed)
    with seeded(seed + 1000):
        embedding = ControlNetConditioningEmbedding(unet.config.block_out_channels[0], block_out_channels=CONDITION_CHANNELS)
        torch.nn.init.normal_(embedding.conv_out.weight, std=1.0)
    controlnet.controlnet_cond_embedding = embedding
    controlnet.register_to_config(conditioning_embedding_out_channels=CONDITION_CHANNELS)
    return controlnet.eval()


def parity_kit(seeds: dict) -> tuple[dict, list, dict]:
    """The parity cases' models from their seeds: `(SDXL components without controlnet,
    [IdentityNet, extra ControlNet], adapter state dict in the official layout)`. Text encoders,
    tokenizers and scheduler are `tiny_sdxl_components`'; UNet and VAE have `UNET_SHAPE` /
    `VAE_SHAPE`."""
    parts = tiny_sdxl_components(seeds["components"])
    for key in ("image_encoder", "feature_extractor"):
        parts.pop(key)
    config = {**tiny_unet(seeds["components"], xl=True).config, **UNET_SHAPE}
    with seeded(seeds["unet"]):
        parts["unet"] = UNet2DConditionModel.from_config(config).eval()
    with seeded(seeds["vae"]):
        parts["vae"] = AutoencoderKL(**VAE_SHAPE).eval()
    nets = [parity_controlnet(parts["unet"], seeds["identitynet"]), parity_controlnet(parts["unet"], seeds["extra_controlnet"])]
    return parts, nets, random_instantid_state_dict(parts["unet"], seeds["adapter"])


def prompt_embeddings(pipe, prompt: str, negative_prompt: str) -> dict:
    """diffusers' `encode_prompt` (CFG) as the four `*_embeds` call arguments (the parity case
    passes embeddings: the official full pipeline has its own prompt-weighting encoder)."""
    embeds = pipe.encode_prompt(prompt, device=torch.device("cpu"), num_images_per_prompt=1,
                                do_classifier_free_guidance=True, negative_prompt=negative_prompt)
    names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    return dict(zip(names, embeds))


def make_pipeline(extra=True):
    parts, nets, adapter = parity_kit(CASE["seeds"])
    pipe = StableDiffusionXLInstantIDPipeline(**parts, controlnet=nets if extra else nets[0])
    pipe.load_instantid(adapter, resampler_config=TINY_RESAMPLER)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, **overrides):
    args = dict(prompt="photo of a person", negative_prompt="low quality", face_embeds=FACE, image=[KPS_IMAGE, DEPTH],
                height=64, width=64, num_inference_steps=1, identity_scale=0.6,
                controlnet_conditioning_scale=[0.7, 0.5], generator=torch.Generator("cpu").manual_seed(0),
                output_type="np")
    return pipe(**{**args, **overrides}).images


# -- acceptance: the official full pipeline ------------------------------------------------------


@pytest.mark.parametrize("masked", [True, False], ids=["control_mask", "no_mask"])
def test_parity_with_official_full_pipeline(masked):
    pipe = make_pipeline()
    call = dict(CASE["call"])
    seed, embeds = call.pop("seed"), prompt_embeddings(pipe, call.pop("prompt"), call.pop("negative_prompt"))
    call["identity_scale"] = call.pop("ip_adapter_scale")  # case.json keeps the official name
    out = pipe(**embeds, **call, face_embeds=FACE, image=[KPS_IMAGE, DEPTH], control_mask=MASK if masked else None,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
    expected = np.load(CASE_DIR / ("expected.npy" if masked else "expected_no_mask.npy"))
    assert out.shape == expected.shape == (1, 64, 64, 3)
    diff = float(np.abs(out - expected).max())
    print(f"InstantID full parity ({'control_mask' if masked else 'no mask'}) max abs diff: {diff:.3e}")
    assert diff <= 1e-4


# -- what the extra ControlNet does and does not change --------------------------------------------


def test_extra_controlnet_at_scale_zero_is_the_identitynet_alone():
    alone = run(make_pipeline(extra=False), image=KPS_IMAGE, controlnet_conditioning_scale=0.7)
    np.testing.assert_array_equal(run(make_pipeline(), controlnet_conditioning_scale=[0.7, 0.0]), alone)
    # the extra ControlNet's window closed: the same
    np.testing.assert_array_equal(
        run(make_pipeline(), control_guidance_start=[0.0, 0.0], control_guidance_end=[1.0, 0.01]), alone)


def test_extra_controlnet_and_its_condition_change_the_output():
    pipe = make_pipeline()
    base = run(pipe, controlnet_conditioning_scale=[0.7, 0.0])
    with_depth = run(pipe)
    assert np.abs(with_depth - base).max() > 1e-3
    black = run(pipe, image=[KPS_IMAGE, Image.new("RGB", DEPTH.size)])
    assert np.abs(black - with_depth).max() > 1e-6  # tiny random ControlNets: a weak (deterministic) effect
    # a float scale applies to every ControlNet
    np.testing.assert_array_equal(run(pipe, controlnet_conditioning_scale=0.7),
                                  run(pipe, controlnet_conditioning_scale=[0.7, 0.7]))


def _record_contexts(nets):
    seen = {i: [] for i in range(len(nets))}
    for i, net in enumerate(nets):
        forward = net.forward

        def recording(*args, _i=i, _forward=forward, **kwargs):
            seen[_i].append(kwargs["encoder_hidden_states"])
            return _forward(*args, **kwargs)

        net.forward = recording
    return seen


def test_identitynet_gets_the_identity_tokens_and_the_extra_controlnet_the_text():
    pipe = make_pipeline()
    embeds = prompt_embeddings(pipe, "photo of a person", "low quality")
    seen = _record_contexts(pipe.controlnet.nets)
    run(pipe, prompt=None, negative_prompt=None, **embeds)
    text = torch.cat([embeds["negative_prompt_embeds"], embeds["prompt_embeds"]])
    tokens = pipe.identity_adapter(torch.cat([torch.zeros(1, 1, 512), torch.from_numpy(FACE)[None]]))
    assert len(seen[0]) == len(seen[1]) == 1  # one call per step
    for context in seen[0]:
        torch.testing.assert_close(context, tokens.reshape(2, -1, tokens.shape[-1]), rtol=0, atol=1e-6)
    for context in seen[1]:
        torch.testing.assert_close(context, text, rtol=0, atol=0)
    assert not any(net._forward_pre_hooks or net._forward_hooks for net in pipe.controlnet.nets)


def test_drawn_keypoints_with_an_extra_controlnet():
    pipe = make_pipeline()
    drawn = run(pipe, identities=[{"face_embeds": FACE, "kps": KPS}], face_embeds=None, image=[None, DEPTH])
    np.testing.assert_array_equal(drawn, run(pipe, image=[draw_kps((64, 64), KPS), DEPTH]))


def test_extra_conditions_are_resized_to_the_output():
    pipe = make_pipeline()
    big_depth = DEPTH.resize((128, 128))
    out = run(pipe, image=[KPS_IMAGE, big_depth], height=None, width=None)  # size from the keypoint image
    assert out.shape == (1, 64, 64, 3)


# -- control_mask ----------------------------------------------------------------------------------


def test_control_mask_all_ones_changes_nothing_and_all_zeros_removes_the_identity():
    pipe = make_pipeline()
    plain = run(pipe)
    np.testing.assert_array_equal(run(pipe, control_mask=np.ones((64, 64), np.float32)), plain)
    zeros = run(pipe, control_mask=np.zeros((64, 64), np.float32))
    np.testing.assert_array_equal(zeros, run(pipe, identity_scale=0.0, controlnet_conditioning_scale=[0.0, 0.5]))
    masked = run(pipe, control_mask=MASK)
    assert np.abs(masked - plain).max() > 1e-4 and np.abs(masked - zeros).max() > 1e-4
    assert not pipe.controlnet.nets[0]._forward_hooks


# -- errors -----------------------------------------------------------------------------------------


def test_wrong_counts_name_the_argument():
    pipe = make_pipeline()
    with pytest.raises(IdgenError, match=r"`image` must be a list of 2 conditions.*got 1 entries"):
        run(pipe, image=[KPS_IMAGE])
    with pytest.raises(IdgenError, match=r"`image` must be a list of 2"):
        run(pipe, image=KPS_IMAGE)
    with pytest.raises(IdgenError, match=r"`image\[1\]` is None"):
        run(pipe, image=[KPS_IMAGE, None])
    with pytest.raises(IdgenError, match=r"`controlnet_conditioning_scale` has 3 values but the pipeline has 2"):
        run(pipe, controlnet_conditioning_scale=[0.7, 0.5, 0.5])
    with pytest.raises(IdgenError, match=r"`control_guidance_end` has 1 values"):
        run(pipe, control_guidance_end=[1.0])
    with pytest.raises(IdgenError, match="ControlNet 1 must satisfy"):
        run(pipe, control_guidance_start=[0.0, 0.5], control_guidance_end=[1.0, 0.5])
    with pytest.raises(IdgenError, match="not both"):
        run(pipe, pose_image=KPS_IMAGE)


def test_a_controlnet_of_another_architecture_is_named():
    parts, nets, _ = parity_kit(CASE["seeds"])
    sd15 = tiny_controlnet(tiny_sd15_components(0)["unet"], 0)
    with pytest.raises(IdgenError, match=r"controlnet\[1\] \(an extra ControlNet\) has cross_attention_dim=32 but the UNet needs 64"):
        StableDiffusionXLInstantIDPipeline(**parts, controlnet=[nets[0], sd15])
    with pytest.raises(IdgenError, match=r"controlnet\[1\].*must be a diffusers ControlNetModel"):
        StableDiffusionXLInstantIDPipeline(**parts, controlnet=[nets[0], parts["unet"]])
    kit_unet = tiny_controlnet(tiny_sdxl_components(0)["unet"], 0)  # 2 levels: its residuals do not fit
    with pytest.raises(IdgenError, match=r"controlnet \(the IdentityNet\) has block_out_channels"):
        StableDiffusionXLInstantIDPipeline(**parts, controlnet=kit_unet)
    pipe = make_pipeline(extra=False)
    with pytest.raises(IdgenError, match=r"controlnet\[1\]"):
        pipe.add_controlnets(sd15)
    pipe.controlnet = MultiControlNetModel([nets[0], sd15])  # set directly: checked at call time
    with pytest.raises(IdgenError, match=r"controlnet\[1\]"):
        run(pipe)


# -- convenience, saving ----------------------------------------------------------------------------


def test_add_and_remove_controlnets():
    built = run(make_pipeline())
    pipe = make_pipeline(extra=False)
    alone = run(pipe, image=KPS_IMAGE, controlnet_conditioning_scale=0.7)
    _, nets, _ = parity_kit(CASE["seeds"])
    pipe.add_controlnets(nets[1])
    assert isinstance(pipe.controlnet, MultiControlNetModel) and pipe.extra_controlnets == [nets[1]]
    assert pipe.config.controlnet[1] == "MultiControlNetModel"
    np.testing.assert_array_equal(run(pipe), built)
    pipe.remove_controlnets()
    assert pipe.controlnet is pipe.identitynet and pipe.extra_controlnets == []
    np.testing.assert_array_equal(run(pipe, image=KPS_IMAGE, controlnet_conditioning_scale=0.7), alone)


def test_save_and_load_round_trip(tmp_path):
    pipe = make_pipeline()
    before = run(pipe, control_mask=MASK)
    pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "controlnet_1" / "config.json").is_file()
    loaded = StableDiffusionXLInstantIDPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.controlnet, MultiControlNetModel) and len(loaded.controlnet.nets) == 2
    np.testing.assert_array_equal(run(loaded, control_mask=MASK), before)


# -- inpainting and SD1.5 ----------------------------------------------------------------------------


def test_inpaint_with_an_extra_controlnet_keeps_the_unmasked_pixels():
    parts, nets, adapter = parity_kit(CASE["seeds"])
    pipe = StableDiffusionXLInstantIDInpaintPipeline(**parts, controlnet=nets)
    pipe.load_instantid(adapter, resampler_config=TINY_RESAMPLER)
    pipe.set_progress_bar_config(disable=True)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:56, 16:48] = 255

    def inpaint(**overrides):
        args = dict(prompt="photo of a person", image=photo, mask_image=Image.fromarray(mask), face_embeds=FACE,
                    target_kps=KPS, control_image=[None, DEPTH], controlnet_conditioning_scale=[0.8, 0.5],
                    num_inference_steps=2, output_type="np", generator=torch.Generator("cpu").manual_seed(0))
        return pipe(**{**args, **overrides}).images

    out = inpaint()
    off = inpaint(controlnet_conditioning_scale=[0.8, 0.0])
    assert np.abs(out - off).max() > 1e-4
    # the pixels outside the mask come from the photo (diffusers' latent blend, then the VAE), as without extras
    alone = StableDiffusionXLInstantIDInpaintPipeline(**{**pipe.components, "controlnet": nets[0]})
    alone.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(off, alone(**{**dict(prompt="photo of a person", image=photo,
                                               mask_image=Image.fromarray(mask), face_embeds=FACE, target_kps=KPS,
                                               num_inference_steps=2, output_type="np",
                                               generator=torch.Generator("cpu").manual_seed(0))}).images)
    with pytest.raises(IdgenError, match="IdentityNet alone"):
        inpaint(image=[photo, photo], mask_image=[Image.fromarray(mask)] * 2, target_kps=np.stack([KPS, KPS]),
                prompt=["a", "b"])


def test_sd15_pipeline_takes_extra_controlnets():
    parts = tiny_sd15_components(0)
    nets = [tiny_controlnet(parts["unet"], 5), tiny_controlnet(parts["unet"], 6)]
    pipe = StableDiffusionInstantIDPipeline(**parts, controlnet=nets)
    pipe.load_instantid(random_instantid_state_dict(pipe.unet, seed=6), resampler_config={**TINY_RESAMPLER, "output_dim": 32})
    pipe.set_progress_bar_config(disable=True)
    alone = StableDiffusionInstantIDPipeline(**{**pipe.components, "controlnet": nets[0]})
    alone.set_progress_bar_config(disable=True)
    args = dict(prompt="photo", face_embeds=FACE, height=64, width=64, num_inference_steps=1, output_type="np")
    kps = draw_kps((64, 64), KPS)
    ours = pipe(**args, image=[kps, DEPTH], controlnet_conditioning_scale=[0.8, 0.0],
                generator=torch.Generator("cpu").manual_seed(0)).images
    np.testing.assert_array_equal(ours, alone(**args, image=kps, generator=torch.Generator("cpu").manual_seed(0)).images)


# -- the style IP-Adapter arguments reach diffusers untouched ----------------------------------------


XL_PIPELINES = {
    StableDiffusionXLControlNetPipeline: (StableDiffusionXLInstantIDPipeline, dict(image=KPS_IMAGE)),
    StableDiffusionXLControlNetInpaintPipeline: (StableDiffusionXLInstantIDInpaintPipeline,
                                                 dict(image=DEPTH, mask_image=MASK, target_kps=KPS)),
    StableDiffusionXLControlNetImg2ImgPipeline: (StableDiffusionXLInstantIDImg2ImgPipeline,
                                                 dict(image=DEPTH, control_image=KPS_IMAGE)),
}


@pytest.mark.parametrize("base", [*XL_PIPELINES, StableDiffusionControlNetPipeline], ids=lambda c: c.__name__)
def test_ip_adapter_arguments_are_passed_to_diffusers(base, monkeypatch):
    seen = {}

    def fake_call(self, *args, **kwargs):
        seen.update(kwargs)
        seen["identitynet_hooked"] = bool(self.identitynet._forward_pre_hooks)
        return "called"

    monkeypatch.setattr(base, "__call__", fake_call)
    style_image, style_embeds = Image.new("RGB", (32, 32)), [torch.zeros(2, 1, 8)]
    if base is StableDiffusionControlNetPipeline:
        parts = tiny_sd15_components(0)
        pipe = StableDiffusionInstantIDPipeline(**parts, controlnet=tiny_controlnet(parts["unet"], 5))
        pipe.load_instantid(random_instantid_state_dict(pipe.unet, seed=6),
                            resampler_config={**TINY_RESAMPLER, "output_dim": 32})
        call = dict(image=KPS_IMAGE)
    else:
        parts, nets, adapter = parity_kit(CASE["seeds"])
        cls, call = XL_PIPELINES[base]
        pipe = cls(**parts, controlnet=nets[0])
        pipe.load_instantid(adapter, resampler_config=TINY_RESAMPLER)
    for name, value in (("ip_adapter_image", style_image), ("ip_adapter_image_embeds", style_embeds)):
        seen.clear()
        assert pipe("photo", face_embeds=FACE, num_inference_steps=2, **call, **{name: value}) == "called"
        assert seen[name] is value and seen["identitynet_hooked"]
