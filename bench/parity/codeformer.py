"""Make the CodeFormer parity reference (tests/data/parity/codeformer/) and the full-size layout
(tests/data/layouts/codeformer.json) with the OFFICIAL code.

Usage: python bench/parity/codeformer.py /path/to/CodeFormer-checkout [official-commit]

Runs the official `basicsr.archs.codeformer_arch.CodeFormer` (sczhou/CodeFormer) on seeded tiny
weights (`tiny_state_dict`, reproduced by tests/test_restorer_codeformer.py from the seed) and a
seeded input, called as the official `inference_codeformer.py` does: `net(x, w=w, adain=True)[0]`
in eval mode under `no_grad`, for w = 0 and w = 0.7.

What is not official, and why:
- basicsr's registry and logger are stubbed, and `basicsr.archs` is imported without its
  `__init__` (which imports every arch and its dependencies); the two arch files are unchanged.
- The official `CodeFormer.__init__` hard-codes the 512-px VQGAN sizes in its `super().__init__`
  call: the tiny class puts `_TinyVQAutoEncoder` after `CodeFormer` in the MRO, so that call
  builds the official VQAutoEncoder at the tiny sizes. After the official constructor has run, its
  512-px tables (`channels`, `fuse_encoder_block`, `fuse_generator_block`) are replaced by the tiny
  pyramid's, written out by hand below, and `fuse_convs_dict` is rebuilt from the official
  `Fuse_sft_block` at those widths. Every forward method is the official one.
- The official forward hard-codes a 16x16 latent of width 256, so the tiny config keeps both
  (64 px with 3 levels) and shrinks the widths, the codebook and the transformer instead.
Not run by the tests.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from idgen.testing.restorers import seeded_state_dict

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "data" / "parity" / "codeformer"
LAYOUT = REPO / "tests" / "data" / "layouts" / "codeformer.json"
SEED = 0
BATCH = 2
WEIGHTS = [0.0, 0.7]
#: idgen `CodeFormer` arguments: a 64-px, 3-level VQGAN with the official 16x16x256 latent.
TINY = {"dim_embd": 32, "n_head": 2, "n_layers": 2, "codebook_size": 64, "latent_size": 256,
        "connect_list": ["16", "32", "64"], "img_size": 64, "nf": 32, "ch_mult": [1, 2, 2], "res_blocks": 2,
        "attn_resolutions": [16]}
#: The official tables for the TINY pyramid (the official values are for 512 px and nf=64): the
#: width at each resolution, the encoder block whose output is fused (the last ResBlock of each
#: level) and the generator block after which it is fused (the first ResBlock of each level, the
#: last one at 16 px). Encoder blocks: 0 conv, 1-2 res, 3 down, 4-5 res, 6 down, 7 res 8 attn 9 res
#: 10 attn, ...; generator: 0 conv, 1 res 2 attn 3 res, 4 res 5 attn 6 res 7 attn, 8 up, 9-10 res,
#: 11 up, 12-13 res, 14 norm, 15 conv.
TINY_TABLES = {"channels": {"64": 32, "32": 64, "16": 64},
               "fuse_encoder_block": {"64": 2, "32": 5, "16": 9},
               "fuse_generator_block": {"16": 6, "32": 9, "64": 12}}
WEIGHTS_RECIPE = ("one torch.Generator().manual_seed(seed), keys in sorted order, torch.randn(shape) each: "
                  "/ sqrt(prod(shape[1:])) for tensors of 2+ dims, 1 + 0.1 x for other '.weight's (norms), "
                  "0.1 x for the rest (biases)")


def weights_digest(state_dict: dict) -> str:
    """sha256 of the float32 bytes of the tensors, keys in sorted order (the test checks it)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def import_official(checkout: Path):
    """`basicsr.archs.codeformer_arch` of the checkout, with basicsr's registry and logger stubbed."""
    registry = types.ModuleType("basicsr.utils.registry")
    registry.ARCH_REGISTRY = types.SimpleNamespace(register=lambda *a, **k: (lambda cls: cls))
    utils = types.ModuleType("basicsr.utils")
    utils.get_root_logger = lambda *a, **k: logging.getLogger("basicsr")
    utils.registry = registry
    basicsr = types.ModuleType("basicsr")
    basicsr.__path__ = [str(checkout / "basicsr")]
    archs = types.ModuleType("basicsr.archs")  # without its __init__: it imports every arch file
    archs.__path__ = [str(checkout / "basicsr" / "archs")]
    sys.modules.update({"basicsr": basicsr, "basicsr.utils": utils, "basicsr.utils.registry": registry,
                        "basicsr.archs": archs})
    return importlib.import_module("basicsr.archs.codeformer_arch")


