"""IP-Adapter-FaceID on SD1.5 (tiny models, CPU): parity with the official implementation, the
official checkpoint layouts at full size (meta device), bad input, and the pipeline's features.

Helpers here (`synthetic_faceid_state_dict`, `reference_tokens`) are also used by
`test_faceid_xl.py`. The adapter lives in the UNet: pipelines sharing it (components, `from_pipe`,
another VAE) share the adapter.
"""

import copy
import functools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from idgen.adapters.faceid import (
    FACEID_ADAPTER_NAME,
    expected_layout,
    load_faceid_into_unet,
)
from idgen.adapters.faceid.loader import unet_adapters
from idgen.checkpoint import load_checkpoint, split_prefixed
from idgen.errors import CheckpointError, IdgenError
from idgen.face.types import Face
from idgen.testing import random_faceid_state_dict
from idgen.testing.released import SD15_UNET, SDXL_UNET, meta_unet
from idgen.pipelines import StableDiffusionFaceIDInpaintPipeline, StableDiffusionFaceIDPipeline

from conftest import SHARED
from pipeline_checks import PipelineChecks, parity_parts, parity_sd15_components

CASE_DIR = SHARED / "parity" / "faceid-sd15"
LAYOUTS = SHARED / "layouts" / "ip-adapter-faceid.json"
FACE = np.load(CASE_DIR / "face_embeds.npy")  # [1, 512], normalised
OTHER_FACE = np.random.default_rng(7).normal(size=(1, 512)).astype(np.float32)


# -- tiny components ---------------------------------------------------------------------------


def sd15_components():
    return parity_sd15_components(CASE_DIR)


@functools.lru_cache(maxsize=None)
def _wide_parts():
    """Tiny SD1.5 with cross_attention_dim 64: FaceID-Plus's resampler has width/64 heads, so the
    parity case's width 32 cannot hold a Plus checkpoint."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=64,
        attention_head_dim=8, norm_num_groups=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=524, hidden_size=64, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=522, eos_token_id=523, pad_token_id=523, projection_dim=64,
    ))
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=32,
    ))
    parts = parity_parts(CASE_DIR)
    return dict(vae=parts["vae"], text_encoder=text_encoder, tokenizer=parts["tokenizer"], unet=unet,
                scheduler=parts["scheduler"]), image_encoder


def wide_components():
    parts, encoder = _wide_parts()
    return {k: (v if k == "tokenizer" else copy.deepcopy(v)) for k, v in parts.items()}, copy.deepcopy(encoder)


def synthetic_faceid_state_dict(unet, variant="faceid", *, clip_dim=None, rank=8, seed=0):
    """A random state dict in the official layout for `unet` (see `idgen.testing`)."""
    return random_faceid_state_dict(unet, variant, clip_dim=clip_dim, rank=rank, seed=seed)


def _mlp_tokens(sd, embeds, tokens):
    x = torch.nn.functional.linear(embeds, sd["proj.0.weight"], sd["proj.0.bias"])
    x = torch.nn.functional.linear(torch.nn.functional.gelu(x), sd["proj.2.weight"], sd["proj.2.bias"])
    d = sd["norm.weight"].shape[0]
    x = x.reshape(-1, tokens, d)
    return torch.nn.functional.layer_norm(x, (d,), sd["norm.weight"], sd["norm.bias"])


def reference_tokens(sd, embeds, clip=None, *, tokens=4, shortcut=False, s_scale=1.0):
    """Identity tokens by the official formulas (MLPProjModel / ProjPlusModel), written from the
    official module definitions directly on the state dict, independent of diffusers' modules."""
    F = torch.nn.functional
    x = _mlp_tokens(sd, embeds, tokens)
    if clip is None:
        return x
    p = "perceiver_resampler."
    d = x.shape[-1]

    def ln(t, name):
        return F.layer_norm(t, (d,), sd[name + ".weight"], sd[name + ".bias"])

    feats = F.linear(clip, sd[p + "proj_in.weight"], sd[p + "proj_in.bias"])
    latents = x
    for i in range(4):
        q_ = f"{p}layers.{i}."
        feats_n, lat_n = ln(feats, q_ + "0.norm1"), ln(latents, q_ + "0.norm2")
        q = F.linear(lat_n, sd[q_ + "0.to_q.weight"])
        k, v = F.linear(torch.cat([feats_n, lat_n], dim=1), sd[q_ + "0.to_kv.weight"]).chunk(2, dim=-1)
        heads = q.shape[-1] // 64

        def split(t):
            return t.reshape(t.shape[0], t.shape[1], heads, 64).transpose(1, 2)

        w = (split(q) @ split(k).transpose(-1, -2) / 8.0).softmax(dim=-1)
        o = (w @ split(v)).transpose(1, 2).reshape(q.shape)
        latents = F.linear(o, sd[q_ + "0.to_out.weight"]) + latents
        h = F.layer_norm(latents, (d,), sd[q_ + "1.0.weight"], sd[q_ + "1.0.bias"])
        latents = F.linear(F.gelu(F.linear(h, sd[q_ + "1.1.weight"])), sd[q_ + "1.3.weight"]) + latents
    out = ln(F.linear(latents, sd[p + "proj_out.weight"], sd[p + "proj_out.bias"]), p + "norm_out")
    return x + s_scale * out if shortcut else out


