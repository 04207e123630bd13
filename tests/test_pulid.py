"""PuLID (v1, v1.1) for SDXL on tiny models, CPU.

Parity: the references in tests/data/parity/pulid-v1*/ (pulid-v1.1-multi/: two ID photos) were made by
the official code (bench/parity/pulid.py) on the same seeded tiny weights; the rest pins what the ID
branch does.
"""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

from idgen.adapters.pulid import PuLIDAttentionInputs, PuLIDAttnProcessor, load_eva_clip, load_pulid_adapter
from idgen.adapters.pulid.config import MODES, TINY_EVA, TINY_ID_ENCODER_V1, TINY_ID_FORMER_V11
from idgen.face import align_face
from idgen.face.types import Face
from idgen.errors import CheckpointError, IdgenError, ModelNotFoundError
from idgen.pipelines.pipeline_stable_diffusion_xl_pulid import (
    StableDiffusionXLPuLIDPipeline,
    official_scheduler,
    official_v11_scheduler,
)
from idgen.testing import tiny_sdxl_components
from idgen.testing.pulid import random_pulid_state_dict, tiny_eva_clip

DATA = Path(__file__).parent / "data" / "parity"
ENCODERS = {"v1": TINY_ID_ENCODER_V1, "v1.1": TINY_ID_FORMER_V11}
TOL = 1e-4


def case(version):
    folder = DATA / f"pulid-{version}"
    arrays = {p.stem: torch.from_numpy(np.load(p)) for p in folder.glob("*.npy")}
    return json.loads((folder / "case.json").read_text()), arrays


def make_pipeline(version="v1", seed=0):
    components = tiny_sdxl_components(seed)
    pipe = StableDiffusionXLPuLIDPipeline(**components, add_watermarker=False)
    pipe.scheduler = official_scheduler(pipe.scheduler.config)
    pipe.load_pulid(random_pulid_state_dict(pipe.unet, version, seed), eva_clip=tiny_eva_clip(seed + 1),
                    encoder=ENCODERS[version])
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.lru_cache(maxsize=None)
def tokens(version):
    pipe = make_pipeline(version)
    _, a = case(version)
    return pipe.encode_identity(a["arcface"], a["eva_input"])


def run(pipe, **kwargs):
    args = dict(prompt="a photo of a person", negative_prompt="", num_inference_steps=2, guidance_scale=1.2,
                height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(0))
    if "face_embeds" not in kwargs and "id_embeds" not in kwargs and "face_image" not in kwargs:
        args["id_embeds"] = tokens(pipe.pulid_adapter.version)
    args.update(kwargs)
    return pipe(**args).images


def maxdiff(a, b):
    a, b = (torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else np.asarray(x)) for x in (a, b))
    return float((a.float() - b.float()).abs().max())


# -- parity with the official code ----------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v1.1"])
def test_eva_tower_and_id_tokens_match_official(version):
    meta, a = case(version)
    with torch.no_grad():
        embedding, _ = tiny_eva_clip(1)(a["eva_input"])
    assert maxdiff(embedding / embedding.norm(dim=1, keepdim=True), a["eva_embedding"]) <= TOL
    negative, positive = tokens(version)
    assert positive.shape == a["id_tokens"].shape
    assert maxdiff(positive, a["id_tokens"]) <= TOL and maxdiff(negative, a["uncond_tokens"]) <= TOL


@pytest.mark.parametrize("version", ["v1", "v1.1"])
def test_id_attention_matches_official_in_every_mode(version):
    meta, a = case(version)
    pipe = make_pipeline(version)
    attn = pipe.unet.get_submodule(meta["attn_layer"])
    negative, positive = tokens(version)
    for label, mode in meta["attn_modes"].items():
        kv = pipe.pulid_adapter.identity_kv(torch.cat([negative, positive]), mode["num_zero"])
        inputs = PuLIDAttentionInputs(kv=kv, scale=meta["id_scale"], ortho=mode["ortho"])
        with torch.no_grad():
            out = PuLIDAttnProcessor(meta["attn_index"])(attn, a["attn_hidden"], a["attn_text"], ip_hidden_states=inputs)
        assert maxdiff(out, a[f"attn_{label}"]) <= TOL, label


def test_v1_generation_matches_official():
    meta, a = case("v1")
    assert MODES["v1"]["fidelity"].num_zero == 8
    image = run(make_pipeline("v1"), identity_scale=meta["generation"]["id_scale"], mode="fidelity")
    assert maxdiff(image, a["image"]) <= TOL


