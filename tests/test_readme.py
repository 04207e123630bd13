"""The README's Python examples, run as written, so they cannot drift from the code.

Every ```python block of README.md runs in a fresh namespace, in a folder holding the files the
examples name (`me.jpg`, `pose.jpg`, `group.jpg`, `clip.mp4`, ...: the shared test photos), with
tiny random weights laid out where the examples look (`/models/...` is the one substitution: it
becomes this test's folder) and a tiny insightface pack as the face backend (512-d embeddings, as
the official adapters need). Test-only settings keep tiny weights fast: calls run 2 steps at 64 px,
and an adapter file's Resampler, PuLID's encoders and GFPGAN take tiny sizes instead of the
official ones.
"""

from __future__ import annotations

import functools
import inspect
import re
import shutil

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image

from safetensors.torch import save_file

from idgen.adapters.instantid import ResamplerConfig
from idgen.adapters.pulid import loader as pulid_loader, model as pulid_model
from idgen.adapters.pulid.config import TINY_EVA, TINY_ID_ENCODER_V1, TINY_ID_FORMER_V11
from idgen.adapters.pva import PVAAdapter, official_state_dict
from idgen.adapters.svfr import IDProjection, widen_conv_in
import idgen.pipelines as pipelines
from idgen.face import factory
from idgen.testing import (
    TINY_RESAMPLER, random_faceid_state_dict, random_instantid_state_dict, seeded, tiny_clip_vision_encoder,
    tiny_controlnet, tiny_sd15_components, tiny_sdxl_components, tiny_svd_components,
)
from idgen.testing.pulid import random_pulid_state_dict, tiny_eva_clip
from idgen.testing.restorers import TINY_CROP_SIZE, tiny_restorer
from idgen.testing.style import random_style_state_dict
from idgen.face.parsing import random_bisenet_state_dict
from idgen.restorers import gfpgan

#: The tiny restorer's sizes (`idgen.testing.restorers`), in place of the official ones.
TINY_GFPGAN = {"out_size": TINY_CROP_SIZE, "num_style_feat": 16, "narrow": 1 / 32}

from conftest import REPO
from test_acceleration import _lora_file
from test_face_insightface import _export_pack
from test_video import face_frames, make_video

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def _save_models(root) -> None:
    """Tiny weights at every path the README names, in the layouts the loaders read."""
    sdxl = tiny_sdxl_components(0)
    StableDiffusionXLPipeline(**sdxl).save_pretrained(root / "sdxl")
    tiny_controlnet(sdxl["unet"], 5).save_pretrained(root / "InstantID" / "ControlNetModel")
    torch.save(random_instantid_state_dict(sdxl["unet"], seed=6), root / "InstantID" / "ip-adapter.bin")
    _lora_file(sdxl["unet"], root / "lcm-lora-sdxl.safetensors")
    tiny_controlnet(sdxl["unet"], 7).save_pretrained(root / "controlnet-canny-sdxl")
    style = root / "IP-Adapter" / "sdxl_models"
    style.mkdir(parents=True)
    torch.save(random_style_state_dict(sdxl["unet"], 32, seed=2), style / "ip-adapter_sdxl.bin")
    tiny_clip_vision_encoder(3, image_size=224)[0].save_pretrained(style / "image_encoder")  # diffusers' 224 px input
    (root / "GFPGAN").mkdir()
    torch.save({"params_ema": tiny_restorer("gfpgan").state_dict()}, root / "GFPGAN" / "GFPGANv1.4.pth")
    (root / "face-parsing").mkdir()
    torch.save(random_bisenet_state_dict(5), root / "face-parsing" / "79999_iter.pth")
    (root / "PuLID").mkdir()
    save_file(random_pulid_state_dict(sdxl["unet"], "v1.1", seed=6), root / "PuLID" / "pulid_v1.1.safetensors")
    (root / "EVA-CLIP").mkdir()
    torch.save({f"visual.{k}": v for k, v in tiny_eva_clip(7).state_dict().items()},
               root / "EVA-CLIP" / "EVA02_CLIP_L_336_psz14_s6B.pt")  # a whole CLIP's keys, as the official file

    sd15 = tiny_sd15_components(0)
    StableDiffusionPipeline(**sd15, requires_safety_checker=False).save_pretrained(root / "sd15")
    (root / "IP-Adapter-FaceID").mkdir()
    torch.save(random_faceid_state_dict(sd15["unet"], "faceid", seed=6),
               root / "IP-Adapter-FaceID" / "ip-adapter-faceid_sd15.bin")
    torch.save(random_faceid_state_dict(sd15["unet"], "faceid-portrait", seed=6),
               root / "IP-Adapter-FaceID" / "ip-adapter-faceid-portrait-v11_sd15.bin")
    tiny_controlnet(sd15["unet"], 5).save_pretrained(root / "restore" / "controlnet")

    arc2face = tiny_sd15_components(1, text_width=512)  # the 512-d ArcFace vector fills a token
    arc2face["unet"].save_pretrained(root / "Arc2Face" / "arc2face")
    arc2face["text_encoder"].save_pretrained(root / "Arc2Face" / "encoder")

    inpaint = tiny_sd15_components(0, in_channels=9)
    StableDiffusionInpaintPipeline(**inpaint, requires_safety_checker=False).save_pretrained(
        root / "stable-diffusion-2-inpainting")
    with seeded(3):
        pva = PVAAdapter.for_unet(inpaint["unet"], num_tokens=0, num_layers=1, feedforward_dim=32)
    (root / "PVA").mkdir()
    torch.save(official_state_dict(pva), root / "PVA" / "FPIP.bin")

    svd = tiny_svd_components(0)
    for name in ("vae", "scheduler"):
        svd[name].save_pretrained(root / "svd" / name)
    svd["unet"].save_pretrained(root / "svd" / "unet")
    (root / "SVFR").mkdir()
    torch.save(widen_conv_in(svd["unet"]).state_dict(), root / "SVFR" / "unet.pth")
    with seeded(3):
        torch.save(IDProjection(512, svd["unet"].config.cross_attention_dim).state_dict(), root / "SVFR" / "id_linear.pth")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, faces_dir):
    root = tmp_path_factory.mktemp("readme")
    _save_models(root / "models")
    _export_pack(root / "home" / "insightface" / "models" / "antelopev2", landmarks=True)
    for name, source in {"me.jpg": "portrait_glasses.jpg", "pose.jpg": "pose_fullbody_b.jpg",
                         "photo.jpg": "portrait_older.jpg", "ref1.jpg": "portrait_smile.jpg",
                         "ref2.jpg": "portrait_older.jpg"}.items():
        shutil.copy(faces_dir / source, root / name)
    a, b = (Image.open(faces_dir / f).convert("RGB").resize((320, 320)) for f in ("portrait_glasses.jpg", "portrait_smile.jpg"))
    group = Image.new("RGB", (640, 320))
    group.paste(a, (0, 0))
    group.paste(b, (320, 0))
    group.save(root / "group.jpg")
    make_video(root / "clip.mp4", face_frames(3, blank=()))
    return root


