"""Parity reference: the OFFICIAL InstantID "full" pipeline (`pipeline_stable_diffusion_xl_instantid_full.py`,
IdentityNet + an extra ControlNet, with and without its `control_mask`) on tiny seeded models;
writes `tests/data/parity/instantid-full/` (`case.json`, the inputs, `expected.npy` with the mask,
`expected_no_mask.npy`), which `tests/test_instantid_controlnets.py` compares idgen's
`StableDiffusionXLInstantIDPipeline` to. Not run by the tests.

    python bench/parity/instantid_full.py /path/to/InstantID-checkout [--commit SHA]

The models are rebuilt by the tests from the seeds in `case.json` (`parity_kit` of
`tests/test_instantid_controlnets.py`: SDXL's 3-level layout at tiny widths, VAE factor 8, which
the official `control_mask` code needs). The official
Resampler hard-codes its hyperparameters (dim 1280, depth 4, ...); they are swapped for the tiny
ones (`TINY_RESAMPLER`), its math untouched. The official full pipeline encodes prompts with its
own long-prompt-weighting code, so the text goes in as embeddings (diffusers' `encode_prompt` of
the prompt and negative prompt), which it uses unchanged.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "parity" / "instantid-full"
SEEDS = {"components": 0, "unet": 10, "vae": 11, "identitynet": 1, "extra_controlnet": 2, "adapter": 3}
CALL = {
    "prompt": "photo of a person", "negative_prompt": "low quality", "num_inference_steps": 3,
    "guidance_scale": 5.0, "height": 64, "width": 64, "controlnet_conditioning_scale": [0.7, 0.5],
    "ip_adapter_scale": 0.6, "seed": 104,
}
KPS = [[20.0, 24.0], [44.0, 24.0], [32.0, 34.0], [23.0, 46.0], [41.0, 46.0]]
FACE_BOX = (12, 14, 52, 56)  # x1, y1, x2, y2 of the "enhance face region" mask


def tests_module():
    """`tests/test_instantid_controlnets.py`: its `parity_kit` builds the models from the seeds,
    its `prompt_embeddings` is diffusers' `encode_prompt` as call arguments."""
    sys.path.insert(0, str(ROOT / "tests"))
    return importlib.import_module("test_instantid_controlnets")


def official_module(checkout: Path, name: str):
    """The official module `name` of the checkout, imported as it is (its `ip_adapter` package from
    the checkout), with `MultiControlNetModel` where older diffusers kept it and the tiny Resampler
    hyperparameters in place of the hard-coded official ones (its math untouched)."""
    import diffusers.models.controlnets.multicontrolnet as multicontrolnet

    from idgen.testing import TINY_RESAMPLER

    sys.modules.setdefault("diffusers.pipelines.controlnet.multicontrolnet", multicontrolnet)
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    module = importlib.import_module(name)
    official_resampler = module.Resampler
    tiny = {k: TINY_RESAMPLER[k] for k in ("dim", "depth", "dim_head", "heads", "ff_mult")}
    module.Resampler = lambda **kwargs: official_resampler(**{**kwargs, **tiny})
    return module


def parse_arguments(doc: str, out: Path, argv=None) -> argparse.Namespace:
    """`checkout` (the official InstantID checkout), `--out` (default `out`) and `--commit`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help="the official InstantID checkout (github.com/instantX-research/InstantID)")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--commit", help="the checkout's commit, when it is not a git work tree (e.g. a `git archive`)")
    return parser.parse_args(argv)


def official_commit(checkout: Path, given: str = None) -> str:
    """`given`, else the checkout's `git rev-parse HEAD`."""
    if given:
        return given
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def write_inputs(out: Path, width: int, height: int) -> None:
    """face_embeds.npy (raw, ArcFace-like norm ~22), kps.png, depth.png (a smooth seeded image) and
    control_mask.png (white on `FACE_BOX`, RGB as the official demo makes it)."""
    from idgen.conditioning import draw_kps

    rng = np.random.default_rng(7)
    np.save(out / "face_embeds.npy", rng.normal(0, 1, (1, 512)).astype(np.float32))
    draw_kps((width, height), np.asarray(KPS, np.float32)).save(out / "kps.png")
    y, x = np.mgrid[0:height, 0:width]
    depth = 255 * (0.5 + 0.4 * np.sin(x / 9.0) * np.cos(y / 7.0)) + rng.normal(0, 8, (height, width))
    Image.fromarray(np.clip(depth, 0, 255).astype(np.uint8)).convert("RGB").save(out / "depth.png")
    mask = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = FACE_BOX
    mask[y1:y2, x1:x2] = 255
    Image.fromarray(mask).save(out / "control_mask.png")


def main(argv=None) -> int:
    args = parse_arguments(__doc__, OUT, argv)
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    module = official_module(args.checkout, "pipeline_stable_diffusion_xl_instantid_full")
    args.out.mkdir(parents=True, exist_ok=True)
    write_inputs(args.out, CALL["width"], CALL["height"])
    case = {
        "official": {"file": "pipeline_stable_diffusion_xl_instantid_full.py", "commit": official_commit(args.checkout, args.commit),
                     "class": "StableDiffusionXLInstantIDPipeline",
                     "environment": f"torch {torch.__version__} CPU, diffusers {importlib.import_module('diffusers').__version__}"},
        "seeds": SEEDS,
        "models": "parity_kit(seeds) of tests/test_instantid_controlnets.py: controlnet = [IdentityNet, extra "
                  "ControlNet]; adapter = random_instantid_state_dict(unet, seeds.adapter) with TINY_RESAMPLER",
        "call": CALL,
        "text": "prompt / negative_prompt go in as the four *_embeds of diffusers' encode_prompt (CFG)",
        "keypoints": KPS,
        "inputs": {"face_embeds": "face_embeds.npy (image_embeds)", "image": ["kps.png", "depth.png"],
                   "control_mask": f"control_mask.png (face box {FACE_BOX})"},
        "output": f"expected.npy (with control_mask), expected_no_mask.npy: output_type='np', shape [1, {CALL['height']}, {CALL['width']}, 3]",
    }
    (args.out / "case.json").write_text(json.dumps(case, indent=1) + "\n")  # first: the tests module reads it
    kit = tests_module()
    parts, nets, adapter = kit.parity_kit(SEEDS)
    pipe = module.StableDiffusionXLInstantIDPipeline(**parts, controlnet=MultiControlNetModel(nets))
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(adapter, Path(tmp) / "ip-adapter.bin")
        pipe.load_ip_adapter_instantid(str(Path(tmp) / "ip-adapter.bin"))
    call = dict(CALL)
    seed = call.pop("seed")
    embeds = kit.prompt_embeddings(pipe, call.pop("prompt"), call.pop("negative_prompt"))
    images = [Image.open(args.out / "kps.png").convert("RGB"), Image.open(args.out / "depth.png").convert("RGB")]
    for name, mask in (("expected.npy", Image.open(args.out / "control_mask.png")), ("expected_no_mask.npy", None)):
        out = pipe(**embeds, **call, image_embeds=np.load(args.out / "face_embeds.npy"), image=images, control_mask=mask,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
        np.save(args.out / name, out.astype(np.float32))
    print(f"wrote {args.out}: {out.shape}, mean {out.mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
