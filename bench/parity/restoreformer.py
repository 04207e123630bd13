"""Make the RestoreFormer++ parity reference (tests/data/parity/restoreformer/) and the released
layout (tests/data/layouts/restoreformer.json) with the OFFICIAL code.

Usage: python bench/parity/restoreformer.py /path/to/RestoreFormerPlusPlus-checkout

Runs the official `RestoreFormer/modules/vqvae/vqvae_arch.py: VQVAEGANMultiHeadTransformer` (loaded
from its file: it needs only torch and numpy) at a tiny size, as RestoreFormer++ (`head_size=4,
ex_multi_scale_num=1`) and as RestoreFormer v1 (`head_size=8, ex_multi_scale_num=0`), on weights
drawn from a seed by `seeded_weights` (the test draws the same ones) and a seeded input, and
stores `model(x)[0]` (the official inference's output before `tensor2img`'s clamp). The layout is
the full-size RestoreFormer++ state dict, built on meta, with the `vqvae.` prefix the released
Lightning checkpoint stores it under. Not run by the tests.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from idgen.testing.restorers import RESTOREFORMER_WEIGHT_RECIPE as WEIGHT_RECIPE, seeded_state_dict

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "data" / "parity" / "restoreformer"
LAYOUT = REPO / "tests" / "data" / "layouts" / "restoreformer.json"
WEIGHT_SEED, INPUT_SEED = 0, 1
TINY = {"n_embed": 64, "embed_dim": 16, "ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 2,
        "attn_resolutions": [16], "in_channels": 3, "resolution": 32, "z_channels": 32}
VERSIONS = {"restoreformer_pp": {"head_size": 4, "ex_multi_scale_num": 1},
            "restoreformer_v1": {"head_size": 8, "ex_multi_scale_num": 0}}
BATCH = 2


def import_official(checkout: Path):
    path = checkout / "RestoreFormer" / "modules" / "vqvae" / "vqvae_arch.py"
    spec = importlib.util.spec_from_file_location("restoreformer_official_vqvae_arch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_commit(checkout: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def codebook_margin(model, x: torch.Tensor) -> tuple[float, int]:
    """The smallest gap between the nearest and second-nearest codebook distance (a near tie could
    flip between implementations), and how many codes are used."""
    hs = model.encoder(x)
    z = model.quant_conv(hs["out"]).permute(0, 2, 3, 1).reshape(-1, model.quantize.e_dim)
    e = model.quantize.embedding.weight
    d = (z ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * z @ e.t()
    two = d.topk(2, dim=1, largest=False).values
    return float((two[:, 1] - two[:, 0]).min()), int(d.argmin(1).unique().numel())


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit(__doc__)
    checkout = Path(argv[0]).resolve()
    official = import_official(checkout)
    torch.set_grad_enabled(False)

    x = torch.rand(BATCH, TINY["in_channels"], TINY["resolution"], TINY["resolution"],
                   generator=torch.Generator().manual_seed(INPUT_SEED)) * 2 - 1
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "input.npy", x.numpy())
    case = {"official_repo": "wzhouxiff/RestoreFormerPlusPlus", "official_commit": official_commit(checkout),
            "official_class": "RestoreFormer.modules.vqvae.vqvae_arch.VQVAEGANMultiHeadTransformer",
            "weight_seed": WEIGHT_SEED, "input_seed": INPUT_SEED,
            "input": "input.npy: torch.rand(B, 3, R, R, generator=manual_seed(input_seed)) * 2 - 1 (RGB in [-1, 1])",
            "weights": "idgen.testing.restorers.seeded_state_dict(official state_dict shapes, weight_seed, "
                       "fan_in_ranks=(4,), raw=('embedding.weight',))",
            "output": "model(x)[0], unclamped (the official inference clamps it to [-1, 1] in tensor2img)",
            "config": TINY, "versions": {}}
    for name, extra in VERSIONS.items():
        model = official.VQVAEGANMultiHeadTransformer(**TINY, **extra).eval()
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        model.load_state_dict(seeded_state_dict(shapes, WEIGHT_SEED, **WEIGHT_RECIPE), strict=True)
        out = model(x)[0]
        margin, used = codebook_margin(model, x)
        np.save(OUT / f"{name}.npy", out.numpy())
        case["versions"][name] = {**extra, "output": f"{name}.npy", "num_keys": len(shapes),
                                  "codebook_margin": margin, "codes_used": used,
                                  "output_abs_max": float(out.abs().max()),
                                  "output_fraction_clamped": float((out.abs() > 1).float().mean())}
        print(name, case["versions"][name])
    (OUT / "case.json").write_text(json.dumps(case, indent=1) + "\n")

    with torch.device("meta"):  # RestoreFormer++ as the official inference builds it
        full = official.VQVAEGANMultiHeadTransformer(head_size=4, ex_multi_scale_num=1)
    LAYOUT.write_text(json.dumps({
        "source": f"wzhouxiff/RestoreFormerPlusPlus@{case['official_commit']}: RestoreFormer++.ckpt = "
                  "checkpoint['state_dict'] keys of VQVAEGANMultiHeadTransformer(head_size=4, ex_multi_scale_num=1) "
                  "under 'vqvae.' (the file's training-only 'loss.*' keys are not listed)",
        "keys": {"vqvae." + k: list(v.shape) for k, v in full.state_dict().items()}}, indent=1) + "\n")
    print("wrote", OUT, LAYOUT)


if __name__ == "__main__":
    main()
