"""PVA identity inpainting (tiny models, CPU): the joint-softmax processor, the identity encoder,
official-layout loading, and the SD / SDXL inpainting pipelines."""

import inspect

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from PIL import Image

from idgen.adapters.pva import (
    PVAAdapter,
    PVAAttnProcessor,
    PVAIdentityEncoder,
    PVAInputs,
    convert_official_state_dict,
    joint_attention,
    official_state_dict,
)
from idgen.errors import CheckpointError, IdgenError
from idgen.pipelines import (
    StableDiffusionPVAInpaintPipeline,
    StableDiffusionXLPVAInpaintPipeline,
)
from idgen.testing import seeded, tiny_sd15_components, tiny_sdxl_components

from pipeline_checks import TEXT_CALL_ARGUMENTS, PipelineChecks

ENCODER = dict(num_tokens=4, num_layers=1, num_heads=2, feedforward_dim=32)
FACE_A = np.random.default_rng(1).normal(size=(3, 512)).astype(np.float32)
FACE_B = np.random.default_rng(2).normal(size=(3, 512)).astype(np.float32)


def _image_and_mask(size=64):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return image, Image.fromarray(mask)


def _perturb(adapter: PVAAdapter, seed: int = 0) -> PVAAdapter:
    """Visual projections start as copies of the text ones; move them so the branch matters."""
    with seeded(seed), torch.no_grad():
        for p in adapter.visual.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return adapter


def _eval(components: dict) -> dict:
    """Modules in eval mode, as `from_pretrained` leaves them (train mode changes the VAE/UNet numerics)."""
    return {k: v.eval() if isinstance(v, torch.nn.Module) else v for k, v in components.items()}


def sd15_pipeline(in_channels: int = 9, with_adapter: bool = True) -> StableDiffusionPVAInpaintPipeline:
    pipe = StableDiffusionPVAInpaintPipeline(**_eval(tiny_sd15_components(0, in_channels=in_channels)))
    pipe.set_progress_bar_config(disable=True)
    if with_adapter:
        with seeded(3):
            _perturb(pipe.init_pva(**ENCODER)).eval()
    return pipe


# -- the processor -----------------------------------------------------------------------------


def _attention(cross_dim=16, heads=2, dim_head=8):
    with seeded(0):
        return Attention(query_dim=24, cross_attention_dim=cross_dim, heads=heads, dim_head=dim_head).eval()


def _visual_inputs(attn, tokens, **kwargs):
    with seeded(1):
        q = torch.nn.Linear(24, attn.inner_dim, bias=False)
        k = torch.nn.Linear(16, attn.inner_dim, bias=False)
        v = torch.nn.Linear(16, attn.inner_dim, bias=False)
    return PVAInputs(visual_q={0: q}, kv={0: (k(tokens), v(tokens))}, **kwargs)


def test_processor_without_visual_tokens_is_plain_cross_attention():
    attn = _attention()
    x, text = torch.randn(2, 10, 24), torch.randn(2, 7, 16)
    with torch.no_grad():
        plain = AttnProcessor2_0()(attn, x, text)
        no_inputs = PVAAttnProcessor(0)(attn, x, text)
        other_layer = PVAAttnProcessor(5)(attn, x, text, ip_hidden_states=_visual_inputs(attn, torch.randn(1, 3, 16)))
        scale_zero = PVAAttnProcessor(0)(attn, x, text, ip_hidden_states=_visual_inputs(attn, torch.randn(1, 3, 16), identity_scale=0.0))
    for out in (no_inputs, other_layer, scale_zero):
        torch.testing.assert_close(out, plain, rtol=0, atol=0)


