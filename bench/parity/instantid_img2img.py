"""Parity reference: the OFFICIAL InstantID img2img pipeline (`pipeline_stable_diffusion_xl_instantid_img2img.py`,
IdentityNet only) on the tiny seeded models of the full-pipeline case; writes
`tests/data/parity/instantid-img2img/` (`case.json`, `init.png`, `expected.npy`), which
`tests/test_instantid_img2img.py` compares idgen's `StableDiffusionXLInstantIDImg2ImgPipeline` to.
The face embedding and keypoint image are those of `tests/data/parity/instantid-full/`. Not run by
the tests.

    python bench/parity/instantid_img2img.py /path/to/InstantID-checkout [--commit SHA]

The official img2img file defines its own Resampler; its hard-coded hyperparameters are swapped
for the tiny ones as in `instantid_full.py`. Its prompts go through diffusers' `encode_prompt`,
so the text is given as prompts.
"""

from __future__ import annotations

import importlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from instantid_full import OUT as FULL_CASE, SEEDS, official_commit, official_module, parse_arguments, tests_module

OUT = FULL_CASE.parent / "instantid-img2img"
CALL = {
    "prompt": "photo of a person", "negative_prompt": "low quality", "num_inference_steps": 4, "strength": 0.6,
    "guidance_scale": 5.0, "controlnet_conditioning_scale": 0.7, "ip_adapter_scale": 0.6, "seed": 105,
}


def write_init(out: Path, size: int = 64) -> None:
    """init.png: a smooth seeded colour image."""
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 + 0.4 * np.sin(6 * x + c) * np.cos(5 * y - c) for c in (0.0, 1.0, 2.0)], -1)
    image = 255 * image + rng.normal(0, 6, image.shape)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(out / "init.png")


def main(argv=None) -> int:
    args = parse_arguments(__doc__, OUT, argv)
    module = official_module(args.checkout, "pipeline_stable_diffusion_xl_instantid_img2img")
    args.out.mkdir(parents=True, exist_ok=True)
    write_init(args.out)
    case = {
        "official": {"file": "pipeline_stable_diffusion_xl_instantid_img2img.py",
                     "commit": official_commit(args.checkout, args.commit), "class": "StableDiffusionXLInstantIDImg2ImgPipeline",
                     "environment": f"torch {torch.__version__} CPU, diffusers {importlib.import_module('diffusers').__version__}"},
        "seeds": SEEDS,
        "models": "parity_kit(seeds) of tests/test_instantid_controlnets.py, IdentityNet only; adapter = "
                  "random_instantid_state_dict(unet, seeds.adapter) with TINY_RESAMPLER",
        "call": CALL,
        "inputs": {"image": "init.png (64x64)", "face_embeds": "../instantid-full/face_embeds.npy (image_embeds)",
                   "control_image": "../instantid-full/kps.png"},
        "output": "expected.npy: output_type='np', shape [1, 64, 64, 3]",
    }
    (args.out / "case.json").write_text(json.dumps(case, indent=1) + "\n")
    parts, nets, adapter = tests_module().parity_kit(SEEDS)
    pipe = module.StableDiffusionXLInstantIDImg2ImgPipeline(**parts, controlnet=nets[0])
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(adapter, Path(tmp) / "ip-adapter.bin")
        pipe.load_ip_adapter_instantid(str(Path(tmp) / "ip-adapter.bin"))
    call = dict(CALL)
    seed = call.pop("seed")
    pipe.set_ip_adapter_scale(call.pop("ip_adapter_scale"))  # the official img2img __call__ takes no scale
    out = pipe(**call, image=Image.open(args.out / "init.png").convert("RGB"),
               control_image=Image.open(FULL_CASE / "kps.png").convert("RGB"),
               image_embeds=np.load(FULL_CASE / "face_embeds.npy"),
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
    np.save(args.out / "expected.npy", out.astype(np.float32))
    print(f"wrote {args.out}: {out.shape}, mean {out.mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
