"""Make the PuLID parity references (tests/data/parity/pulid-v1/, pulid-v1.1/, pulid-v1.1-multi/) with
the OFFICIAL code.

Usage: python bench/parity/pulid.py /path/to/PuLID-checkout [/path/with/einops] [--v1.1-multi]
(`--v1.1-multi` writes only pulid-v1.1-multi/: the official v1.1 `get_id_embedding` of a list of photos;
`PULID_COMMIT=<sha>` names the commit of a checkout without .git)

Runs the official `eva_clip.eva_vit_model.EVAVisionTransformer`, `pulid.encoders.IDEncoder`,
`pulid.encoders_transformer.IDFormer`, `pulid.attention_processor.IDAttnProcessor2_0` and (v1) the
official pipeline's generation (`PuLIDPipeline.hack_unet_attn_layers` + its checkpoint loading +
diffusers' `StableDiffusionXLPipeline` with `cross_attention_kwargs={'id_embedding', 'id_scale'}`)
on idgen's seeded tiny weights (`idgen.testing.pulid`). The official modules hard-code the EVA and
mapping widths (1024) and the condition width (1280): their MLPs are rebuilt at the tiny widths,
layer for layer as the official `nn.Sequential`s; their forward code is the official one.
Modules the official files import but these paths never use (timm's init helpers, insightface,
facexlib, torchvision, torchsde) are stubbed. Not run by the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch

from idgen.testing.released import SDXL_UNET
from torch import nn

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "data" / "parity"
SEED = 0
PROMPT = "a photo of a person"


class _Stub(types.ModuleType):
    """A module whose every attribute is a do-nothing callable (imports the paths never use)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **k: None


def _stub(*names):
    for name in names:
        sys.modules.setdefault(name, _Stub(name))


def import_official(checkout: Path):
    """The official modules, importable without their unused heavy dependencies."""
    here = Path(__file__).resolve().parent  # this script is pulid.py: keep it from shadowing the package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(checkout))
    timm_layers = _Stub("timm.models.layers")
    timm_layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    timm_layers.drop_path = lambda x, p, training: x
    timm_layers.trunc_normal_ = lambda t, std=1.0: nn.init.normal_(t, std=std)
    sys.modules["timm"] = _Stub("timm")
    sys.modules["timm.models"] = _Stub("timm.models")
    sys.modules["timm.models.layers"] = timm_layers
    _stub("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms",
          "torchvision.transforms.functional", "torchvision.utils", "torchsde", "insightface", "insightface.app",
          "facexlib", "facexlib.parsing", "facexlib.utils", "facexlib.utils.face_restoration_helper", "basicsr",
          "basicsr.utils")
    package = types.ModuleType("eva_clip")  # skip eva_clip/__init__ (it imports the whole open_clip stack)
    package.__path__ = [str(checkout / "eva_clip")]
    package.create_model_and_transforms = None  # imported by pulid.pipeline, unused here
    sys.modules["eva_clip"] = package
    os.environ["RoPE"] = "1"  # as eva_clip.factory sets it for EVA02 configs
    from eva_clip import eva_vit_model, transformer
    from pulid import attention_processor, encoders, encoders_transformer, pipeline, pipeline_v1_1, utils
    return types.SimpleNamespace(eva=eva_vit_model, eva_ln=transformer.LayerNorm, attn=attention_processor,
                                 encoders=encoders, former=encoders_transformer, pipeline=pipeline,
                                 pipeline_v1_1=pipeline_v1_1, utils=utils)