def test_joint_softmax_sums_to_one_and_matches_the_fused_processor():
    attn = _attention()
    x, text, tokens = torch.randn(2, 10, 24), torch.randn(2, 7, 16), torch.randn(1, 3, 16)
    inputs = _visual_inputs(attn, tokens)
    with torch.no_grad():
        fused = PVAAttnProcessor(0)(attn, x, text, ip_hidden_states=inputs)

        def heads(t):
            return t.view(2, -1, attn.heads, 8).transpose(1, 2)

        k_v, v_v = (t.expand(2, -1, -1) for t in inputs.kv[0])
        out, probs = joint_attention(
            heads(attn.to_q(x)), heads(attn.to_k(text)), heads(attn.to_v(text)),
            heads(inputs.visual_q[0](x)), heads(k_v), heads(v_v), scale=attn.scale, return_probs=True,
        )
        reference = attn.to_out[0](out.transpose(1, 2).reshape(2, 10, -1))
    assert probs.shape[-1] == 7 + 3
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))
    assert probs[..., 7:].sum() > 0  # the identity tokens do take attention
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)


def test_negative_half_without_identity_is_plain_attention_there():
    attn = _attention()
    x, text = torch.randn(4, 10, 24), torch.randn(4, 7, 16)
    inputs = _visual_inputs(attn, torch.randn(1, 3, 16), negative_half_without_identity=True)
    with torch.no_grad():
        out = PVAAttnProcessor(0)(attn, x, text, ip_hidden_states=inputs)
        plain = AttnProcessor2_0()(attn, x, text)
    torch.testing.assert_close(out[:2], plain[:2], rtol=1e-6, atol=1e-6)
    assert (out[2:] - plain[2:]).abs().max() > 1e-3


def test_identity_scale_weights_the_visual_attention():
    attn = _attention()
    x, text, tokens = torch.randn(1, 10, 24), torch.randn(1, 7, 16), torch.randn(1, 3, 16)
    with torch.no_grad():
        plain = AttnProcessor2_0()(attn, x, text)
        gaps = [(PVAAttnProcessor(0)(attn, x, text, ip_hidden_states=_visual_inputs(attn, tokens, identity_scale=s)) - plain)
                .abs().mean().item() for s in (0.1, 1.0, 10.0)]
    assert gaps[0] < gaps[1] < gaps[2]


# -- the identity encoder ------------------------------------------------------------------------


def test_encoder_token_counts_and_reference_limits():
    enc = PVAIdentityEncoder(width=32, **ENCODER).eval()
    assert enc(torch.randn(2, 5, 512)).shape == (2, 4, 32)
    official = PVAIdentityEncoder(width=32, num_tokens=0, num_layers=1, num_heads=2, feedforward_dim=32).eval()
    assert official(torch.randn(1, 5, 512)).shape == (1, 5, 32)
    with pytest.raises(IdgenError, match="1 to 20"):
        enc(torch.randn(1, 21, 512))
    with pytest.raises(IdgenError, match=r"\[B, N, 512\]"):
        enc(torch.randn(1, 3, 128))


# -- pipelines -----------------------------------------------------------------------------------


class TestPVAInpaintPipeline(PipelineChecks):
    def get_pipeline(self):
        return sd15_pipeline()

    def get_inputs(self, seed: int = 0) -> dict:
        image, mask = _image_and_mask()
        return dict(prompt="photo of a person", image=image, mask_image=mask, face_embeds=FACE_A,
                    num_inference_steps=2, height=64, width=64, output_type="np",
                    generator=torch.Generator("cpu").manual_seed(seed))


def test_scale_zero_reproduces_the_diffusers_inpainting_pipeline_exactly():
    pipe = sd15_pipeline()
    inputs = TestPVAInpaintPipeline().get_inputs()
    ours = pipe(**inputs, identity_scale=0.0).images
    inputs.pop("face_embeds")
    inputs["generator"] = torch.Generator("cpu").manual_seed(0)
    base = StableDiffusionInpaintPipeline(**_eval(tiny_sd15_components(0, in_channels=9)), requires_safety_checker=False)
    base.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(ours, base(**inputs, guidance_scale=7.5).images)


def test_identity_changes_the_inpainted_region():
    pipe = sd15_pipeline()
    check = TestPVAInpaintPipeline()
    a = check.run(pipe)
    b = check.run(pipe, face_embeds=FACE_B)
    plain = check.run(pipe, identity_scale=0.0)
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - plain).max() > 1e-3