def tiny_official_class(arch):
    """The official `CodeFormer`, its VQGAN and tables at the TINY sizes (see the module docstring)."""

    class _TinyVQAutoEncoder(arch.VQAutoEncoder):
        def __init__(self, img_size, nf, ch_mult, quantizer, res_blocks, attn_resolutions, codebook_size):
            # the 512-px arguments of the official `super().__init__` call are replaced by TINY's
            super().__init__(TINY["img_size"], TINY["nf"], list(TINY["ch_mult"]), quantizer, TINY["res_blocks"],
                             list(TINY["attn_resolutions"]), codebook_size)

    class TinyCodeFormer(arch.CodeFormer, _TinyVQAutoEncoder):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)  # the official constructor
            self.channels = dict(TINY_TABLES["channels"])
            self.fuse_encoder_block = dict(TINY_TABLES["fuse_encoder_block"])
            self.fuse_generator_block = dict(TINY_TABLES["fuse_generator_block"])
            self.fuse_convs_dict = nn.ModuleDict()
            for f_size in self.connect_list:
                self.fuse_convs_dict[f_size] = arch.Fuse_sft_block(self.channels[f_size], self.channels[f_size])

    assert TinyCodeFormer.__mro__[2] is _TinyVQAutoEncoder
    return TinyCodeFormer


def write_layout(arch, commit: str) -> None:
    """`{key: shape}` of the official `CodeFormer()` at full size (the sizes inference_codeformer.py
    passes are its defaults), built on the meta device."""
    with torch.device("meta"):
        net = arch.CodeFormer(dim_embd=512, codebook_size=1024, n_head=8, n_layers=9,
                              connect_list=["32", "64", "128", "256"])
    doc = {"source": f"sczhou/CodeFormer@{commit}: state_dict() of the official CodeFormer(dim_embd=512, "
                     "codebook_size=1024, n_head=8, n_layers=9, connect_list=['32', '64', '128', '256']) "
                     "(inference_codeformer.py), the layout of params_ema in the released codeformer.pth (v0.1.0)",
           "keys": {k: list(v.shape) for k, v in net.state_dict().items()}}
    LAYOUT.parent.mkdir(parents=True, exist_ok=True)
    LAYOUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {LAYOUT.relative_to(REPO)} ({len(doc['keys'])} keys)")


def main(checkout: str, commit: str = "") -> None:
    checkout = Path(checkout).resolve()
    commit = commit or subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                                      text=True).stdout.strip()
    if not commit:
        raise SystemExit(f"{checkout} is not a git checkout: pass the official commit as the second argument.")
    arch = import_official(checkout)
    write_layout(arch, commit)

    torch.manual_seed(SEED)  # the official constructors initialise from the global RNG (overwritten below)
    official_kwargs = {k: TINY[k] for k in ("dim_embd", "n_head", "n_layers", "codebook_size", "latent_size",
                                            "connect_list")}
    net = tiny_official_class(arch)(**official_kwargs)
    weights = seeded_state_dict({k: tuple(v.shape) for k, v in net.state_dict().items()}, SEED)
    net.load_state_dict(weights, strict=True)
    net.eval()

    size = TINY["img_size"]
    x = torch.rand(BATCH, 3, size, size, generator=torch.Generator().manual_seed(SEED + 1)) * 2 - 1
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "input.npy", x.numpy())
    outputs, margins = {}, []
    with torch.no_grad():
        for w in WEIGHTS:
            out, logits, _ = net(x, w=w, adain=True)
            top2 = logits.topk(2, dim=2).values
            margins.append(float((top2[..., 0] - top2[..., 1]).min()))
            name = f"output_w{w}.npy"
            np.save(OUT / name, out.numpy())
            outputs[str(w)] = name
            print(f"w={w}: output {tuple(out.shape)}, range [{out.min():.3f}, {out.max():.3f}]")
    margin = min(margins)
    if margin < 1e-3:  # a near tie between two codes would make the reference fragile
        raise SystemExit(f"top-2 logit margin {margin:.2e} is too small for a stable reference; change SEED.")
    case = {"official_repo": "sczhou/CodeFormer", "official_commit": commit,
            "official_call": "net.eval(); with torch.no_grad(): net(x, w=w, adain=True)[0]",
            "seed": SEED, "config": TINY, "official_tables": TINY_TABLES,
            "weights": WEIGHTS_RECIPE, "weights_sha256": weights_digest(weights),
            "input": "input.npy", "input_recipe": "torch.rand(shape, generator=manual_seed(seed + 1)) * 2 - 1",
            "outputs": outputs, "min_logit_margin": margin, "torch": torch.__version__}
    (OUT / "case.json").write_text(json.dumps(case, indent=2) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT.relative_to(REPO)} ({total / 1024:.0f} KB), min top-2 logit margin {margin:.3g}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