def official_v11_generation(off, pipe, call, id_embedding, uncond_id_embedding, id_scale):
    """The official v1.1 `PuLIDPipeline.inference` (k-diffusion DPM++ 2M on Karras sigmas, UNet run
    on the positive and the negative branch separately) around `pipe`; its `__init__` (model
    downloads) is skipped and the sigma table it builds is rebuilt here with its lines. The final
    `postprocess` returns floats instead of PIL images."""

    class Official(off.pipeline_v1_1.PuLIDPipeline):
        def __init__(self):  # the official __init__'s non-model part
            self.device = "cpu"
            self.pipe = pipe
            betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
            alphas_cumprod = torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)
            self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
            self.log_sigmas = self.sigmas.log()
            self.sigma_data = 1.0
            self.sampler = off.utils.sample_dpmpp_2m

    postprocess = pipe.image_processor.postprocess
    pipe.image_processor.postprocess = lambda images, output_type: postprocess(images, output_type="np")
    try:
        official = Official()
        # the official code makes latents of size // 8 (SDXL's VAE); the tiny VAE halves, so ask for 4x
        size = (1, call["height"] * 8 // pipe.vae_scale_factor, call["width"] * 8 // pipe.vae_scale_factor)
        return official.inference(call["prompt"], size, call["negative_prompt"],
                                  id_embedding, uncond_id_embedding, id_scale, call["guidance_scale"],
                                  call["num_inference_steps"], SEED), official
    finally:
        pipe.image_processor.postprocess = postprocess


def official_eva(off, tower):
    cfg = tower.config
    model = off.eva.EVAVisionTransformer(
        img_size=cfg.image_size, patch_size=cfg.patch_size, num_classes=cfg.embed_dim, use_mean_pooling=False,
        init_values=None, patch_dropout=0.0, embed_dim=cfg.width, depth=cfg.depth, num_heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio, qkv_bias=True, drop_path_rate=0, norm_layer=partial(off.eva_ln, eps=1e-6),
        xattn=True, rope=True, postnorm=False, pt_hw_seq_len=cfg.pt_hw_seq_len, intp_freq=True, naiveswiglu=True,
        subln=True,
    )
    missing, unexpected = model.load_state_dict(tower.state_dict(), strict=False)
    assert not unexpected and all(k.endswith(("freqs_cos", "freqs_sin")) for k in missing), (missing, unexpected)
    return model.eval()


def _mlp(a, h, out):
    return nn.Sequential(nn.Linear(a, h), nn.LayerNorm(h), nn.LeakyReLU(), nn.Linear(h, h), nn.LayerNorm(h),
                         nn.LeakyReLU(), nn.Linear(h, out))


def official_encoder(off, version, enc):
    if version == "v1":
        model = off.encoders.IDEncoder(width=enc["id_dim"], context_dim=enc["context_dim"], num_token=enc["num_token"])
        for i in range(5):
            setattr(model, f"mapping_{i}", _mlp(enc["vit_width"], enc["mapping_dim"], enc["context_dim"]))
            setattr(model, f"mapping_patch_{i}", _mlp(enc["vit_width"], enc["mapping_dim"], enc["context_dim"]))
        return model
    model = off.former.IDFormer(dim=enc["dim"], depth=enc["depth"], dim_head=enc["dim_head"], heads=enc["heads"],
                                num_id_token=enc["num_id_token"], num_queries=enc["num_queries"],
                                output_dim=enc["output_dim"], ff_mult=enc["ff_mult"])
    for i in range(5):
        setattr(model, f"mapping_{i}", _mlp(enc["vit_width"], enc["mapping_dim"], enc["dim"]))
    model.id_embedding_mapping = _mlp(enc["id_dim"], enc["mapping_dim"], enc["dim"] * enc["num_id_token"])
    return model


def split_official(state_dict):
    """The official `load_pretrain` split: module name -> its state dict."""
    parts = {}
    for k, v in state_dict.items():
        module = k.split(".")[0]
        parts.setdefault(module, {})[k[len(module) + 1:]] = v
    return parts


def set_mode(off, num_zero, ortho):
    off.attn.NUM_ZERO = num_zero
    off.attn.ORTHO = ortho == "v1"
    off.attn.ORTHO_v2 = ortho == "v2"




def write_layouts(off, commit: str) -> None:
    """tests/data/layouts/{pulid_v1,pulid_v1.1,eva02_clip_l_336}.json: key -> shape of the official
    modules at their real sizes (the adapters built on the meta device, the EVA tower on CPU), as the official files store them."""
    from diffusers import UNet2DConditionModel

    layouts = REPO / "tests" / "data" / "layouts"
    layouts.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
        for name, encoder in (("pulid_v1", off.encoders.IDEncoder()), ("pulid_v1.1", off.former.IDFormer())):
            fake = types.SimpleNamespace(id_adapter=encoder)
            off.pipeline.PuLIDPipeline.hack_unet_attn_layers(fake, unet)
            keys = {f"id_adapter.{k}": list(v.shape) for k, v in encoder.state_dict().items()}
            keys.update({f"id_adapter_attn_layers.{k}": list(v.shape)
                         for k, v in fake.id_adapter_attn_layers.state_dict().items()})
            doc = {"source": f"ToTheBeginning/PuLID@{commit}: {name} = state_dict() of the official id_adapter and "
                             "id_adapter_attn_layers on the SDXL base UNet", "keys": keys}
            (layouts / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    eva = off.eva.EVAVisionTransformer(
        img_size=336, patch_size=14, num_classes=768, use_mean_pooling=False, init_values=None, patch_dropout=0.0,
        embed_dim=1024, depth=24, num_heads=16, mlp_ratio=2.6667, qkv_bias=True, drop_path_rate=0,
        norm_layer=partial(off.eva_ln, eps=1e-6), xattn=True, rope=True, postnorm=False, pt_hw_seq_len=16,
        intp_freq=True, naiveswiglu=True, subln=True)  # on CPU: its drop-path schedule calls .item()
    keys = {f"visual.{k}": list(v.shape) for k, v in eva.state_dict().items()}
    doc = {"source": f"ToTheBeginning/PuLID@{commit}: model.visual of create_model('EVA02-CLIP-L-14-336'); the "
                     "file EVA02_CLIP_L_336_psz14_s6B.pt also holds text.* and logit_scale", "keys": keys}
    (layouts / "eva02_clip_l_336.json").write_text(json.dumps(doc, indent=1) + "\n")


def main(checkout: str) -> None:
    from idgen.adapters.pulid.config import MODES, TINY_ID_ENCODER_V1, TINY_ID_FORMER_V11
    from idgen.testing import tiny_sdxl_components
    from idgen.testing.pulid import random_pulid_state_dict, tiny_eva_clip

    checkout = Path(checkout)
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    off = import_official(checkout)
    torch.set_grad_enabled(False)
    write_layouts(off, commit)
    gen = torch.Generator().manual_seed(SEED)
    arcface = torch.randn(1, 512, generator=gen) * 1.2  # raw-ArcFace-like norm (about 27)
    tower = tiny_eva_clip(SEED + 1)
    size = tower.config.image_size
    eva_input = torch.randn(1, 3, size, size, generator=gen)  # already resized and normalised
    for version, enc in (("v1", TINY_ID_ENCODER_V1), ("v1.1", TINY_ID_FORMER_V11)):
        out = OUT / f"pulid-{version}"
        out.mkdir(parents=True, exist_ok=True)
        components = tiny_sdxl_components(SEED)
        unet = components["unet"]
        state_dict = random_pulid_state_dict(unet, version, SEED)
        eva = official_eva(off, tower)
        encoder = official_encoder(off, version, enc)
        parts = split_official(state_dict)
        encoder.load_state_dict(parts["id_adapter"], strict=True)
        # official get_id_embedding, after the face crop / parsing / resize / normalize
        id_cond_vit, id_vit_hidden = eva(eva_input, return_all_features=False, return_hidden=True, shuffle=False)
        id_cond_vit = torch.div(id_cond_vit, torch.norm(id_cond_vit, 2, 1, True))
        id_cond = torch.cat([arcface, id_cond_vit], dim=-1)
        id_tokens = encoder(id_cond, id_vit_hidden)
        uncond_tokens = encoder(torch.zeros_like(id_cond), [torch.zeros_like(h) for h in id_vit_hidden])
        arrays = {"arcface": arcface, "eva_input": eva_input, "eva_embedding": id_cond_vit,
                  "id_tokens": id_tokens, "uncond_tokens": uncond_tokens}
        # the ID attention of one cross-attention layer, each ortho mode
        fake = types.SimpleNamespace()
        off.pipeline.PuLIDPipeline.hack_unet_attn_layers(fake, unet)
        fake.id_adapter_attn_layers.load_state_dict(parts["id_adapter_attn_layers"], strict=True)
        name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
        attn = unet.get_submodule(name)
        index = list(unet.attn_processors).index(name + ".processor")
        hidden = torch.randn(2, 8 * 8, attn.to_q.in_features, generator=gen)
        text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen)
        arrays.update(attn_hidden=hidden, attn_text=text)
        id_embedding = torch.cat((uncond_tokens, id_tokens), dim=0)
        attn_cases = {"off": (0, "off"), "v1": (16, "v1"), "v2": (8, "v2")}
        for label, (num_zero, ortho) in attn_cases.items():
            set_mode(off, num_zero, ortho)
            arrays[f"attn_{label}"] = fake.id_adapter_attn_layers[index](attn, hidden, text, id_embedding=id_embedding,
                                                                         id_scale=0.8)
        case = {"official_commit": commit, "version": version, "seed": SEED, "encoder": enc,
                "eva": dict(tower.config), "attn_layer": name, "attn_index": index, "id_scale": 0.8,
                "attn_modes": {k: {"num_zero": v[0], "ortho": v[1]} for k, v in attn_cases.items()},
                "note": "EVA input is the resized, normalised face image; face parsing / alignment are not covered."}
        if version == "v1":  # the official v1 generation: diffusers' SDXL pipeline with the hacked UNet
            from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline

            mode = MODES["v1"]["fidelity"]
            set_mode(off, mode.num_zero, mode.ortho)
            pipe = StableDiffusionXLPipeline(**{k: v for k, v in components.items()}, add_watermarker=False)
            pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
            pipe.set_progress_bar_config(disable=True)
            call = dict(prompt=PROMPT, negative_prompt="", num_inference_steps=2, guidance_scale=1.2, height=64,
                        width=64)
            image = pipe(**call, generator=torch.Generator().manual_seed(SEED), output_type="np",
                         cross_attention_kwargs={"id_embedding": id_embedding, "id_scale": 0.8}).images
            arrays["image"] = torch.from_numpy(image)
            case["generation"] = {**call, "seed": SEED, "id_scale": 0.8, "mode": "fidelity",
                                  "scheduler": "DPMSolverMultistepScheduler(timestep_spacing='trailing')"}
        if version == "v1.1":  # the official v1.1 generation: its own sampler around the hacked UNet
            from diffusers import StableDiffusionXLPipeline

            set_mode(off, 20, "v2")
            pipe = StableDiffusionXLPipeline(**components, add_watermarker=False)
            call = dict(prompt=PROMPT, negative_prompt="", num_inference_steps=3, guidance_scale=2.0, height=64,
                        width=64)
            image, official = official_v11_generation(off, pipe, call, id_tokens, uncond_tokens, 0.8)
            sigmas = official.get_sigmas_karras(call["num_inference_steps"])
            noise = torch.randn((1, 4, 64 // pipe.vae_scale_factor, 64 // pipe.vae_scale_factor),
                                generator=torch.manual_seed(SEED))  # the official latents, before x sigma_max
            arrays["image"] = torch.from_numpy(image)
            arrays["noise"] = noise
            case["generation"] = {**call, "seed": SEED, "id_scale": 0.8, "num_zero": 20, "ortho": "v2",
                                  "sampler": "official sample_dpmpp_2m on get_sigmas_karras",
                                  "sigma_max": float(sigmas[0]),
                                  "time_ids_size": 64 * 8 // pipe.vae_scale_factor}
        for key, value in arrays.items():
            np.save(out / f"{key}.npy", value.detach().float().numpy())
        (out / "case.json").write_text(json.dumps(case, indent=2) + "\n")
        print(version, {k: tuple(v.shape) for k, v in arrays.items()})


def official_v11_id_embedding(off, eva, encoder, photos, arcfaces, parsings, mean, std):
    """The official v1.1 `PuLIDPipeline.get_id_embedding(image_list)`, run as it is, with its face
    tools answering fixed values: each photo (uint8 RGB) is already its own aligned crop at the EVA
    size (facexlib's detection / warp return it unchanged, so the official `resize` to that size is
    the identity), insightface's `app.get` gives `arcfaces[i]` for it, and BiSeNet's parsing is the
    label map `parsings[i]`. torchvision's `normalize` is its one line; `img2tensor` is the official
    `pulid.utils` copy of basicsr's. Returns `(uncond, cond)` as the official method."""
    module = off.pipeline_v1_1
    lookup = {np.ascontiguousarray(p[..., ::-1]).tobytes(): a for p, a in zip(photos, arcfaces)}
    pending = list(parsings)

    class App:  # insightface FaceAnalysis: one face, the whole crop
        def get(self, bgr):
            h, w = bgr.shape[:2]
            return [{"bbox": np.array([0, 0, w, h], np.float32), "embedding": lookup[bgr.tobytes()]}]

    class FaceHelper:  # facexlib FaceRestoreHelper: the photo is the aligned crop
        def clean_all(self):
            self.cropped_faces = []

        def read_image(self, bgr):
            self.image = bgr

        def get_face_landmarks_5(self, only_center_face=True):
            pass

        def align_warp_face(self):
            self.cropped_faces = [self.image]

        def face_parse(self, x):
            labels = torch.as_tensor(pending.pop(0)).long()
            return (nn.functional.one_hot(labels, 19).permute(2, 0, 1)[None].float(),)

    def resize(image, size, interpolation=None):
        assert tuple(image.shape[-2:]) == (size, size), "the crops are made at the EVA size"
        return image

    def normalize(image, m, s):  # torchvision.transforms.functional.normalize
        return (image - torch.tensor(m).view(1, -1, 1, 1)) / torch.tensor(s).view(1, -1, 1, 1)

    saved = {k: getattr(module, k) for k in ("resize", "normalize", "img2tensor", "InterpolationMode")}
    module.resize, module.normalize, module.img2tensor = resize, normalize, off.utils.img2tensor
    module.InterpolationMode = types.SimpleNamespace(BICUBIC="bicubic")
    official = object.__new__(module.PuLIDPipeline)  # skip __init__ (model downloads); set what it sets
    official.device, official.debug_img_list = "cpu", []
    official.app, official.face_helper = App(), FaceHelper()
    official.clip_vision_model, official.id_adapter = eva, encoder
    official.clip_vision_model.image_size = photos[0].shape[0]
    official.eva_transform_mean, official.eva_transform_std = mean, std
    try:
        return official.get_id_embedding(list(photos))
    finally:
        for k, v in saved.items():
            setattr(module, k, v)


def main_v11_multi(checkout: str) -> None:
    """tests/data/parity/pulid-v1.1-multi/: the official v1.1 ID tokens of two photos (`get_id_embedding`
    with a list), of one photo alone and of the same photo twice, and the official v1.1 generation
    with the two-photo tokens."""
    from diffusers import StableDiffusionXLPipeline

    from idgen.adapters.pulid.config import PARSING_BACKGROUND_LABELS, TINY_ID_FORMER_V11
    from idgen.testing import tiny_sdxl_components
    from idgen.testing.pulid import random_pulid_state_dict, tiny_eva_clip

    checkout = Path(checkout)
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or os.environ.get("PULID_COMMIT", "")  # an exported tree
    off = import_official(checkout)
    torch.set_grad_enabled(False)
    version, enc = "v1.1", TINY_ID_FORMER_V11
    out = OUT / "pulid-v1.1-multi"
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED + 2)
    arcface = torch.randn(2, 512, generator=gen) * 1.2
    tower = tiny_eva_clip(SEED + 1)
    size = tower.config.image_size
    crops = np.random.default_rng(SEED + 2).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    parsing = np.ones((2, size, size), np.int64)  # 1 = skin: a face feature
    parsing[1, :10], parsing[1, -12:], parsing[1, 20:30, :6] = 0, 16, 7  # background, cloth, ear: white
    components = tiny_sdxl_components(SEED)
    unet = components["unet"]
    parts = split_official(random_pulid_state_dict(unet, version, SEED))
    eva = official_eva(off, tower)
    encoder = official_encoder(off, version, enc)
    encoder.load_state_dict(parts["id_adapter"], strict=True)
    embed = partial(official_v11_id_embedding, off, eva, encoder, mean=list(tower.config.image_mean),
                    std=list(tower.config.image_std))
    photos, faces = list(crops), list(arcface.numpy())
    uncond_tokens, id_tokens = embed(photos, faces, list(parsing))
    _, id_tokens_first = embed(photos[:1], faces[:1], list(parsing[:1]))
    _, id_tokens_first_twice = embed(photos[:1] * 2, faces[:1] * 2, [parsing[0]] * 2)
    arrays = {"arcface": arcface, "crops": torch.from_numpy(crops), "parsing": torch.from_numpy(parsing),
              "id_tokens": id_tokens, "uncond_tokens": uncond_tokens, "id_tokens_first": id_tokens_first,
              "id_tokens_first_twice": id_tokens_first_twice}
    fake = types.SimpleNamespace()
    off.pipeline.PuLIDPipeline.hack_unet_attn_layers(fake, unet)
    fake.id_adapter_attn_layers.load_state_dict(parts["id_adapter_attn_layers"], strict=True)
    set_mode(off, 20, "v2")
    pipe = StableDiffusionXLPipeline(**components, add_watermarker=False)
    call = dict(prompt=PROMPT, negative_prompt="", num_inference_steps=3, guidance_scale=2.0, height=64, width=64)
    image, official = official_v11_generation(off, pipe, call, id_tokens, uncond_tokens, 0.8)
    sigmas = official.get_sigmas_karras(call["num_inference_steps"])
    arrays["image"] = torch.from_numpy(image)
    arrays["noise"] = torch.randn((1, 4, 64 // pipe.vae_scale_factor, 64 // pipe.vae_scale_factor),
                                  generator=torch.manual_seed(SEED))
    case = {"official_commit": commit, "version": version, "seed": SEED, "encoder": enc, "eva": dict(tower.config),
            "references": 2, "background_labels": list(PARSING_BACKGROUND_LABELS),
            "note": "official pipeline_v1_1.get_id_embedding on a list of photos; each photo is its own aligned "
                    "crop at the EVA size, `parsing` its BiSeNet labels, `arcface` its insightface embedding. "
                    "id_tokens_first: photos[:1]; id_tokens_first_twice: [photos[0], photos[0]].",
            "generation": {**call, "seed": SEED, "id_scale": 0.8, "num_zero": 20, "ortho": "v2",
                           "sampler": "official sample_dpmpp_2m on get_sigmas_karras", "sigma_max": float(sigmas[0]),
                           "time_ids_size": 64 * 8 // pipe.vae_scale_factor}}
    for key, value in arrays.items():
        value = value.detach() if key in ("crops", "parsing") else value.detach().float()  # uint8 / int64 kept
        np.save(out / f"{key}.npy", value.numpy())
    (out / "case.json").write_text(json.dumps(case, indent=2) + "\n")
    print("v1.1-multi", {k: tuple(v.shape) for k, v in arrays.items()})


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--v1.1-multi"]  # --v1.1-multi: only pulid-v1.1-multi/
    if len(args) > 1:
        sys.path.insert(0, args[1])
    (main_v11_multi if "--v1.1-multi" in sys.argv else main)(args[0])
