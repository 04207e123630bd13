"""Make the face-parsing parity reference (tests/data/parity/face-parsing/) with the OFFICIAL BiSeNet.

Usage: python bench/parity/face_parsing.py /path/to/face-parsing.PyTorch-checkout

Runs the official `model.BiSeNet(n_classes=19)` of zllrunning/face-parsing.PyTorch (the network of
`79999_iter.pth`) in eval mode on idgen's seeded random weights
(`idgen.face.parsing.random_bisenet_state_dict(seed)`, loaded with `strict=True`) and on a real face
(/work/shared/faces/portrait_glasses.jpg, resized to 512 x 512 with PIL bilinear and normalised as
the official `test.py` does), and stores:

- `input.png`: the 512 x 512 RGB image fed (lossless, so the test feeds the same pixels);
- `logits_lowres.npy`: the official main head `conv_out` before its upsampling, `[1, 19, 64, 64]`
  float32 (the full `[1, 19, 512, 512]` output is 20 MB; it is this map upsampled bilinearly with
  `align_corners=True`, the official last step);
- `logits_sub.npy`: the official first output `out` itself at every 8th pixel from (4, 4),
  `[1, 19, 64, 64]` float32;
- `labels.png`: `out.argmax(1)` at 512 x 512 (uint8);
- `case.json`; and tests/data/layouts/face_parsing_bisenet.json: key -> shape of the official
  `BiSeNet(19).state_dict()` (what `79999_iter.pth` holds; the `num_batches_tracked` scalars
  are those of torch >= 0.4.1).

Shims, for the official files only: `import torchvision` (unused by model.py) gets an empty
module, and `resnet.Resnet18.init_weight` (downloads ImageNet weights) does nothing, since every
weight is then replaced. `test.py`'s torchvision `ToTensor` + `Normalize` are written out here.
Not run by the tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from idgen.face.parsing import random_bisenet_state_dict

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "data" / "parity" / "face-parsing"
LAYOUT = REPO / "tests" / "data" / "layouts" / "face_parsing_bisenet.json"
FACE = REPO.parent / "shared" / "faces" / "portrait_glasses.jpg"
CASE = {"weights_seed": 7, "size": 512, "face": "shared/faces/portrait_glasses.jpg", "sub_offset": 4, "sub_stride": 8}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def official_bisenet(checkout: Path):
    """The official `BiSeNet` class, imported from `checkout` with the two shims above."""
    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    sys.path.insert(0, str(checkout))
    import resnet

    resnet.Resnet18.init_weight = lambda self: None
    from model import BiSeNet

    return BiSeNet


def main(checkout: Path) -> None:
    torch.set_num_threads(2)
    BiSeNet = official_bisenet(checkout)
    net = BiSeNet(n_classes=19)
    LAYOUT.parent.mkdir(parents=True, exist_ok=True)
    LAYOUT.write_text(json.dumps({
        "source": "zllrunning/face-parsing.PyTorch@d2e684cf: model.BiSeNet(n_classes=19).state_dict() "
                  "(79999_iter.pth; facexlib's parsing_bisenet.pth has the same module tree and names)",
        "keys": {k: list(v.shape) for k, v in net.state_dict().items()},
    }, indent=1))
    net.load_state_dict(random_bisenet_state_dict(CASE["weights_seed"]), strict=True)
    net.eval()

    size = CASE["size"]
    image = Image.open(FACE).convert("RGB").resize((size, size), Image.BILINEAR)  # as test.py
    pixels = np.asarray(image)
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255.0)  # ToTensor
    x = ((x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1))[None]  # Normalize

    captured = {}
    net.conv_out.register_forward_hook(lambda module, args, output: captured.setdefault("lowres", output.detach()))
    with torch.no_grad():
        out = net(x)[0]
    lowres = captured["lowres"]
    o, s = CASE["sub_offset"], CASE["sub_stride"]
    OUT.mkdir(parents=True, exist_ok=True)
    image.save(OUT / "input.png")
    np.save(OUT / "logits_lowres.npy", lowres.numpy().astype(np.float32))
    np.save(OUT / "logits_sub.npy", out[:, :, o::s, o::s].numpy().astype(np.float32))
    Image.fromarray(out[0].argmax(0).numpy().astype(np.uint8)).save(OUT / "labels.png")
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not commit and (checkout / "COMMIT").is_file():  # an exported tree (`git show` of each file)
        commit = (checkout / "COMMIT").read_text().strip()
    (OUT / "case.json").write_text(json.dumps({
        "case": CASE,
        "official": {"repo": "zllrunning/face-parsing.PyTorch", "commit": commit or "unknown",
                     "code": "model.py: BiSeNet(n_classes=19).eval()(x)[0]; resnet.py (init_weight stubbed)"},
        "weights": "idgen.face.parsing.random_bisenet_state_dict(weights_seed), load_state_dict(strict=True)",
        "input": "input.png: [512, 512, 3] RGB uint8 (PIL bilinear resize of the face); fed as test.py: "
                 "/255, ImageNet mean/std, [1, 3, 512, 512]",
        "logits_lowres": "logits_lowres.npy: conv_out output before upsampling, [1, 19, 64, 64] float32",
        "logits_sub": "logits_sub.npy: out[:, :, 4::8, 4::8], [1, 19, 64, 64] float32",
        "labels": "labels.png: out.argmax(1)[0], [512, 512] uint8",
        "logits_range": [float(out.min()), float(out.max())],
    }, indent=1))
    print("wrote", OUT, tuple(out.shape), f"logits in [{float(out.min()):.3f}, {float(out.max()):.3f}]")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