def _fast(call):
    """A pipeline `__call__` capped at 2 steps and, where it takes a size, 64 px (the tiny
    weights' native size) instead of the photo's."""
    sized = "height" in inspect.signature(call).parameters

    @functools.wraps(call)
    def fast(self, *args, **kwargs):
        kwargs["num_inference_steps"] = 2
        if sized:
            kwargs["height"] = kwargs["width"] = 64
        return call(self, *args, **kwargs)
    return fast


@pytest.fixture
def readme_world(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("IDGEN_HOME", str(workspace / "home"))
    monkeypatch.delenv("IDGEN_FACE_BACKEND", raising=False)
    monkeypatch.setattr(factory, "_ANALYZERS", {})
    for module in (pulid_model, pulid_loader):  # PuLID's encoder and EVA tower at their tiny sizes
        for name, tiny in (("ID_ENCODER_V1", TINY_ID_ENCODER_V1), ("ID_FORMER_V11", TINY_ID_FORMER_V11),
                           ("EVA02_L_336", TINY_EVA)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, tiny)
    monkeypatch.setattr(gfpgan, "GFPGAN_CONFIG", {**gfpgan.GFPGAN_CONFIG, **TINY_GFPGAN})
    official = ResamplerConfig.from_mapping.__func__
    monkeypatch.setattr(ResamplerConfig, "from_mapping",
                        classmethod(lambda cls, config, **kw: official(cls, config or TINY_RESAMPLER, **kw)))
    exported = [getattr(pipelines, name) for name in pipelines.__all__]
    owners = {base for cls in exported if isinstance(cls, type) and issubclass(cls, DiffusionPipeline)
              for base in cls.__mro__ if base.__module__.startswith("idgen.") and "__call__" in vars(base)}
    for owner in owners:
        monkeypatch.setattr(owner, "__call__", _fast(vars(owner)["__call__"]))
    return workspace


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 6, "the README lost its Python examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: BLOCKS[i].strip().splitlines()[0][:60])
def test_readme_example_runs_as_written(index, readme_world):
    code = BLOCKS[index].replace('"/models/', f'"{readme_world / "models"}/')
    namespace = {"__name__": "__readme__"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    produced = [v for k, v in namespace.items() if k in ("image", "images", "out", "result", "frames", "back")]
    assert produced, "every example makes something"
    for value in produced:
        pixels = getattr(value, "image", value)
        pixels = np.asarray(pixels[0] if isinstance(pixels, list) else pixels)
        assert pixels.size and np.isfinite(pixels.astype(float)).all()
