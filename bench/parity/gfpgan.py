"""Make the GFPGAN parity reference (tests/data/parity/gfpgan/) with the OFFICIAL code.

Usage: python bench/parity/gfpgan.py /path/to/GFPGAN-checkout

Loads the official `gfpgan/archs/gfpganv1_clean_arch.py` and `stylegan2_clean_arch.py` from the
checkout (a git clone, or the files exported with a `COMMIT` file beside them) and runs
`GFPGANv1Clean` at a tiny size on seeded random weights and a seeded input, as `GFPGANer.enhance`
calls it: `gfpgan(x, return_rgb=False, weight=0.5)[0]`, with the global RNG seeded before the call
(the official forward draws the decoder noise from it), and once more with `randomize_noise=False`
(the stored noise buffers). Also writes tests/data/layouts/gfpgan_v1.4.json: key -> shape of
`GFPGANv1Clean(**the GFPGANer 'clean' arguments)` at full size (meta device; v1.3 = v1.4).

basicsr is not needed: only its import plumbing is stubbed (`ARCH_REGISTRY.register()` returns the
class; `default_init_weights` does nothing, as every weight is then overwritten by the seeded ones),
and the two files are imported by path so that gfpgan/__init__.py (cv2, facexlib, torchvision) is
not run. Not run by the tests.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "data" / "parity" / "gfpgan"
LAYOUT = REPO / "tests" / "data" / "layouts" / "gfpgan_v1.4.json"
#: The official GFPGANer(arch="clean", channel_multiplier=2) arguments.
CLEAN_ARGS = {"out_size": 512, "num_style_feat": 512, "channel_multiplier": 2, "decoder_load_path": None,
              "fix_decoder": False, "num_mlp": 8, "input_is_latent": True, "different_w": True, "narrow": 1,
              "sft_half": True}
TINY = {**CLEAN_ARGS, "out_size": 64, "num_style_feat": 16, "narrow": 1 / 32}
CASE = {"weights_seed": 3, "input_seed": 4, "noise_seed": 5, "batch": 2, "weight": 0.5}


def import_official(checkout: Path):
    """The official `GFPGANv1Clean`, with basicsr's registry and init helper stubbed."""
    registry = types.SimpleNamespace(register=lambda *args, **kwargs: (lambda cls: cls))
    stubs = {"basicsr": {}, "basicsr.utils": {}, "basicsr.utils.registry": {"ARCH_REGISTRY": registry},
             "basicsr.archs": {}, "basicsr.archs.arch_util": {"default_init_weights": lambda *a, **k: None},
             "gfpgan": {"__path__": [str(checkout / "gfpgan")]},
             "gfpgan.archs": {"__path__": [str(checkout / "gfpgan" / "archs")]}}
    for name, attributes in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
    for name in ("stylegan2_clean_arch", "gfpganv1_clean_arch"):  # imported by path, in dependency order
        spec = importlib.util.spec_from_file_location(f"gfpgan.archs.{name}", checkout / "gfpgan" / "archs" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["gfpgan.archs.gfpganv1_clean_arch"].GFPGANv1Clean


def seeded_weights(shapes: dict, seed: int) -> dict:
    """Random weights of a sensible scale for every key, rounded to float16 (the stored file):
    conv / linear weights ~ N(0, 1 / fan_in), biases ~ 0.1 N, style modulation biases ~ 1 + 0.1 N
    (the official init fills 1), noise strengths ~ 0.5 N (zero in the official init, which would hide
    the noise), constant input and noise buffers ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        x = torch.randn(shape, generator=g)
        if key.endswith("modulation.bias"):
            x = 1 + 0.1 * x
        elif ".noises." in key or key.endswith("constant_input.weight"):
            pass
        elif key.endswith(".weight") and len(shape) == 1:  # StyleConv noise strength, [1]
            x = 0.5 * x
        elif key.endswith("modulated_conv.weight"):  # [1, C_out, C_in, k, k]
            x = x / math.sqrt(math.prod(shape[2:]))
        elif key.endswith(".weight"):
            x = x / math.sqrt(math.prod(shape[1:]))
        else:  # biases
            x = 0.1 * x
        out[key] = x.half()
    return out


def commit_of(checkout: Path) -> str:
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not commit and (checkout / "COMMIT").is_file():  # an exported tree (`git show` of each file)
        commit = (checkout / "COMMIT").read_text().strip()
    return commit or "unknown"


def write_layout(GFPGANv1Clean, commit: str) -> None:
    with torch.device("meta"):
        model = GFPGANv1Clean(**CLEAN_ARGS)
    LAYOUT.parent.mkdir(parents=True, exist_ok=True)
    LAYOUT.write_text(json.dumps({
        "source": f"TencentARC/GFPGAN@{commit}: GFPGANv1Clean(**GFPGANer 'clean' arguments).state_dict(), the "
                  "params_ema of GFPGANv1.4.pth and GFPGANv1.3.pth",
        "config": CLEAN_ARGS,
        "keys": {k: list(v.shape) for k, v in model.state_dict().items()},
    }, indent=1))


@torch.no_grad()
def main(checkout: Path) -> None:
    GFPGANv1Clean = import_official(checkout)
    commit = commit_of(checkout)
    write_layout(GFPGANv1Clean, commit)

    model = GFPGANv1Clean(**TINY).eval()
    weights = seeded_weights({k: tuple(v.shape) for k, v in model.state_dict().items()}, CASE["weights_seed"])
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    g = torch.Generator().manual_seed(CASE["input_seed"])
    x = torch.rand(CASE["batch"], 3, TINY["out_size"], TINY["out_size"], generator=g) * 2 - 1
    torch.manual_seed(CASE["noise_seed"])  # the official forward draws its noise from the global RNG
    random_noise = model(x.clone(), return_rgb=False, weight=CASE["weight"])[0]
    stored_noise = model(x.clone(), return_rgb=False, randomize_noise=False, weight=CASE["weight"])[0]

    OUT.mkdir(parents=True, exist_ok=True)
    save_file({"params_ema." + k: v for k, v in weights.items()}, str(OUT / "weights.safetensors"))
    np.save(OUT / "input.npy", x.numpy())
    np.save(OUT / "expected.npy", random_noise.numpy())
    np.save(OUT / "expected_stored_noise.npy", stored_noise.numpy())
    (OUT / "case.json").write_text(json.dumps({
        "config": TINY,
        "case": CASE,
        "official": {"repo": "TencentARC/GFPGAN", "commit": commit,
                     "code": "gfpgan/archs/gfpganv1_clean_arch.py: GFPGANv1Clean(**config), called as "
                             "GFPGANer.enhance does: model(x, return_rgb=False, weight=0.5)[0]"},
        "weights": "weights.safetensors: float16, keys 'params_ema.<official key>' (bench/parity/gfpgan.py: seeded_weights)",
        "input": "input.npy: [batch, 3, 64, 64] RGB in [-1, 1], torch.rand(generator=manual_seed(input_seed)) * 2 - 1",
        "noise": "expected.npy: torch.manual_seed(noise_seed) right before the call; the official StyleConvs draw "
                 "new_empty(b, 1, h, w).normal_() from the global CPU RNG (4x4, then two per level)",
        "stored_noise": "expected_stored_noise.npy: the same call with randomize_noise=False (the noises.noise* buffers)",
    }, indent=1))
    print("wrote", OUT, "and", LAYOUT, tuple(random_noise.shape), float(random_noise.abs().max()))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