def test_unmasked_latents_follow_the_inpainting_blend_rule():
    """4-channel UNet: outside the mask the final latents are the image's own latents, whatever
    the identity (diffusers' rule `latents = (1 - mask) * image_latents_t + mask * latents`)."""
    pipe = sd15_pipeline(in_channels=4)
    check = TestPVAInpaintPipeline()
    latents = {name: check.run(pipe, output_type="latent", face_embeds=face)
               for name, face in (("a", FACE_A), ("b", FACE_B))}
    size = latents["a"].shape[-1]
    lo, hi = 16 * size // 64 - 1, 48 * size // 64 + 1  # the mask 16:48 of 64 px, one latent pixel wider
    keep = torch.ones(1, 1, size, size, dtype=torch.bool)
    keep[..., lo:hi, lo:hi] = False
    outside = keep.expand_as(latents["a"])
    torch.testing.assert_close(latents["a"][outside], latents["b"][outside], rtol=0, atol=0)
    assert (latents["a"][~outside] - latents["b"][~outside]).abs().max() > 1e-4


def test_official_layout_loads_unchanged_and_gives_the_same_images(tmp_path):
    pipe = sd15_pipeline(with_adapter=False)
    with seeded(4):
        adapter = _perturb(PVAAdapter.for_unet(pipe.unet, num_tokens=0, num_layers=1, num_heads=2,
                                               feedforward_dim=32)).eval()
    path = tmp_path / "FPIP.bin"
    torch.save({**official_state_dict(adapter), "modifier_vec": torch.zeros(32)}, path)
    pipe.register_modules(pva_adapter=adapter)
    pipe._install_pva_processors()
    check = TestPVAInpaintPipeline()
    expected = check.run(pipe)
    pipe.unload_pva()
    pipe.load_pva(path, num_heads=2)
    np.testing.assert_array_equal(check.run(pipe), expected)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    pipe = sd15_pipeline(with_adapter=False)
    with seeded(4):
        adapter = PVAAdapter.for_unet(pipe.unet, num_tokens=0, num_layers=1, num_heads=2, feedforward_dim=32)
    good = official_state_dict(adapter)
    missing = {"transform_network": good["transform_network"], "unet": dict(list(good["unet"].items())[1:])}
    with pytest.raises(CheckpointError, match="missing key"):
        pipe.load_pva(missing, num_heads=2)
    wrong = {"transform_network": good["transform_network"],
             "unet": {**good["unet"], "down_blocks.9.attentions.0.transformer_blocks.0.attn2.to_visual_q.weight": torch.zeros(1)}}
    with pytest.raises(CheckpointError, match="another UNet"):
        pipe.load_pva(wrong, num_heads=2)
    with pytest.raises(CheckpointError, match="FPIP"):
        pipe.load_pva({"image_proj": {}, "ip_adapter": {}})
    corrupt = tmp_path / "FPIP.bin"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        pipe.load_pva(corrupt)
    with pytest.raises(IdgenError, match="load_pva"):
        sd15_pipeline(with_adapter=False)(**TestPVAInpaintPipeline().get_inputs())


def test_bad_call_inputs():
    pipe = sd15_pipeline()
    inputs = TestPVAInpaintPipeline().get_inputs()
    with pytest.raises(IdgenError, match="at most one"):
        pipe(**inputs, face_image="x.jpg")
    with pytest.raises(IdgenError, match="identity_scale must be between 0.0 and"):
        pipe(**inputs | {"identity_scale": -1.0})
    inputs.pop("face_embeds")
    with pytest.raises(IdgenError, match="person to inpaint"):
        pipe(**inputs)
    with pytest.raises(IdgenError, match=r"\[512\]"):
        pipe(**inputs, face_embeds=np.zeros((1, 128), np.float32))


def sdxl_pipeline() -> StableDiffusionXLPVAInpaintPipeline:
    pipe = StableDiffusionXLPVAInpaintPipeline(**_eval(tiny_sdxl_components(0, in_channels=9)))
    pipe.set_progress_bar_config(disable=True)
    with seeded(3):
        _perturb(pipe.init_pva(**ENCODER)).eval()
    return pipe