def test_v11_generation_matches_official_sampler():
    meta, a = case("v1.1")
    g = meta["generation"]
    pipe = make_pipeline("v1.1")
    pipe.scheduler = official_v11_scheduler(pipe.scheduler.config)
    sigma_max = g["sigma_max"]  # the official start latents noise * sigma_max, in diffusers' (VP) scaling
    latents = a["noise"] * (sigma_max / (sigma_max**2 + 1) ** 0.5)
    size = (g["time_ids_size"], g["time_ids_size"])  # the official time ids (its latents are size // 8)
    image = run(pipe, num_inference_steps=g["num_inference_steps"], guidance_scale=g["guidance_scale"],
                latents=latents, original_size=size, target_size=size, identity_scale=g["id_scale"],
                num_zero=g["num_zero"], ortho=g["ortho"])
    assert maxdiff(image, a["image"]) <= TOL


# -- behaviour ------------------------------------------------------------------------------------
def test_identity_scale_zero_is_the_base_pipeline_exactly():
    pipe = make_pipeline()
    base = StableDiffusionXLPipeline(**{k: getattr(pipe, k) for k in (
        "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")}, add_watermarker=False)
    base.set_progress_bar_config(disable=True)
    expected = base(prompt="a photo of a person", negative_prompt="", num_inference_steps=2, guidance_scale=1.2,
                    height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_array_equal(run(pipe, identity_scale=0.0), expected)
    assert maxdiff(run(pipe), expected) > 1e-4


def test_identity_and_mode_change_the_output():
    pipe = make_pipeline()
    _, a = case("v1")
    one = run(pipe, face_embeds=a["arcface"][0].numpy(), id_image=np.full((64, 64, 3), 128, np.uint8))
    other = run(pipe, face_embeds=-a["arcface"][0].numpy(), id_image=np.full((64, 64, 3), 128, np.uint8))
    assert maxdiff(one, other) > 1e-4
    assert maxdiff(run(pipe, mode="extremely style"), run(pipe)) > 1e-5
    with pytest.raises(IdgenError, match="mode"):
        run(make_pipeline("v1.1"), mode="extremely style")


class StubAnalyzer:
    """A face analyzer with fixed answers (the real ones are tested in idgen.face)."""

    name, embedding_model = "stub", "stub"

    def __init__(self, embedding, dim=512):
        self.embedding, self.embedding_dim = embedding, dim

    def get(self, image, select="largest"):
        h, w = image.shape[:2]
        kps = np.array([[40, 50], [88, 50], [64, 75], [45, 100], [83, 100]], np.float32) * [w / 128, h / 128]
        return Face(bbox=[0, 0, w, h], score=1.0, kps=kps, image_size=(w, h), embedding=self.embedding)


def test_face_image_gives_the_arcface_embedding_and_the_aligned_crop():
    pipe = make_pipeline()
    _, a = case("v1")
    photo = np.random.default_rng(1).integers(0, 255, (96, 80, 3), dtype=np.uint8)
    pipe.face_analyzer = StubAnalyzer(a["arcface"][0].numpy())
    face = pipe.face_analyzer.get(photo)
    crop = align_face(photo, face.kps, size=512, mode="ffhq").image
    np.testing.assert_array_equal(run(pipe, face_image=photo),
                                  run(pipe, face_embeds=a["arcface"][0].numpy(), id_image=crop))
    pipe.face_analyzer = StubAnalyzer(np.ones(128, np.float32), dim=128)  # dlib's 128-d descriptor
    with pytest.raises(IdgenError, match="512-d"):
        run(pipe, face_image=photo)


def test_face_mask_whitens_the_background():
    pipe = make_pipeline()
    crop = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1
    plain, masked = pipe.eva_pixel_values(crop), pipe.eva_pixel_values(crop, mask)
    assert plain.shape == (1, 3, TINY_EVA["image_size"], TINY_EVA["image_size"])
    assert maxdiff(plain, masked) > 0.1
    with pytest.raises(IdgenError, match="face_mask"):
        pipe.eva_pixel_values(crop, np.zeros((8, 8)))


def test_a_face_parser_gives_the_official_white_background():
    from idgen.face.parsing import LABELS

    class Parser:  # a fixed parsing: face in the middle, cloth (background for PuLID) below, hair above
        def parse(self, crop):
            labels = np.full(crop.shape[:2], LABELS["skin"])
            labels[48:], labels[:8] = LABELS["cloth"], LABELS["hair"]
            return labels

    pipe, (_, a) = make_pipeline(), case("v1")
    crop = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    inputs = dict(face_embeds=a["arcface"][0].numpy(), id_image=crop)
    plain = run(pipe, **inputs)
    pipe.face_parser = Parser()
    mask = pipe.face_features_mask(crop)
    assert mask.dtype == bool and mask[:48].all() and not mask[48:].any()  # hair stays (label 17 is not whitened)
    parsed = run(pipe, **inputs)
    assert np.array_equal(parsed, run(pipe, **inputs, face_mask=mask)) and maxdiff(parsed, plain) > 1e-4


def test_save_and_reload_is_bit_identical(tmp_path):
    pipe = make_pipeline("v1.1")
    pipe.set_identity_scale(0.6)
    pipe.save_pretrained(tmp_path)
    reloaded = StableDiffusionXLPuLIDPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.config.identity_scale == 0.6 and reloaded.pulid_adapter.version == "v1.1"
    for name in ("pulid_adapter", "eva_clip"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(reloaded, name).state_dict()
        assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    np.testing.assert_array_equal(run(reloaded), run(pipe))


def test_swapped_scheduler_works():
    pipe = make_pipeline()
    official = run(pipe)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    euler = run(pipe)
    assert np.isfinite(euler).all() and maxdiff(euler, official) > 1e-5


def test_bad_files_give_clear_errors(tmp_path):
    pipe = make_pipeline()
    state_dict = random_pulid_state_dict(pipe.unet)
    broken = dict(state_dict)
    del broken["id_adapter.mapping_2.0.weight"]
    with pytest.raises(CheckpointError, match="id_adapter.mapping_2.0.weight"):
        load_pulid_adapter(broken, pipe.unet, encoder=TINY_ID_ENCODER_V1)
    with pytest.raises(CheckpointError, match="v1.1"):
        load_pulid_adapter(state_dict, pipe.unet, version="v1.1", encoder=TINY_ID_ENCODER_V1)
    with pytest.raises(CheckpointError, match="not a PuLID"):
        load_pulid_adapter({"foo.weight": torch.zeros(1)}, pipe.unet)
    junk = tmp_path / "pulid_v1.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="pulid_v1.bin"):
        load_pulid_adapter(junk, pipe.unet)
    with pytest.raises(ModelNotFoundError, match="EVA02_CLIP_L_336_psz14_s6B.pt"):
        load_eva_clip(tmp_path / "EVA02_CLIP_L_336_psz14_s6B.pt")
    fresh = StableDiffusionXLPuLIDPipeline(**tiny_sdxl_components(0), add_watermarker=False)
    with pytest.raises(ModelNotFoundError, match="EVA02_CLIP_L_336_psz14_s6B.pt"):
        fresh.load_pulid(state_dict, encoder=TINY_ID_ENCODER_V1)
    tower = {"visual." + k: v for k, v in tiny_eva_clip(1).state_dict().items()}
    tower["visual.blocks.3.attn.q_bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError, match="visual|blocks.3.attn.q_bias"):
        load_eva_clip(tower, TINY_EVA)
    with pytest.raises(IdgenError, match="identity_scale"):
        run(pipe, identity_scale=-1.0)
    with pytest.raises(IdgenError, match="id_image"):
        run(pipe, face_embeds=np.ones(512, np.float32))
    pipe.unload_pulid()
    with pytest.raises(IdgenError, match="load_pulid"):
        run(pipe, id_embeds=tokens("v1"))


def test_an_empty_negative_prompt_gives_finite_images():
    """SDXL zeroes the embeddings of an empty negative prompt: the text attention of the
    unconditional half is 0, where the official orthogonal projection divides 0 by 0."""
    pipe = make_pipeline("v1")
    images = run(pipe, negative_prompt=None, guidance_scale=1.5, mode="fidelity")
    assert np.isfinite(images).all()


# -- several ID photos ----------------------------------------------------------------------------
def multi_inputs(meta, a):
    """The two-photo case as pipeline inputs: raw ArcFace `[2, 512]`, the 2 crops, their face masks."""
    masks = [~np.isin(labels, meta["background_labels"]) for labels in a["parsing"].numpy()]
    return dict(face_embeds=a["arcface"].numpy(), id_image=list(a["crops"].numpy()), face_mask=masks)


def test_v11_several_photos_match_official_id_tokens():
    """Official `pipeline_v1_1.get_id_embedding([photo1, photo2])`: conditions `[1, 2, D]`, EVA hidden
    states concatenated, one IDFormer pass; the negative is the one-photo zero condition's."""
    meta, a = case("v1.1-multi")
    negative, positive = make_pipeline("v1.1")._identity_tokens(None, id_mix=None, **multi_inputs(meta, a))
    assert positive.shape == a["id_tokens"].shape == (1, TINY_ID_FORMER_V11["num_queries"], 64)
    assert maxdiff(positive, a["id_tokens"]) <= TOL and maxdiff(negative, a["uncond_tokens"]) <= TOL
    assert maxdiff(negative, tokens("v1.1")[0]) == 0  # as with one photo


def test_v11_several_photos_generation_matches_official_sampler():
    meta, a = case("v1.1-multi")
    g = meta["generation"]
    pipe = make_pipeline("v1.1")
    pipe.scheduler = official_v11_scheduler(pipe.scheduler.config)
    latents = a["noise"] * (g["sigma_max"] / (g["sigma_max"] ** 2 + 1) ** 0.5)
    size = (g["time_ids_size"], g["time_ids_size"])
    image = run(pipe, num_inference_steps=g["num_inference_steps"], guidance_scale=g["guidance_scale"],
                latents=latents, original_size=size, target_size=size, identity_scale=g["id_scale"],
                num_zero=g["num_zero"], ortho=g["ortho"], **multi_inputs(meta, a))
    assert maxdiff(image, a["image"]) <= TOL


def test_the_same_photo_twice_is_not_the_photo_once_as_in_the_official_code():
    """Neither official app averages. v1.1: twice doubles the IDFormer's condition tokens (its queries
    attend to them), so the 32 tokens change. v1 (`app.py`): each further photo adds tokens, its first
    5 (`id_mix=False`) or all 10 (`id_mix=True`), the same for the negative."""
    meta, a = case("v1.1-multi")
    inputs = multi_inputs(meta, a)
    first = {k: v[:1] for k, v in inputs.items()}
    twice = {k: [v[0], v[0]] for k, v in inputs.items()}
    pipe = make_pipeline("v1.1")
    _, once = pipe._identity_tokens(None, id_mix=None, **first)
    _, doubled = pipe._identity_tokens(None, id_mix=None, **twice)
    assert maxdiff(once, a["id_tokens_first"]) <= TOL and maxdiff(doubled, a["id_tokens_first_twice"]) <= TOL
    assert maxdiff(once, doubled) > 0.1

    _, v1 = case("v1")  # the official one-photo v1 tokens, combined as app.py does
    pipe = make_pipeline("v1")
    two = (v1["arcface"].repeat(2, 1), v1["eva_input"].repeat(2, 1, 1, 1))
    for id_mix, keep in ((False, 5), (True, 10)):
        negative, positive = pipe.encode_identity(*two, id_mix=id_mix)
        expected = [torch.cat([t, t[:, :keep]], dim=1) for t in (v1["uncond_tokens"], v1["id_tokens"])]
        assert positive.shape == (1, 10 + keep, 64)
        assert maxdiff(positive, expected[1]) <= TOL and maxdiff(negative, expected[0]) <= TOL
    image = run(pipe, face_embeds=v1["arcface"].repeat(2, 1).numpy(), id_image=[inputs["id_image"][0]] * 2, id_mix=True)
    assert np.isfinite(image).all() and maxdiff(image, run(pipe, face_embeds=v1["arcface"][0].numpy(),
                                                           id_image=inputs["id_image"][0])) > 1e-5


def test_a_list_of_photos_gives_their_embeddings_and_aligned_crops():
    pipe = make_pipeline("v1.1")
    _, a = case("v1.1-multi")
    photos = [np.random.default_rng(i).integers(0, 255, (96, 80, 3), dtype=np.uint8) for i in (1, 2)]
    pipe.face_analyzer = StubAnalyzer(a["arcface"][0].numpy())
    crops = [align_face(p, pipe.face_analyzer.get(p).kps, size=512, mode="ffhq").image for p in photos]
    arcface = np.stack([a["arcface"][0].numpy()] * 2)
    np.testing.assert_array_equal(run(pipe, face_image=photos), run(pipe, face_embeds=arcface, id_image=crops))


def test_several_photos_bad_input_gives_clear_errors():
    meta, a = case("v1.1-multi")
    inputs = multi_inputs(meta, a)
    pipe = make_pipeline("v1.1")
    pipe.face_analyzer = StubAnalyzer(a["arcface"][0].numpy())
    with pytest.raises(IdgenError, match="`face_image` is an empty list"):
        run(pipe, face_image=[])
    with pytest.raises(IdgenError, match="`id_image` is an empty list"):
        run(pipe, face_embeds=inputs["face_embeds"], id_image=[])
    with pytest.raises(IdgenError, match="face_embeds is empty"):
        run(pipe, face_embeds=[], id_image=inputs["id_image"])
    with pytest.raises(IdgenError, match="`face_embeds` has 2 embeddings and `id_image` 3 crops"):
        run(pipe, face_embeds=inputs["face_embeds"], id_image=inputs["id_image"] + inputs["id_image"][:1])
    with pytest.raises(IdgenError, match="`id_image` has 1 crops for the 2 photos"):
        run(pipe, face_image=inputs["id_image"], id_image=inputs["id_image"][:1])
    with pytest.raises(IdgenError, match="`face_mask` must be a list of 2 masks"):
        run(pipe, **{**inputs, "face_mask": inputs["face_mask"][0]})
    with pytest.raises(IdgenError, match="id_mix"):
        run(pipe, **inputs, id_mix=False)
