"""InstantID pipelines (SDXL and the SD1.5 architecture) on tiny models, CPU.

The parity case is the acceptance test: official weights layout + official math -> the official
output. The other tests pin what the identity branch and the IdentityNet do and do not change.
"""

import copy
import functools
import inspect
import json

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    EulerDiscreteScheduler,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from idgen import conditioning
from idgen.adapters.instantid import InstantIDAdapter, InstantIDAttnProcessor, ResamplerConfig, official_state_dict
from idgen.errors import IdgenError
from idgen.face.types import Face
from idgen.pipelines import StableDiffusionXLInstantIDPipeline, StableDiffusionInstantIDPipeline

from pipeline_checks import PipelineChecks
from conftest import SHARED

CASE_DIR = SHARED / "parity" / "instantid"


@functools.lru_cache(maxsize=None)
def _parity_parts():
    case = json.loads((CASE_DIR / "case.json").read_text())
    tok = CLIPTokenizer.from_pretrained(CASE_DIR / "tokenizer")
    parts = dict(
        vae=AutoencoderKL.from_pretrained(CASE_DIR / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(CASE_DIR / "text_encoder"),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(CASE_DIR / "text_encoder_2"),
        tokenizer=tok,
        tokenizer_2=tok,
        unet=UNet2DConditionModel.from_pretrained(CASE_DIR / "unet"),
        controlnet=ControlNetModel.from_pretrained(CASE_DIR / "controlnet"),
        scheduler=EulerDiscreteScheduler.from_pretrained(CASE_DIR / "scheduler"),
    )
    return case, parts


def sdxl_components():
    """Fresh copies of the parity case's tiny SDXL components (loaded once per session)."""
    _, parts = _parity_parts()
    return {k: (v if k.startswith("tokenizer") else copy.deepcopy(v)) for k, v in parts.items()}


def make_pipeline(load_adapter=True):
    case, _ = _parity_parts()
    pipe = StableDiffusionXLInstantIDPipeline(**sdxl_components())
    if load_adapter:
        pipe.load_instantid(CASE_DIR / "ip-adapter.bin", resampler_config=case["resampler"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


FACE = np.load(CASE_DIR / "face_embeds.npy")
KPS = Image.open(CASE_DIR / "kps.png").convert("RGB")
OTHER_FACE = np.random.default_rng(1).normal(0, 20, (1, 512)).astype(np.float32)


def inputs(seed=0, **overrides):
    base = dict(
        prompt="photo of a person", negative_prompt="low quality", face_embeds=FACE, image=KPS,
        height=64, width=64, num_inference_steps=2, guidance_scale=5.0, identity_scale=0.8,
        controlnet_conditioning_scale=0.8, generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
    )
    base.update(overrides)
    return base


def run(pipe, **overrides):
    return pipe(**inputs(**overrides)).images


# -- acceptance: the official output ----------------------------------------------------------


def test_parity_with_official_instantid():
    case, _ = _parity_parts()
    pipe = make_pipeline()
    args = dict(case["case"])
    seed = args.pop("seed")
    args["identity_scale"] = args.pop("ip_adapter_scale")  # case.json keeps the official name
    out = pipe(
        face_embeds=np.load(CASE_DIR / "face_embeds.npy"), image=Image.open(CASE_DIR / "kps.png"),
        generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **args,
    ).images
    expected = np.load(CASE_DIR / "expected.npy")
    assert out.shape == expected.shape == (1, 64, 64, 3)
    diff = float(np.abs(out - expected).max())
    print(f"InstantID parity max abs diff: {diff:.3e}")
    assert diff <= 1e-4


# -- what the identity branch and the IdentityNet change ---------------------------------------


def test_scales_zero_equal_plain_sdxl():
    pipe = make_pipeline()
    ours = run(pipe, identity_scale=0.0, controlnet_conditioning_scale=0.0)
    comps = sdxl_components()
    comps.pop("controlnet")
    plain = StableDiffusionXLPipeline(**comps, add_watermarker=False)
    plain.set_progress_bar_config(disable=True)
    ref = plain(
        prompt="photo of a person", negative_prompt="low quality", height=64, width=64, num_inference_steps=2,
        guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(0), output_type="np",
    ).images
    np.testing.assert_array_equal(ours, ref)


def test_identity_scale_zero_is_controlnet_with_identity_tokens_as_context():
    """Identity scale 0 == diffusers' ControlNet pipeline whose ControlNet sees the identity tokens
    (zero-embedding tokens for the negative half) instead of the text; with the text it differs."""
    pipe = make_pipeline()
    ours = run(pipe, identity_scale=0.0)
    emb = torch.from_numpy(FACE).reshape(1, -1, 512)
    with torch.no_grad():
        tokens = pipe.identity_adapter(torch.cat([torch.zeros_like(emb), emb]))

    def reference(context):
        comps = sdxl_components()
        cn = comps["controlnet"]
        if context is not None:
            forward = cn.forward
            cn.forward = lambda *a, encoder_hidden_states=None, **kw: forward(*a, encoder_hidden_states=context, **kw)
        ref_pipe = StableDiffusionXLControlNetPipeline(**comps, add_watermarker=False)
        ref_pipe.set_progress_bar_config(disable=True)
        return ref_pipe(
            prompt="photo of a person", negative_prompt="low quality", image=KPS, height=64, width=64,
            num_inference_steps=2, guidance_scale=5.0, controlnet_conditioning_scale=0.8,
            generator=torch.Generator("cpu").manual_seed(0), output_type="np",
        ).images

    np.testing.assert_array_equal(ours, reference(tokens))
    assert np.abs(ours - reference(None)).max() > 1e-4


def test_identity_changes_the_image():
    pipe = make_pipeline()
    with_id = run(pipe)
    assert np.abs(with_id - run(pipe, identity_scale=0.0)).max() > 1e-3
    assert np.abs(with_id - run(pipe, face_embeds=OTHER_FACE)).max() > 1e-3
    # the IdentityNet alone (identity attention off) also depends on the embedding
    a = run(pipe, identity_scale=0.0)
    b = run(pipe, identity_scale=0.0, face_embeds=OTHER_FACE)
    assert np.abs(a - b).max() > 1e-4


def test_windows_block_scales_and_empty_mask_are_exact_switches():
    pipe = make_pipeline()
    off = run(pipe, identity_scale=0.0)
    np.testing.assert_array_equal(run(pipe, identity_start=0.0, identity_end=0.0), off)
    np.testing.assert_array_equal(run(pipe, identity_scale={"down": 0.0, "mid": 0.0, "up": 0.0}), off)
    zero_mask = {"face_embeds": FACE, "mask": np.zeros((64, 64), np.float32)}
    np.testing.assert_array_equal(run(pipe, face_embeds=None, identities=[zero_mask]), off)
    full = run(pipe)
    np.testing.assert_array_equal(run(pipe, identity_scale={"down": 0.8, "mid": 0.8, "up": 0.8}), full)
    half = run(pipe, identity_end=0.5)
    assert np.abs(half - full).max() > 1e-5 and np.abs(half - off).max() > 1e-5
    assert np.abs(run(pipe, identity_scale={"mid": 0.8}) - full).max() > 1e-5
    # IdentityNet window that contains no step (2 steps: [0, .5], [.5, 1]) == IdentityNet scale 0
    np.testing.assert_array_equal(
        run(pipe, control_guidance_start=0.9, control_guidance_end=1.0), run(pipe, controlnet_conditioning_scale=0.0)
    )


def test_set_identity_scale_is_the_default_and_is_saved(tmp_path):
    pipe = make_pipeline()
    pipe.set_identity_scale(0.3)
    assert pipe.config.identity_scale == 0.3
    np.testing.assert_array_equal(run(pipe, identity_scale=None), run(pipe, identity_scale=0.3))
    with pytest.warns(FutureWarning, match="set_identity_scale"):
        pipe.set_ip_adapter_scale(0.3)  # the old name, one release
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "identity_adapter" / "config.json").is_file()
    reloaded = StableDiffusionXLInstantIDPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.config.identity_scale == 0.3
    np.testing.assert_array_equal(run(reloaded, identity_scale=None), run(pipe, identity_scale=None))
    # the UNet folder holds no identity weights: they live in identity_adapter/ only
    from safetensors import safe_open

    with safe_open(str(tmp_path / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "_ip" in k or "processor" in k]


def test_negative_noise_changes_the_unconditional_branch_deterministically():
    pipe = make_pipeline()
    zero = run(pipe)
    noised = run(pipe, negative_noise=0.5)
    assert np.abs(noised - zero).max() > 1e-5
    np.testing.assert_array_equal(noised, run(pipe, negative_noise=0.5))


def test_multi_reference_modes():
    pipe = make_pipeline()
    refs = np.concatenate([FACE, OTHER_FACE, FACE * 0.5])
    np.testing.assert_array_equal(run(pipe, face_embeds=refs), run(pipe, face_embeds=refs.mean(0, keepdims=True)))
    normed = run(pipe, face_embeds=refs, reference_mode="normed_mean")
    concat = run(pipe, face_embeds=refs, reference_mode="concat")
    tokens, inputs_ = pipe.encode_identities(
        pipe.resolve_identities(refs, reference_mode="concat"), num_images=1, do_classifier_free_guidance=True,
        reference_mode="concat", identity_scale=0.8, negative_noise=0.0, generator=None, device="cpu",
        dtype=torch.float32,
    )
    assert tokens.shape == (2, 48, 64)
    assert np.isfinite(concat).all() and np.abs(concat - normed).max() > 1e-5


def test_multi_person_regions_keypoints_and_scales():
    pipe = make_pipeline()
    left, right = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    left[:, :32], right[:, 32:] = 1, 1
    kps_a = np.array([[10, 20], [22, 20], [16, 27], [11, 33], [21, 33]], np.float32)
    people = [
        {"face_embeds": FACE, "mask": left, "kps": kps_a, "scale": 0.8},
        {"face_embeds": OTHER_FACE, "mask": right, "kps": kps_a + [32, 0], "scale": 0.5},
    ]
    two = run(pipe, face_embeds=None, identities=people)
    assert two.shape == (1, 64, 64, 3) and np.isfinite(two).all()
    # second person's scale 0: that identity attention is exactly off (its region is plain text attention)
    people_off = [dict(people[0]), {**people[1], "scale": 0.0}]
    solo = run(pipe, face_embeds=None, identities=people_off)
    assert np.abs(two - solo).max() > 1e-5
    with pytest.raises(IdgenError, match=r"identities\[1\] needs a 'mask'"):
        run(pipe, face_embeds=None, identities=[people[0], {"face_embeds": OTHER_FACE, "kps": kps_a}])
    with pytest.raises(IdgenError, match=r"identities\[0\] has unknown keys \['weight'\]"):
        run(pipe, face_embeds=None, identities=[{"face_embeds": FACE, "weight": 1}])


def test_bad_inputs_name_the_argument():
    pipe = make_pipeline()
    with pytest.raises(IdgenError, match=r"face_embeds.*\(2, 128\).*512"):
        run(pipe, face_embeds=np.zeros((2, 128), np.float32))
    with pytest.raises(IdgenError, match="NaN"):
        run(pipe, face_embeds=np.full((1, 512), np.nan, np.float32))
    with pytest.raises(IdgenError, match="exactly one of `face_embeds` and `face_image`"):
        run(pipe, face_embeds=None)
    with pytest.raises(IdgenError, match="`image`.*`pose_image`"):
        run(pipe, pose_image=KPS)
    with pytest.raises(IdgenError, match="`height` must be a positive multiple of"):
        run(pipe, height=63)
    with pytest.raises(IdgenError, match=r"identities\[0\]\['mask'\]"):
        run(pipe, face_embeds=None, identities=[{"face_embeds": FACE, "mask": np.ones((2, 3, 4))}])
    with pytest.raises(IdgenError, match="no keypoints"):
        run(pipe, image=None)
    with pytest.raises(IdgenError, match="start/end"):
        run(pipe, identity_start=0.8, identity_end=0.2)
    with pytest.raises(IdgenError, match="load_instantid"):
        run(make_pipeline(load_adapter=False))
    narrow = StubAnalyzer(np.zeros((5, 2), np.float32), np.zeros(128, np.float32))
    narrow.embedding_dim = 128
    pipe.face_analyzer = narrow
    with pytest.raises(IdgenError, match="512-d raw ArcFace"):
        run(pipe, face_embeds=None, face_image=KPS)


def test_prompt_batch_generators_and_guess_mode():
    pipe = make_pipeline()
    gens = [torch.Generator("cpu").manual_seed(s) for s in (0, 1, 2, 3)]
    out = run(pipe, prompt=["photo of a person", "photo of id"], negative_prompt=None, num_images_per_prompt=2, generator=gens)
    assert out.shape == (4, 64, 64, 3) and np.abs(out[0] - out[1]).max() > 1e-4
    # same seed and prompt in a batch of 2 == a batch of 1 (identity tokens follow the text batch layout)
    single = run(pipe, generator=torch.Generator("cpu").manual_seed(0))
    pair = run(pipe, num_images_per_prompt=2, generator=[torch.Generator("cpu").manual_seed(0) for _ in range(2)])
    np.testing.assert_allclose(pair[0], single[0], atol=1e-5)
    np.testing.assert_allclose(pair[1], single[0], atol=1e-5)
    guess = run(pipe, guess_mode=True)
    assert np.isfinite(guess).all() and np.abs(guess - single).max() > 1e-5


def test_unload_restores_plain_attention():
    pipe = make_pipeline()
    pipe.unload_instantid()
    assert pipe.identity_adapter is None
    assert not any(isinstance(p, InstantIDAttnProcessor) for p in pipe.unet.attn_processors.values())
    assert all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())


def test_lora_loads_and_changes_the_output():
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = make_pipeline()
    before = run(pipe)
    donor = copy.deepcopy(_parity_parts()[1]["unet"])
    torch.manual_seed(0)
    donor.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    lora = {f"unet.{k}": v for k, v in get_peft_model_state_dict(donor).items()}
    pipe.load_lora_weights(lora, adapter_name="tiny")
    installed = []

    def count_identity_processors(p, step, timestep, tensors):
        installed.append(sum(isinstance(proc, InstantIDAttnProcessor) for proc in p.unet.attn_processors.values()))
        return tensors

    after = run(pipe, callback_on_step_end=count_identity_processors)
    assert np.abs(after - before).max() > 1e-4
    # the identity processors sit under the LoRA layers during the call, and only then
    assert installed == [8, 8]
    assert not any(isinstance(p, InstantIDAttnProcessor) for p in pipe.unet.attn_processors.values())
    np.testing.assert_array_equal(run(pipe, cross_attention_kwargs={"scale": 0.0}), before)


def test_model_cpu_offload_keeps_the_output():
    pipe = make_pipeline()
    ref = run(pipe)
    assert "identity_adapter->unet" in pipe.model_cpu_offload_seq
    pipe.enable_model_cpu_offload(device="cpu")
    np.testing.assert_array_equal(run(pipe), ref)
    np.testing.assert_array_equal(run(pipe), ref)  # hooks re-arm on the second call


# -- photos through a face analyzer --------------------------------------------------------------


class StubAnalyzer:
    """A face analyzer with fixed answers (the real ones are tested in idgen.face)."""

    name, embedding_dim, embedding_model = "stub", 512, "stub"

    def __init__(self, kps, embedding):
        self.kps, self.embedding, self.calls = kps, embedding, 0

    def get(self, image, select="largest"):
        self.calls += 1
        w, h = image.size
        return Face(bbox=[0, 0, w, h], score=1.0, kps=self.kps * [w / 128, h / 128], image_size=(w, h),
                    embedding=self.embedding, embedding_model="stub")


def test_face_image_and_pose_image_use_the_analyzer():
    pipe = make_pipeline()
    kps128 = np.array([[40, 50], [88, 50], [64, 75], [45, 100], [83, 100]], np.float32)
    pipe.face_analyzer = StubAnalyzer(kps128, FACE[0])
    photo = Image.new("RGB", (128, 128), (120, 100, 90))
    by_photo = run(pipe, face_embeds=None, face_image=photo, image=None)
    drawn = conditioning.draw_kps((64, 64), conditioning.fit_kps(kps128, (128, 128), (64, 64)))
    np.testing.assert_array_equal(by_photo, run(pipe, image=drawn))
    # a Face record carries its keypoints too
    face = pipe.face_analyzer.get(photo)
    np.testing.assert_array_equal(run(pipe, face_embeds=face, image=None), by_photo)
    # pose_image: keypoints from another photo, rescaled to the output size
    pose = Image.new("RGB", (256, 256))
    posed = run(pipe, pose_image=pose, image=None)
    np.testing.assert_array_equal(posed, by_photo)  # same relative keypoints -> same drawing


def test_multi_person_keypoint_image_combines_everyone():
    pipe = make_pipeline()
    kps_a = np.array([[10, 20], [22, 20], [16, 27], [11, 33], [21, 33]], np.float32)
    left, right = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    left[:, :32], right[:, 32:] = 1, 1
    people = [{"face_embeds": FACE, "mask": left, "kps": kps_a}, {"face_embeds": OTHER_FACE, "mask": right, "kps": kps_a + [32, 0]}]
    combined = np.maximum(np.asarray(conditioning.draw_kps((64, 64), kps_a)), np.asarray(conditioning.draw_kps((64, 64), kps_a + [32, 0])))
    np.testing.assert_array_equal(
        run(pipe, face_embeds=None, identities=people, image=None), run(pipe, face_embeds=None, identities=people, image=Image.fromarray(combined))
    )


# -- issue #13: one vocabulary, diffusers' loop through call-scoped hooks -------------------------


def test_old_argument_names_warn_and_give_the_same_image():
    pipe = make_pipeline()
    new = run(pipe, identity_scale=0.5, identity_start=0.0, identity_end=0.5)
    old_args = {k: v for k, v in inputs().items() if k != "identity_scale"}
    with pytest.warns(FutureWarning) as record:
        old = pipe(**old_args, ip_adapter_scale=0.5, identity_guidance_start=0.0, identity_guidance_end=0.5).images
    assert {str(w.message).split("`")[1] for w in record if w.category is FutureWarning} >= {
        "ip_adapter_scale", "identity_guidance_start", "identity_guidance_end"}
    np.testing.assert_array_equal(old, new)
    with pytest.raises(IdgenError, match="give only `identity_scale`"):
        run(pipe, ip_adapter_scale=0.5)  # both names at once
    with pytest.raises(IdgenError, match=r"unexpected arguments \['callback_steps'\]"):
        run(pipe, callback_steps=1)


def test_call_signatures_are_explicit():
    """Every argument of the diffusers pipeline underneath is named in the signature (not only
    reachable through **kwargs), next to the identity vocabulary."""
    from diffusers import (
        StableDiffusionControlNetInpaintPipeline,
        StableDiffusionControlNetPipeline,
        StableDiffusionXLControlNetImg2ImgPipeline,
        StableDiffusionXLControlNetInpaintPipeline,
    )

    from idgen.pipelines import (
        StableDiffusionInstantIDInpaintPipeline,
        StableDiffusionXLInstantIDImg2ImgPipeline,
        StableDiffusionXLInstantIDInpaintPipeline,
    )

    identity = {"face_embeds", "face_image", "identities", "reference_mode", "identity_scale", "identity_start",
                "identity_end", "negative_noise"}
    pairs = [
        (StableDiffusionXLInstantIDPipeline, StableDiffusionXLControlNetPipeline),
        (StableDiffusionInstantIDPipeline, StableDiffusionControlNetPipeline),
        (StableDiffusionXLInstantIDInpaintPipeline, StableDiffusionXLControlNetInpaintPipeline),
        (StableDiffusionInstantIDInpaintPipeline, StableDiffusionControlNetInpaintPipeline),
        (StableDiffusionXLInstantIDImg2ImgPipeline, StableDiffusionXLControlNetImg2ImgPipeline),
    ]
    for ours, theirs in pairs:
        names = set(inspect.signature(ours.__call__).parameters)
        wanted = set(inspect.signature(theirs.__call__).parameters)  # ip_adapter_image*: the style adapter's
        assert wanted <= names, (ours.__name__, sorted(wanted - names))
        assert identity <= names and "ip_adapter_scale" not in names, ours.__name__


def test_prompt_embeds_twins_give_the_same_image():
    pipe = make_pipeline()
    embeds = pipe.encode_prompt(
        "photo of a person", device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=True,
        negative_prompt="low quality",
    )
    names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    twin = run(pipe, prompt=None, negative_prompt=None, **dict(zip(names, embeds)))
    np.testing.assert_array_equal(twin, run(pipe))
    # the batch comes from the embeddings when there is no prompt
    pair = run(pipe, prompt=None, negative_prompt=None, generator=[torch.Generator("cpu").manual_seed(0) for _ in range(2)],
               **{n: torch.cat([e, e]) for n, e in zip(names, embeds)})
    assert pair.shape[0] == 2
    np.testing.assert_allclose(pair[1], twin[0], atol=1e-5)


def test_portrait_photo_sizes_the_output_and_keypoints_are_not_stretched():
    """Fault 5: no size given -> the photo's aspect ratio (official demo rule, here at the tiny
    UNet's native 64 px: long side 80, multiples of 4); a given size -> keypoints fitted, not stretched."""
    pipe = make_pipeline()
    kps128 = np.array([[40, 50], [88, 50], [64, 75], [45, 100], [83, 100]], np.float32)
    pipe.face_analyzer = StubAnalyzer(kps128, FACE[0])
    portrait = Image.new("RGB", (96, 128))
    people = pipe.resolve_identities(face_image=portrait)
    drawn, width, height = pipe.keypoint_condition(people, None, None, None)
    assert (width, height) == conditioning.output_size_for((96, 128), min_side=64, max_side=80, base=4) == (60, 80)
    photo_kps = kps128 * [96 / 128, 1.0]  # what the stub finds in the portrait
    fitted = conditioning.fit_kps(photo_kps, (96, 128), (60, 80))
    np.testing.assert_allclose(fitted, photo_kps * 0.625, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(conditioning.draw_kps((60, 80), fitted)))
    out = run(pipe, face_embeds=None, face_image=portrait, image=None, width=None, height=None)
    assert out.shape == (1, 80, 60, 3)
    # a square output: one scale for x and y, centred (eye distance / eye-mouth distance kept)
    square, _, _ = pipe.keypoint_condition(people, None, 64, 64)
    fitted = conditioning.fit_kps(photo_kps, (96, 128), (64, 64))
    np.testing.assert_allclose(fitted, photo_kps * 0.5 + [8, 0], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(square), np.asarray(conditioning.draw_kps((64, 64), fitted)))
    assert not np.array_equal(np.asarray(square), np.asarray(conditioning.draw_kps((64, 64), conditioning.resize_kps(photo_kps, (96, 128), (64, 64)))))
    # only one side given: the other follows the photo's aspect ratio
    assert pipe.keypoint_condition(people, None, 48, None)[1:] == (48, 64)


def test_attention_slicing_keeps_the_identity():
    """Fault 11: slicing used to remove the identity processors (KeyError, or identity silently off)."""
    pipe = make_pipeline()
    ref, off = run(pipe), run(pipe, identity_scale=0.0)
    pipe.enable_attention_slicing()
    for scale in (None, 0.8):  # configured (0.8 after loading) and explicit
        sliced = run(pipe, identity_scale=scale)
        np.testing.assert_allclose(sliced, ref, atol=1e-4)
        assert np.abs(sliced - off).max() > 1e-3
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"SlicedAttnProcessor"}  # put back
    pipe.disable_attention_slicing()
    np.testing.assert_array_equal(run(pipe), ref)


def test_controlnet_none_is_accepted_and_a_call_names_it():
    """Fault 14: like diffusers, a pipeline may be built without the IdentityNet (e.g. for its text encoders)."""
    case, _ = _parity_parts()
    comps = sdxl_components()
    comps.pop("controlnet")
    pipe = StableDiffusionXLInstantIDPipeline(**comps)
    assert pipe.controlnet is None
    assert pipe.encode_prompt("photo", device=torch.device("cpu"))[0].shape[-1] == 64
    pipe.load_instantid(CASE_DIR / "ip-adapter.bin", resampler_config=case["resampler"])
    with pytest.raises(IdgenError, match="no IdentityNet.*controlnet=None"):
        run(pipe)
    with pytest.raises(IdgenError, match=r"controlnet\[1\] \(an extra ControlNet\) must be a diffusers ControlNetModel"):
        StableDiffusionXLInstantIDPipeline(**comps, controlnet=[_parity_parts()[1]["controlnet"], comps["unet"]])


def test_shared_components_leave_the_base_pipeline_unchanged():
    """Fault 15a: the identity processors live for one call; a pipeline sharing the UNet
    (`**base.components`, `from_pipe`) keeps its own processors and outputs, bit for bit."""
    from diffusers.models.attention_processor import AttnProcessor

    case, _ = _parity_parts()
    comps = sdxl_components()
    controlnet = comps.pop("controlnet")
    base = StableDiffusionXLPipeline(**comps, add_watermarker=False)
    base.set_progress_bar_config(disable=True)
    base.unet.set_attn_processor(AttnProcessor())  # not the SDPA math of the identity processors

    def plain():
        return base(prompt="photo of a person", height=64, width=64, num_inference_steps=2,
                    generator=torch.Generator("cpu").manual_seed(0), output_type="np").images

    before = plain()
    shared = StableDiffusionXLInstantIDPipeline(**base.components, controlnet=controlnet)
    piped = StableDiffusionXLInstantIDPipeline.from_pipe(base, controlnet=controlnet)
    assert piped.unet is base.unet and piped.controlnet is controlnet
    outputs = []
    for pipe in (shared, piped):
        pipe.load_instantid(CASE_DIR / "ip-adapter.bin", resampler_config=case["resampler"])
        pipe.set_progress_bar_config(disable=True)
        outputs.append(run(pipe))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert all(type(p) is AttnProcessor for p in base.unet.attn_processors.values())
    assert not base.unet._forward_pre_hooks and not controlnet._forward_pre_hooks
    np.testing.assert_array_equal(plain(), before)
    assert StableDiffusionXLInstantIDPipeline.from_pipe(base).controlnet is None


# -- generic checks ------------------------------------------------------------------------------


class TestInstantIDSDXLChecks(PipelineChecks):
    def get_pipeline(self):
        return make_pipeline()

    def get_inputs(self, seed=0):
        return inputs(seed)


# -- the SD1.5 architecture ------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _sd15_parts():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=8,
    )
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:  # zero-initialised: randomise
        torch.nn.init.normal_(conv.weight, std=0.1)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=524, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=522, eos_token_id=523, pad_token_id=523,
    ))
    _, xl = _parity_parts()
    adapter = InstantIDAdapter.for_unet(
        unet, ResamplerConfig(dim=32, depth=1, dim_head=8, heads=4, num_queries=16, embedding_dim=512, output_dim=32, ff_mult=2)
    )
    official = official_state_dict(adapter)  # the official file layout, as idgen's trainer writes it
    return dict(vae=xl["vae"], text_encoder=text_encoder, tokenizer=xl["tokenizer"], unet=unet, controlnet=controlnet,
                scheduler=xl["scheduler"]), official


def make_sd15_pipeline():
    parts, official = _sd15_parts()
    pipe = StableDiffusionInstantIDPipeline(**{k: (v if k == "tokenizer" else copy.deepcopy(v)) for k, v in parts.items()})
    pipe.load_instantid(official, resampler_config=dict(dim=32, depth=1, dim_head=8, heads=4, ff_mult=2))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd15_inputs(seed=0, **overrides):
    base = inputs(seed, **overrides)
    return base


class TestInstantIDSD15Checks(PipelineChecks):
    def get_pipeline(self):
        return make_sd15_pipeline()

    def get_inputs(self, seed=0):
        return sd15_inputs(seed)

    def test_identity_and_identitynet_matter(self):
        pipe = make_sd15_pipeline()
        assert sorted(pipe.identity_adapter.layer_names) == [1, 3, 5, 7]  # down 1 + up 2 + mid 1 cross-attentions
        full = self.run(pipe)
        assert np.abs(full - self.run(pipe, identity_scale=0.0)).max() > 1e-4
        assert np.abs(full - self.run(pipe, face_embeds=OTHER_FACE)).max() > 1e-4
        assert np.abs(full - self.run(pipe, controlnet_conditioning_scale=0.0)).max() > 1e-4
