"""Make the FaceID-Portrait parity reference (tests/data/parity/faceid-portrait/) with the OFFICIAL code.

Usage: PYTHONPATH=/path/with/einops python bench/parity/faceid_portrait.py /path/to/IP-Adapter-checkout

Runs the official `ip_adapter.ip_adapter_faceid_separate.IPAdapterFaceID(pipe, ckpt, "cpu",
num_tokens=16, n_cond=3, torch_dtype=torch.float32).generate(faceid_embeds=[1, 3, 512], ...)` (the
FaceID-Portrait recipe of the h94/IP-Adapter-FaceID model card) on the tiny SD1.5 components of the
FaceID parity case (`../shared/parity/faceid-sd15`) and idgen's seeded random Portrait checkpoint
(`idgen.testing.random_faceid_state_dict(unet, "faceid-portrait")`), and stores its output; also writes the
released Portrait files' key layouts (tests/data/layouts/ip-adapter-faceid-portrait.json) from the
official modules at full size (meta device). Only the official import of `MultiControlNetModel` (moved in diffusers 0.29, unused here) is
shimmed. Not run by the tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from idgen.testing.released import SD15_UNET, SDXL_UNET

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "data" / "parity" / "faceid-portrait"
BASE = REPO.parent / "shared" / "parity" / "faceid-sd15"
CASE = {"prompt": "photo of a person", "negative_prompt": "monochrome, low quality", "num_inference_steps": 3,
        "guidance_scale": 6.0, "height": 64, "width": 64, "scale": 0.7, "seed": 11, "n_cond": 3,
        "checkpoint_seed": 5}


def face_embeds(n: int) -> np.ndarray:
    """`[n, 512]` L2-normalised embeddings (insightface's `normed_embedding` of n photos)."""
    x = np.random.default_rng(2024).normal(size=(n, 512)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# The released base UNets (SD1.5, SDXL), for the layouts at full size.
LAYOUT_FILES = {"ip-adapter-faceid-portrait_sd15.bin": SD15_UNET, "ip-adapter-faceid-portrait-v11_sd15.bin": SD15_UNET,
                "ip-adapter-faceid-portrait_sdxl.bin": SDXL_UNET}


def write_layouts(IPAdapterFaceID) -> None:
    """tests/data/layouts/ip-adapter-faceid-portrait.json: key -> shape of each released Portrait file,
    from the official modules (`MLPProjModel(num_tokens=16)`, the official `set_ip_adapter` processors)
    built on meta UNets of the released sizes."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from ip_adapter.ip_adapter_faceid_separate import MLPProjModel

    layouts = {}
    for name, config in LAYOUT_FILES.items():
        with init_empty_weights():
            unet = UNet2DConditionModel(**config)
            holder = IPAdapterFaceID.__new__(IPAdapterFaceID)  # only its `set_ip_adapter`, on this UNet
            holder.pipe, holder.device, holder.num_tokens, holder.n_cond = SimpleNamespace(unet=unet), "meta", 16, 1
            holder.torch_dtype = torch.float32
            holder.set_ip_adapter()
            proj = MLPProjModel(cross_attention_dim=config["cross_attention_dim"], id_embeddings_dim=512, num_tokens=16)
        ip_layers = torch.nn.ModuleList(unet.attn_processors.values())
        layouts[name] = {"image_proj": {k: list(v.shape) for k, v in proj.state_dict().items()},
                         "ip_adapter": {k: list(v.shape) for k, v in ip_layers.state_dict().items()}}
    folder = REPO / "tests" / "data" / "layouts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ip-adapter-faceid-portrait.json").write_text(json.dumps(layouts, indent=1))


def main(checkout: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from idgen.testing import random_faceid_state_dict

    import diffusers.pipelines.controlnet as controlnet_pipelines
    from diffusers.models.controlnets import MultiControlNetModel

    # the official files import it from where diffusers < 0.29 had it (unused on this path)
    controlnet_pipelines.MultiControlNetModel = MultiControlNetModel
    sys.path.insert(0, str(checkout))
    from ip_adapter.ip_adapter_faceid_separate import IPAdapterFaceID

    write_layouts(IPAdapterFaceID)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(BASE / "vae"), text_encoder=CLIPTextModel.from_pretrained(BASE / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(BASE / "tokenizer"), unet=UNet2DConditionModel.from_pretrained(BASE / "unet"),
        scheduler=DDIMScheduler.from_pretrained(BASE / "scheduler"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    state_dict = random_faceid_state_dict(pipe.unet, "faceid-portrait", seed=CASE["checkpoint_seed"])
    faces = face_embeds(CASE["n_cond"])
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ip-adapter-faceid-portrait.bin"
        torch.save(state_dict, ckpt)
        model = IPAdapterFaceID(pipe, str(ckpt), "cpu", num_tokens=16, n_cond=CASE["n_cond"], torch_dtype=torch.float32)
        images = model.generate(
            faceid_embeds=torch.from_numpy(faces)[None], prompt=CASE["prompt"], negative_prompt=CASE["negative_prompt"],
            scale=CASE["scale"], num_samples=1, seed=CASE["seed"], guidance_scale=CASE["guidance_scale"],
            num_inference_steps=CASE["num_inference_steps"], height=CASE["height"], width=CASE["width"],
            output_type="np",
        )
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "expected.npy", np.asarray(images, dtype=np.float32))
    np.save(OUT / "face_embeds.npy", faces)
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not commit and (checkout / "COMMIT").is_file():  # an exported tree (`git show` of each file)
        commit = (checkout / "COMMIT").read_text().strip()
    (OUT / "case.json").write_text(json.dumps({
        "case": CASE,
        "official": {"repo": "tencent-ailab/IP-Adapter", "commit": commit or "unknown",
                     "code": "ip_adapter/ip_adapter_faceid_separate.py: IPAdapterFaceID(num_tokens=16, n_cond=3).generate"},
        "components": "../shared/parity/faceid-sd15 (tiny SD1.5, DDIM)",
        "checkpoint": "idgen.testing.random_faceid_state_dict(unet, 'faceid-portrait', seed=checkpoint_seed)",
        "face_embeds": "face_embeds.npy: [n_cond, 512], L2-normalised, given as [1, n_cond, 512]",
        "generator": "the official get_generator(seed, 'cpu') = torch.Generator('cpu').manual_seed(seed)",
        "output": "expected.npy: output_type='np', shape [1, 64, 64, 3]",
    }, indent=1))
    print("wrote", OUT, np.asarray(images).shape)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