def random_user_lora(unet, targets=("to_q", "to_v"), attention="attn2", rank=4, seed=3):
    """A user LoRA in diffusers' peft key format on `targets` of every `attention` layer."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in unet.attn_processors:
        if name.startswith("encoder_hid_proj") or not name.endswith(f"{attention}.processor"):
            continue
        module = name[: -len(".processor")]
        for target in targets:
            lin = unet.get_submodule(module).get_submodule(target)
            out[f"unet.{module}.{target}.lora_A.weight"] = torch.randn(rank, lin.in_features, generator=g)
            out[f"unet.{module}.{target}.lora_B.weight"] = torch.randn(lin.out_features, rank, generator=g)
    return out


def make_pipeline(load=True):
    pipe = StableDiffusionFaceIDPipeline(**sd15_components())
    if load:
        pipe.load_faceid(CASE_DIR / "ip-adapter-faceid.bin")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(seed=0, **overrides):
    base = dict(
        prompt="photo of a person", negative_prompt="monochrome, low quality", face_embeds=FACE,
        num_inference_steps=2, guidance_scale=6.0, height=64, width=64,
        generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
    )
    base.update(overrides)
    return base


def run(pipe, **overrides):
    return pipe(**inputs(**overrides)).images


def people(*entries):
    """Call arguments for several people: `(face_embeds, mask[, face_crop[, scale]])` per person."""
    keys = ("face_embeds", "mask", "face_crop", "scale")
    return {"face_embeds": None, "identities": [dict(zip(keys, entry)) for entry in entries]}


# -- 1. acceptance: the official output --------------------------------------------------------


def test_parity_with_official_faceid():
    case = json.loads((CASE_DIR / "case.json").read_text())["case"]
    pipe = make_pipeline()
    args = dict(case)
    seed = args.pop("seed")
    args["identity_scale"] = args.pop("scale")  # the official `generate`'s name
    face = np.load(CASE_DIR / "face_embeds.npy")
    out = pipe(face_embeds=face, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **args).images
    expected = np.load(CASE_DIR / "expected.npy")
    assert out.shape == expected.shape == (1, 64, 64, 3)
    diff = float(np.abs(out - expected).max())
    print(f"FaceID parity max abs diff: {diff:.3e}")
    assert diff <= 1e-4
    # the built-in LoRA is part of that math: without it the output is far off
    pipe.set_faceid_scale(lora_scale=0.0)
    off = pipe(face_embeds=face, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **args)
    assert np.abs(off.images - expected).max() > 1e-3


def test_checkpoint_round_trips_through_the_key_map():
    pipe = make_pipeline()
    raw = torch.load(CASE_DIR / "ip-adapter-faceid.bin", weights_only=True)
    back = pipe.faceid_state_dict()
    for part in ("image_proj", "ip_adapter"):
        assert list(back[part]) == list(raw[part])
        for key, value in raw[part].items():
            torch.testing.assert_close(back[part][key], value, rtol=0, atol=0)


def test_identity_tokens_follow_the_official_formula_and_zero_negative():
    pipe = make_pipeline()
    raw = torch.load(CASE_DIR / "ip-adapter-faceid.bin", weights_only=True)["image_proj"]
    emb = torch.from_numpy(FACE)
    with torch.no_grad():
        ours = pipe.unet.encoder_hid_proj([torch.cat([torch.zeros_like(emb), emb])[:, None]])[0][:, 0]
    torch.testing.assert_close(ours[1:], reference_tokens(raw, emb), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[:1], reference_tokens(raw, torch.zeros_like(emb)), rtol=1e-5, atol=1e-5)


# -- 2. scale 0, LoRA, unload: what equals the base exactly ------------------------------------


def inputs_without_face(**overrides):
    args = inputs(**overrides)
    args.pop("face_embeds")
    return args


def plain_pipeline(components):
    plain = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                    requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    return plain


def test_unload_restores_plain_stable_diffusion_exactly():
    pipe = make_pipeline()
    base_keys = set(parity_parts(CASE_DIR)["unet"].state_dict())
    with_faceid = run(pipe)
    pipe.unload_faceid()
    assert not pipe.faceid_loaded and pipe.unet.encoder_hid_proj is None
    assert set(pipe.unet.state_dict()) == base_keys  # no peft wrappers, no IP weights left
    base = plain_pipeline(sd15_components())(**inputs_without_face()).images
    np.testing.assert_array_equal(pipe(**inputs_without_face()).images, base)
    assert np.abs(with_faceid - base).max() > 1e-3


def test_scale_zero_equals_base_plus_faceid_lora_and_lora_zero_too():
    """Identity scale 0 is exactly diffusers' SD1.5 with the FaceID LoRA loaded by diffusers' own
    converter (`_load_ip_adapter_loras`); with the LoRA weight also 0 it is exactly the base."""
    pipe = make_pipeline()
    ours = run(pipe, identity_scale=0.0)
    comps = sd15_components()
    plain = plain_pipeline(comps)
    base = plain(**inputs_without_face()).images
    raw = torch.load(CASE_DIR / "ip-adapter-faceid.bin", weights_only=True)
    lora = comps["unet"]._load_ip_adapter_loras([raw])[0]
    plain.load_lora_weights(lora, adapter_name="ref")
    np.testing.assert_array_equal(ours, plain(**inputs_without_face()).images)
    pipe.set_faceid_scale(0.0, lora_scale=0.0)
    np.testing.assert_array_equal(run(pipe), base)


def test_identity_changes_output_and_two_faces_differ():
    pipe = make_pipeline()
    a, b, none = run(pipe), run(pipe, face_embeds=OTHER_FACE), run(pipe, identity_scale=0.0)
    assert np.abs(a - none).max() > 1e-3
    assert np.abs(a - b).max() > 1e-3


# -- 4. official layouts at full size, bad files -----------------------------------------------

OFFICIAL_FILES = {
    "ip-adapter-faceid_sd15.bin": (SD15_UNET, "faceid"),
    "ip-adapter-faceid-plusv2_sd15.bin": (SD15_UNET, "faceid-plusv2"),
    "ip-adapter-faceid_sdxl.bin": (SDXL_UNET, "faceid"),
}


@functools.lru_cache(maxsize=None)
def _manifest():
    return json.loads(LAYOUTS.read_text())


def meta_state_dict(name):
    manifest = _manifest()[name]
    return {part: {k: torch.empty(s, device="meta") for k, s in keys.items()} for part, keys in manifest.items()}


@pytest.mark.parametrize("name", sorted(OFFICIAL_FILES))
def test_official_layout_loads_at_full_size_on_meta(name):
    config, variant = OFFICIAL_FILES[name]
    unet = meta_unet(config)
    manifest = _manifest()[name]
    state = load_faceid_into_unet(unet, meta_state_dict(name), "auto")
    assert state.spec.variant == variant and state.spec.lora_rank == 128 and state.spec.num_tokens == 4
    layout = expected_layout(unet, state.spec)
    for part in ("image_proj", "ip_adapter"):  # same keys, same order, same shapes as the manifest
        assert list(layout[part].items()) == [(k, tuple(s)) for k, s in manifest[part].items()]
    # the modules really hold tensors of the official sizes
    proj_params = sum(p.numel() for p in state.projection.parameters())
    assert proj_params == sum(int(np.prod(s)) for s in manifest["image_proj"].values())
    ip = {n: p for n, p in unet.attn_processors.items() if hasattr(p, "to_k_ip")}
    assert 2 * len(ip) == sum(1 for k in manifest["ip_adapter"] if "_ip." in k)
    attn = unet.get_submodule(next(iter(ip))[: -len(".processor")])
    assert attn.to_q.lora_A[FACEID_ADAPTER_NAME].weight.shape == (128, attn.to_q.in_features)
    assert attn.to_out[0].lora_B[FACEID_ADAPTER_NAME].weight.shape == (attn.to_out[0].out_features, 128)
    width = config["cross_attention_dim"]
    assert next(iter(ip.values())).to_k_ip[0].weight.shape == (attn.to_k.out_features, width)


def test_plus_file_as_plain_faceid_and_the_reverse_are_refused():
    unet = meta_unet(SD15_UNET)
    with pytest.raises(CheckpointError, match="faceid-plusv2"):
        load_faceid_into_unet(unet, meta_state_dict("ip-adapter-faceid-plusv2_sd15.bin"), "faceid")
    with pytest.raises(CheckpointError, match="plain IP-Adapter-FaceID"):
        load_faceid_into_unet(unet, meta_state_dict("ip-adapter-faceid_sd15.bin"), "faceid-plusv2")
    assert unet.encoder_hid_proj is None  # nothing half-installed


def test_sd15_file_into_sdxl_names_first_bad_key():
    unet = meta_unet(SDXL_UNET)
    with pytest.raises(CheckpointError, match=r"'proj\.2\.weight' has shape \(3072, 1024\)"):
        load_faceid_into_unet(unet, meta_state_dict("ip-adapter-faceid_sd15.bin"))


def test_bad_files_name_the_first_bad_key(tmp_path):
    pipe = make_pipeline(load=False)
    raw = torch.load(CASE_DIR / "ip-adapter-faceid.bin", weights_only=True)

    missing = copy.deepcopy(raw)
    del missing["ip_adapter"]["3.to_v_lora.up.weight"]
    torch.save(missing, tmp_path / "missing.bin")
    with pytest.raises(CheckpointError, match=r"missing key '3\.to_v_lora\.up\.weight'"):
        pipe.load_faceid(tmp_path / "missing.bin")

    wrong = copy.deepcopy(raw)
    wrong["ip_adapter"]["5.to_k_ip.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"'5\.to_k_ip\.weight' has shape \(3, 3\)"):
        pipe.load_faceid(wrong)

    extra = copy.deepcopy(raw)
    extra["ip_adapter"]["99.to_k_ip.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"unexpected key '99\.to_k_ip\.weight'"):
        pipe.load_faceid(extra)

    with pytest.raises(CheckpointError, match="'ip_adapter'"):
        pipe.load_faceid({"image_proj": raw["image_proj"]})
    with pytest.raises(CheckpointError, match="load_ip_adapter"):
        pipe.load_faceid({"image_proj": {"proj.weight": torch.zeros(4, 4), "norm.weight": torch.zeros(4)},
                          "ip_adapter": raw["ip_adapter"]})

    data = (CASE_DIR / "ip-adapter-faceid.bin").read_bytes()
    (tmp_path / "truncated.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        pipe.load_faceid(tmp_path / "truncated.bin")
    assert not pipe.faceid_loaded and pipe.unet.encoder_hid_proj is None


def test_flat_safetensors_file_loads(tmp_path):
    from safetensors.torch import save_file

    raw = torch.load(CASE_DIR / "ip-adapter-faceid.bin", weights_only=True)
    save_file({f"{p}.{k}": v for p, sd in raw.items() for k, v in sd.items()}, str(tmp_path / "f.safetensors"))
    a, b = make_pipeline(), make_pipeline(load=False)
    b.load_faceid(tmp_path / "f.safetensors", variant="faceid")
    np.testing.assert_array_equal(run(a), run(b))


# -- bad call input ----------------------------------------------------------------------------


def test_bad_embeddings_and_arguments_are_clear_errors():
    pipe = make_pipeline()
    for bad, message in ((np.zeros((1, 256), np.float32), r"shape \(1, 256\)"), (np.full((1, 512), np.nan), "NaN")):
        with pytest.raises(IdgenError, match=message):
            run(pipe, face_embeds=bad)
    with pytest.raises(IdgenError, match="exactly one"):
        run(pipe, face_image="x.jpg")
    with pytest.raises(IdgenError, match="exactly one"):
        run(pipe, face_embeds=None)
    with pytest.raises(IdgenError, match="needs a 'mask'"):
        run(pipe, face_embeds=None, identities=[{"face_embeds": FACE}, {"face_embeds": OTHER_FACE}])
    with pytest.raises(IdgenError, match="not both"):
        run(pipe, identities=[{"face_embeds": FACE}])
    with pytest.raises(IdgenError, match="keys among"):
        run(pipe, face_embeds=None, identities=[{"face_embeds": FACE, "kps": None}])
    with pytest.raises(IdgenError, match="start/end"):
        run(pipe, identity_start=0.8, identity_end=0.2)
    with pytest.raises(IdgenError, match="FaceID-Plus"):
        run(pipe, clip_image_embeds=torch.zeros(1, 17, 32))
    with pytest.raises(IdgenError, match="ip_adapter_image_embeds"):
        run(pipe, ip_adapter_image_embeds=[torch.zeros(2, 1, 512)])
    with pytest.raises(IdgenError, match="load_faceid"):
        run(make_pipeline(load=False))


# -- 5. generic checks and features ------------------------------------------------------------


class TestFaceIDPipeline(PipelineChecks):
    get_pipeline = staticmethod(make_pipeline)
    get_inputs = staticmethod(inputs)


def test_batch_of_prompts_and_scale_restored_after_call():
    pipe = make_pipeline()
    pipe.set_faceid_scale(0.7)
    images = run(pipe, prompt=["photo of a person", "a person"], num_images_per_prompt=2, identity_scale=0.3)
    assert images.shape[0] == 4
    assert set(pipe.get_faceid_scales().values()) == {0.7} and pipe.default_identity_scale == 0.7


def test_face_records_and_face_image_through_an_analyzer():
    raw = FACE[0] * 23.0  # analyzers return raw ArcFace vectors; FaceID normalises them
    face = Face(bbox=[0, 0, 10, 10], score=0.9, kps=np.zeros((5, 2)), image_size=(64, 64), embedding=raw)

    class StubAnalyzer:
        embedding_dim = 512
        calls = []

        def get(self, image, select="largest"):
            self.calls.append((image.shape, select))
            return face

    pipe = make_pipeline()
    reference = run(pipe)
    np.testing.assert_allclose(run(pipe, face_embeds=face), reference, atol=1e-5)
    analyzer = StubAnalyzer()
    photo = np.zeros((48, 40, 3), np.uint8)
    got = run(pipe, face_embeds=None, face_image=photo, face_analyzer=analyzer)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    assert analyzer.calls == [((48, 40, 3), "largest")]


def test_multiple_references():
    pipe = make_pipeline()
    refs = np.concatenate([FACE, OTHER_FACE])
    unit = torch.nn.functional.normalize(torch.from_numpy(refs), dim=-1)
    # "mean" (default): the average of the normalised embeddings; "concat": one row per reference
    torch.testing.assert_close(pipe.encode_identity(refs).embeds, unit.mean(0, keepdim=True))
    assert pipe.encode_identity(refs, reference_mode="concat").embeds.shape == (2, 512)
    torch.testing.assert_close(
        pipe.encode_identity(refs, reference_mode="normed_mean").embeds,
        torch.nn.functional.normalize(unit.mean(0, keepdim=True), dim=-1),
    )
    single, mean = run(pipe), run(pipe, face_embeds=refs)
    concat = run(pipe, face_embeds=refs, reference_mode="concat")
    normed = run(pipe, face_embeds=refs, reference_mode="normed_mean")
    assert np.abs(mean - single).max() > 1e-4
    assert np.abs(concat - mean).max() > 1e-4 and np.abs(normed - mean).max() > 1e-4
    # two identical references concatenated attend like one (same softmax over duplicated keys)
    np.testing.assert_allclose(run(pipe, face_embeds=np.concatenate([FACE, FACE]), reference_mode="concat"),
                               single, atol=1e-5)


def test_two_people_with_masks():
    pipe = make_pipeline()
    left = np.zeros((64, 64), np.float32)
    left[:, :32] = 1.0
    right = 1.0 - left
    two = run(pipe, **people((FACE, left), (OTHER_FACE, right)))
    swapped = run(pipe, **people((OTHER_FACE, left), (FACE, right)))
    one = run(pipe, face_embeds=FACE)
    assert two.shape == (1, 64, 64, 3)
    assert np.abs(two - swapped).max() > 1e-4 and np.abs(two - one).max() > 1e-4
    # a full mask for one person and an empty one for the other == that person alone
    full = run(pipe, **people((FACE, np.ones((64, 64))), (OTHER_FACE, np.zeros((64, 64)))))
    np.testing.assert_allclose(full, one, atol=1e-5)


def test_identity_window_and_block_scales():
    pipe = make_pipeline()
    full, none = run(pipe), run(pipe, identity_scale=0.0)
    np.testing.assert_array_equal(run(pipe, identity_start=0.0, identity_end=1.0), full)
    np.testing.assert_array_equal(run(pipe, identity_start=0.0, identity_end=0.0), none)
    half = run(pipe, identity_start=0.5, identity_end=1.0)
    assert np.abs(half - full).max() > 1e-5 and np.abs(half - none).max() > 1e-5
    seen = []
    run(pipe, identity_end=0.5, callback_on_step_end=lambda p, i, t, kw: seen.append(i) or {})
    assert seen == [0, 1]
    assert set(pipe.get_faceid_scales().values()) == {1.0}
    blocks = run(pipe, identity_scale={"up": {"block_0": [1.0, 0.0]}})
    assert np.abs(blocks - full).max() > 1e-5 and np.abs(blocks - none).max() > 1e-5


def test_noised_negative_identity():
    pipe = make_pipeline()
    official, noised = run(pipe), run(pipe, negative_noise=0.5)
    assert np.abs(noised - official).max() > 1e-5
    np.testing.assert_array_equal(run(pipe, negative_noise=0.5), noised)  # seeded from the generator


def test_user_lora_next_to_faceid_lora():
    pipe = make_pipeline()
    before = run(pipe)
    user = random_user_lora(pipe.unet)
    pipe.load_lora_weights(user, adapter_name="style")
    assert sorted(pipe.get_active_adapters()) == [FACEID_ADAPTER_NAME, "style"]
    styled = run(pipe)
    assert np.abs(styled - before).max() > 1e-4
    pipe.set_adapters(["style"], [0.0])  # FaceID's LoRA stays on at its weight
    assert sorted(pipe.get_active_adapters()) == [FACEID_ADAPTER_NAME, "style"]
    np.testing.assert_allclose(run(pipe), before, atol=1e-6)
    pipe.set_adapters(["style"], [1.0])
    pipe.unload_faceid()
    assert pipe.get_active_adapters() == ["style"]
    pipe.load_faceid(CASE_DIR / "ip-adapter-faceid.bin")
    np.testing.assert_allclose(run(pipe), styled, atol=1e-5)


def test_model_cpu_offload_does_not_break():
    pipe = make_pipeline()
    reference = run(pipe)
    pipe.enable_model_cpu_offload(device="cpu")
    np.testing.assert_allclose(run(pipe), reference, atol=1e-6)


def test_save_pretrained_writes_official_layout_and_keeps_settings(tmp_path):
    pipe = make_pipeline()
    pipe.set_faceid_scale({"up": {"block_0": [0.5, 1.0]}}, lora_scale=0.9)
    before = run(pipe)
    pipe.save_pretrained(tmp_path)
    np.testing.assert_array_equal(run(pipe), before)  # the live pipeline is unchanged
    saved = split_prefixed(load_checkpoint(tmp_path / "faceid" / "ip-adapter-faceid.safetensors"),
                           ("image_proj", "ip_adapter"))
    raw = torch.load(CASE_DIR / "ip-adapter-faceid.bin", weights_only=True)
    assert all(set(saved[p]) == set(raw[p]) for p in raw)
    saved_unet = UNet2DConditionModel.from_pretrained(tmp_path / "unet")  # the base UNet, as before load_faceid
    assert set(saved_unet.state_dict()) == set(parity_parts(CASE_DIR)["unet"].state_dict())
    reloaded = StableDiffusionFaceIDPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.get_faceid_scales() == pipe.get_faceid_scales()
    assert reloaded.default_identity_scale == pipe.default_identity_scale == {"up": {"block_0": [0.5, 1.0]}}
    np.testing.assert_array_equal(run(reloaded), before)


# -- FaceID-Plus v2 ----------------------------------------------------------------------------


def make_plus_pipeline(variant="faceid-plusv2", seed=0):
    components, encoder = wide_components()
    pipe = StableDiffusionFaceIDPipeline(**components)
    sd = synthetic_faceid_state_dict(pipe.unet, "faceid-plusv2", clip_dim=encoder.config.hidden_size, seed=seed)
    pipe.load_faceid(sd, variant=variant, image_encoder=encoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe, sd


CROP = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)


def test_plus_v2_runs_and_follows_the_official_formula():
    pipe, sd = make_plus_pipeline()
    assert pipe.faceid_spec.variant == "faceid-plusv2" and pipe.faceid_spec.shortcut
    image = run(pipe, face_crop=CROP)
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
    # tokens: official ProjPlusModel with shortcut=True, s_scale=1 on CLIP hidden_states[-2]
    emb = torch.from_numpy(FACE)
    identity = pipe.encode_identity(FACE, face_crop=CROP)
    projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    projection.clip_embeds, projection.shortcut = identity.clip[None], True
    with torch.no_grad():
        ours = projection(emb)
    projection.clip_embeds = None
    pixels = pipe.feature_extractor(images=[CROP], return_tensors="pt").pixel_values
    with torch.no_grad():
        hidden = pipe.image_encoder(pixels, output_hidden_states=True).hidden_states[-2]
        black = pipe.image_encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(identity.clip, hidden)
    torch.testing.assert_close(identity.negative_clip, black)
    expected = reference_tokens(sd["image_proj"], emb, hidden, shortcut=True, s_scale=1.0)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    # the twin input gives the same image; s_scale and the shortcut matter
    np.testing.assert_array_equal(run(pipe, clip_image_embeds=identity.clip), image)
    assert np.abs(run(pipe, face_crop=CROP, s_scale=0.2) - image).max() > 1e-5
    assert np.abs(run(pipe, face_crop=CROP, shortcut=False) - image).max() > 1e-5


def test_plus_v1_variant_has_no_shortcut_and_needs_a_crop():
    pipe, _ = make_plus_pipeline(variant="faceid-plus")
    assert not pipe.faceid_spec.shortcut
    v1 = run(pipe, face_crop=CROP)
    np.testing.assert_array_equal(run(pipe, face_crop=CROP, shortcut=False), v1)
    with pytest.raises(IdgenError, match="face crop"):
        run(pipe)


def test_plus_multi_reference_multi_person_and_roundtrip(tmp_path):
    pipe, _ = make_plus_pipeline()
    other = np.random.default_rng(1).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    refs = np.concatenate([FACE, OTHER_FACE])
    assert run(pipe, face_embeds=refs, face_crop=[CROP, other], reference_mode="concat").shape == (1, 64, 64, 3)
    left = np.zeros((64, 64), np.float32)
    left[:, :32] = 1
    two = run(pipe, **people((FACE, left, CROP), (OTHER_FACE, 1 - left, other)))
    assert np.isfinite(two).all()
    before = run(pipe, face_crop=CROP)
    pipe.save_pretrained(tmp_path)
    reloaded = StableDiffusionFaceIDPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.faceid_spec == pipe.faceid_spec and reloaded.image_encoder is not None
    np.testing.assert_array_equal(run(reloaded, face_crop=CROP), before)


def test_per_person_scales_and_unload_lora_weights_keeps_faceid():
    pipe = make_pipeline()
    left = np.zeros((64, 64), np.float32)
    left[:, :32] = 1
    equal = run(pipe, **people((FACE, left), (OTHER_FACE, 1 - left)))
    same = run(pipe, **people((FACE, left, None, 1.0), (OTHER_FACE, 1 - left, None, 1.0)))
    np.testing.assert_array_equal(same, equal)
    assert np.abs(run(pipe, **people((FACE, left, None, 1.0), (OTHER_FACE, 1 - left, None, 0.0))) - equal).max() > 1e-5
    with pytest.raises(IdgenError, match="one scale per person"):
        run(pipe, identity_scale=[1.0, 0.5])
    reference = run(pipe)
    user = random_user_lora(pipe.unet, targets=("to_q",), attention="attn1", rank=2, seed=5)
    pipe.load_lora_weights(user, adapter_name="user")
    assert np.abs(run(pipe) - reference).max() > 1e-5
    pipe.unload_lora_weights()
    assert pipe.get_active_adapters() == [FACEID_ADAPTER_NAME]
    np.testing.assert_array_equal(run(pipe), reference)


def test_plus_face_image_is_cropped_from_the_keypoints(monkeypatch):
    import idgen.pipelines.faceid_common

    pipe, _ = make_plus_pipeline()
    kps = np.array([[10, 12], [30, 12], [20, 20], [12, 28], [28, 28]], np.float32)
    face = Face(bbox=[0, 0, 40, 40], score=0.9, kps=kps, image_size=(40, 48), embedding=FACE[0])
    photo = np.random.default_rng(3).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    seen = []

    def align_face(image, points, size=224):  # stands in for idgen.face.align_face (norm_crop)
        seen.append((image.shape, points.tolist(), size))
        return SimpleNamespace(image=CROP)

    class StubAnalyzer:
        embedding_dim = 512

        def get(self, image, select="largest"):
            return face

    monkeypatch.setattr(idgen.pipelines.faceid_common, "align_face", align_face)
    got = run(pipe, face_embeds=None, face_image=photo, face_analyzer=StubAnalyzer())
    assert seen == [((48, 40, 3), kps.tolist(), 224)]
    np.testing.assert_allclose(got, run(pipe, face_crop=CROP), atol=1e-6)


# -- the adapter lives in the UNet: pipelines sharing it share the adapter ----------------------


def test_pipelines_sharing_the_unet_see_the_adapter():
    pipe = make_pipeline()
    reference = run(pipe)
    other_vae = copy.deepcopy(pipe.vae)  # another VAE object (same weights, so the same image)
    for shared in (StableDiffusionFaceIDPipeline(**pipe.components), StableDiffusionFaceIDPipeline.from_pipe(pipe),
                   StableDiffusionFaceIDPipeline(**{**pipe.components, "vae": other_vae})):
        shared.set_progress_bar_config(disable=True)
        assert shared.unet is pipe.unet and shared.faceid_spec == pipe.faceid_spec
        np.testing.assert_array_equal(run(shared), reference)
        with pytest.raises(IdgenError, match="give exactly one of `face_embeds`"):
            run(shared, face_embeds=None)  # no face: a clear error, not diffusers' missing image_embeds


def test_load_faceid_on_a_sharing_pipeline_replaces_it_and_unload_restores_the_base():
    pipe = make_pipeline()
    first = run(pipe)
    shared = StableDiffusionFaceIDPipeline.from_pipe(pipe)
    shared.set_progress_bar_config(disable=True)
    other = synthetic_faceid_state_dict(pipe.unet, "faceid", rank=4, seed=3)
    shared.load_faceid(other)
    assert unet_adapters(pipe.unet) == [FACEID_ADAPTER_NAME] and pipe.faceid_spec.lora_rank == 4
    fresh = make_pipeline(load=False)
    fresh.load_faceid(other)
    np.testing.assert_array_equal(run(pipe), run(fresh))  # the first pipeline runs the new adapter
    assert np.abs(run(pipe) - first).max() > 1e-3
    shared.unload_faceid()
    assert not pipe.faceid_loaded and set(pipe.unet.state_dict()) == set(parity_parts(CASE_DIR)["unet"].state_dict())
    np.testing.assert_array_equal(pipe(**inputs_without_face()).images,
                                  plain_pipeline(sd15_components())(**inputs_without_face()).images)


def test_from_pipe_of_a_plain_stable_diffusion_pipeline():
    plain = plain_pipeline(sd15_components())
    for cls in (StableDiffusionFaceIDPipeline, StableDiffusionFaceIDInpaintPipeline):
        made = cls.from_pipe(plain)
        assert type(made) is cls and made.unet is plain.unet and made.vae is plain.vae and not made.faceid_loaded
    made.set_progress_bar_config(disable=True)
    made.load_faceid(CASE_DIR / "ip-adapter-faceid.bin")
    np.testing.assert_array_equal(run(StableDiffusionFaceIDPipeline.from_pipe(made)), run(make_pipeline()))


def test_old_names_warn_and_give_the_same_image():
    pipe = make_pipeline()
    with pytest.warns(FutureWarning, match="`identity_scale`"):
        old = run(pipe, scale=0.4)
    np.testing.assert_array_equal(old, run(pipe, identity_scale=0.4))
    left = np.zeros((64, 64), np.float32)
    left[:, :32] = 1
    with pytest.warns(FutureWarning) as record:
        old = run(pipe, face_embeds=[FACE, OTHER_FACE], face_masks=[left, 1 - left], scale=[1.0, 0.5])
    assert sorted(str(w.message).split("`")[1] for w in record) == ["face_masks", "scale"]
    np.testing.assert_array_equal(old, run(pipe, **people((FACE, left, None, 1.0), (OTHER_FACE, 1 - left, None, 0.5))))
    with pytest.warns(FutureWarning), pytest.raises(IdgenError, match="one entry per person"):
        run(pipe, face_masks=[left, 1 - left])
    with pytest.raises(IdgenError, match="give only `identity_scale`"):
        run(pipe, scale=0.4, identity_scale=0.4)
    with pytest.warns(FutureWarning, match="`identity_scale`"):
        pipe.set_faceid_scale(scale=0.7)
    assert set(pipe.get_faceid_scales().values()) == {0.7}