class TestPVAInpaintXLPipeline(TestPVAInpaintPipeline):
    def get_pipeline(self):
        return sdxl_pipeline()


def test_sdxl_inpainting():
    pipe = sdxl_pipeline()
    image, mask = _image_and_mask()
    inputs = dict(prompt="photo of a person", image=image, mask_image=mask, num_inference_steps=2, height=64,
                  width=64, output_type="np")

    def run(**kw):
        return pipe(**inputs, generator=torch.Generator("cpu").manual_seed(0), **kw).images

    base = StableDiffusionXLInpaintPipeline(**_eval(tiny_sdxl_components(0, in_channels=9)))
    base.set_progress_bar_config(disable=True)
    expected = base(**inputs, generator=torch.Generator("cpu").manual_seed(0), guidance_scale=7.5).images
    np.testing.assert_array_equal(run(face_embeds=FACE_A, identity_scale=0.0), expected)
    assert np.abs(run(face_embeds=FACE_A) - run(face_embeds=FACE_B)).max() > 1e-3


def test_sdxl_from_pipe_keeps_the_identity_and_the_signature_is_explicit():
    pipe = sdxl_pipeline()
    parameters = inspect.signature(StableDiffusionXLPVAInpaintPipeline.__call__).parameters
    assert not [name for name in TEXT_CALL_ARGUMENTS if name not in parameters]
    image, mask = _image_and_mask()
    inputs = dict(prompt="photo of a person", image=image, mask_image=mask, face_embeds=FACE_A, num_inference_steps=2,
                  height=64, width=64, output_type="np")
    before = pipe(**inputs, generator=torch.Generator("cpu").manual_seed(0)).images
    moved = StableDiffusionXLPVAInpaintPipeline.from_pipe(pipe)
    moved.set_progress_bar_config(disable=True)
    assert moved.pva_adapter is pipe.pva_adapter
    np.testing.assert_allclose(moved(**inputs, generator=torch.Generator("cpu").manual_seed(0)).images, before, atol=1e-5)


def test_default_scale(tmp_path):
    pipe = sd15_pipeline()
    check = TestPVAInpaintPipeline()
    half = check.run(pipe, identity_scale=0.5)
    pipe.set_identity_scale(0.5)
    np.testing.assert_array_equal(check.run(pipe), half)
    assert StableDiffusionPVAInpaintPipeline.from_pipe(pipe).config.identity_scale == 0.5
    pipe.save_pretrained(tmp_path)
    assert StableDiffusionPVAInpaintPipeline.from_pretrained(tmp_path).config.identity_scale == 0.5
    with pytest.raises(IdgenError, match=">= 0"):
        pipe.set_identity_scale(float("nan"))


def test_adapter_inputs_old_scale_name_and_token_width():
    pipe = sd15_pipeline()
    tokens = torch.zeros(1, 4, 32)
    with pytest.warns(FutureWarning, match="use `identity_scale`"):
        assert pipe.pva_adapter.inputs(tokens, scale=0.5).identity_scale == 0.5
    with pytest.raises(IdgenError, match="give only `identity_scale`"):
        pipe.pva_adapter.inputs(tokens, scale=0.5, identity_scale=0.5)
    with pytest.raises(IdgenError, match=r"\[B, T, 32\]"):
        pipe(**TestPVAInpaintPipeline().get_inputs() | {"face_embeds": None, "identity_tokens": torch.zeros(1, 4, 7)})
    with pytest.raises(IdgenError, match="unknown PVA encoder settings"):
        sd15_pipeline(with_adapter=False).init_pva(heads=2)


def test_official_key_map_round_trips():
    unet = tiny_sd15_components(0, in_channels=9)["unet"]
    with seeded(4):
        adapter = PVAAdapter.for_unet(unet, num_tokens=0, num_layers=1, num_heads=2, feedforward_dim=32)
    converted = convert_official_state_dict(official_state_dict(adapter), adapter)
    own = adapter.state_dict()
    assert converted.keys() == own.keys() and all(torch.equal(converted[k], own[k]) for k in own)
    assert "transform_network" in official_state_dict(adapter) and "0.weight" in official_state_dict(adapter)["transform_network"]
