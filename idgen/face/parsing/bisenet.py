"""BiSeNet face parser (zllrunning/face-parsing.PyTorch, the network of `79999_iter.pth`).

The module tree and parameter names are the official ones (`model.py`, `resnet.py` at commit
d2e684cf), so the released file loads with no key map; facexlib's `parsing_bisenet.pth` is the
same network under the same names (`facexlib/parsing/bisenet.py`). Differences from the official
code, none of which changes the weights or the first output:

- `forward` returns only the main logits (the official `out`, the first of its three outputs);
  the two auxiliary heads `conv_out16` / `conv_out32` are kept so the files load unchanged, and are
  computed by `forward_all`.
- no weight initialisation here (the official `Resnet18.init_weight` downloads ImageNet weights);
  `random_bisenet_state_dict` makes seeded test weights instead.
- the official `SpatialPath` is not part of `BiSeNet` (unused there too) and is left out.

Input: `[B, 3, H, W]` float, RGB in [0, 1] normalised with the ImageNet mean/std (the official
`test.py`: `ToTensor()` + `Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))`), H and W
multiples of 32 (512 x 512 in the official test). Output: `[B, n_classes, H, W]` logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: ImageNet normalisation of the official `test.py` (RGB order).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The official training and test resolution.
INPUT_SIZE = 512
#: CelebAMask-HQ's 19 classes (see `labels.py`).
NUM_CLASSES = 19


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU; keys `conv.weight`, `bn.*`."""

    def __init__(self, in_chan: int, out_chan: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chan, out_chan, kernel_size=ks, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block (official `resnet.py`): two 3x3 convs, a 1x1 conv + BN shortcut when the
    width or stride changes."""

    def __init__(self, in_chan: int, out_chan: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chan, out_chan, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chan)
        self.conv2 = nn.Conv2d(out_chan, out_chan, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chan)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if in_chan != out_chan or stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chan, out_chan, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chan),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + residual)


def _layer(in_chan: int, out_chan: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_chan, out_chan, stride), *[BasicBlock(out_chan, out_chan) for _ in range(blocks - 1)])


class Resnet18(nn.Module):
    """The ResNet18 backbone without its classifier (torchvision's key names, no `fc`).

    `forward(x [B, 3, H, W]) -> (feat8 [B, 128, H/8, W/8], feat16 [B, 256, H/16, W/16],
    feat32 [B, 512, H/32, W/32])`."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _layer(64, 64, 2, 1)
        self.layer2 = _layer(64, 128, 2, 2)
        self.layer3 = _layer(128, 256, 2, 2)
        self.layer4 = _layer(256, 512, 2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class BiSeNetOutput(nn.Module):
    """A 3x3 ConvBNReLU then a 1x1 conv to the class logits (at the input's resolution)."""

    def __init__(self, in_chan: int, mid_chan: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_chan, mid_chan, ks=3, stride=1, padding=1)
        self.conv_out = nn.Conv2d(mid_chan, n_classes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class AttentionRefinementModule(nn.Module):
    """ConvBNReLU, then a channel attention from the global average (1x1 conv, BN, sigmoid)."""

    def __init__(self, in_chan: int, out_chan: int):
        super().__init__()
        self.conv = ConvBNReLU(in_chan, out_chan, ks=3, stride=1, padding=1)
        self.conv_atten = nn.Conv2d(out_chan, out_chan, kernel_size=1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_chan)
        self.sigmoid_atten = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = F.avg_pool2d(feat, feat.shape[2:])
        return feat * self.sigmoid_atten(self.bn_atten(self.conv_atten(atten)))


class ContextPath(nn.Module):
    """ResNet18 features refined at 1/16 and 1/32 and brought up to 1/8 (nearest).

    `forward(x) -> (feat8 [B, 128, H/8], feat16_up [B, 128, H/8], feat32_up [B, 128, H/16])`."""

    def __init__(self):
        super().__init__()
        self.resnet = Resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, ks=3, stride=1, padding=1)
        self.conv_head16 = ConvBNReLU(128, 128, ks=3, stride=1, padding=1)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(F.avg_pool2d(feat32, feat32.shape[2:]))
        avg_up = F.interpolate(avg, feat32.shape[2:], mode="nearest")
        feat32_up = F.interpolate(self.arm32(feat32) + avg_up, feat16.shape[2:], mode="nearest")
        feat32_up = self.conv_head32(feat32_up)
        feat16_up = F.interpolate(self.arm16(feat16) + feat32_up, feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(feat16_up), feat32_up


class FeatureFusionModule(nn.Module):
    """Concatenate the two paths, ConvBNReLU 1x1, and add a channel-attended copy of itself."""

    def __init__(self, in_chan: int, out_chan: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_chan, out_chan, ks=1, stride=1, padding=0)
        self.conv1 = nn.Conv2d(out_chan, out_chan // 4, kernel_size=1, stride=1, padding=0, bias=False)
        self.conv2 = nn.Conv2d(out_chan // 4, out_chan, kernel_size=1, stride=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.sigmoid = nn.Sigmoid()

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = F.avg_pool2d(feat, feat.shape[2:])
        atten = self.sigmoid(self.conv2(self.relu(self.conv1(atten))))
        return feat * atten + feat


class BiSeNet(nn.Module):
    """The face-parsing BiSeNet (ResNet18 context path; the spatial path is ResNet's 1/8 features).

    Args:
        n_classes: output classes (19 for CelebAMask-HQ, `79999_iter.pth`).

    `forward(x [B, 3, H, W]) -> logits [B, n_classes, H, W]` (the official first output `out`,
    upsampled bilinearly with `align_corners=True`); see the module docstring for the input.
    """

    def __init__(self, n_classes: int = NUM_CLASSES):
        super().__init__()
        self.n_classes = n_classes
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)  # auxiliary heads: training only
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, feat_cp8, _ = self.cp(x)
        out = self.conv_out(self.ffm(feat8, feat_cp8))
        return F.interpolate(out, x.shape[2:], mode="bilinear", align_corners=True)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The official three outputs `(out, out16, out32)`, each `[B, n_classes, H, W]`."""
        feat8, feat_cp8, feat_cp16 = self.cp(x)
        outs = (self.conv_out(self.ffm(feat8, feat_cp8)), self.conv_out16(feat_cp8), self.conv_out32(feat_cp16))
        return tuple(F.interpolate(o, x.shape[2:], mode="bilinear", align_corners=True) for o in outs)


def random_bisenet_state_dict(seed: int, n_classes: int = NUM_CLASSES) -> dict[str, torch.Tensor]:
    """Seeded random weights in the official layout (for tests and parity cases; not a model).

    Convs are normal with variance 1 / fan_in (logits of order 1-10 rather than He's hundreds),
    BatchNorm affine and running statistics are random around the identity so
    that eval-mode BN is exercised; `num_batches_tracked` is 0. The same seed gives the same tensors
    on every machine (one CPU `torch.Generator`, keys in the module's order).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: (tuple(v.shape), v.dtype) for k, v in BiSeNet(n_classes).state_dict().items()}
    state_dict = {}
    for key, (shape, dtype) in shapes.items():
        if key.endswith("num_batches_tracked"):
            value = torch.zeros(shape, dtype=dtype)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith("running_mean") or key.endswith("bias"):
            value = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:  # BatchNorm weight
            value = 0.75 + 0.5 * torch.rand(shape, generator=generator)
        else:  # conv weight [out, in, k, k]
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=generator) * (1.0 / fan_in) ** 0.5
        state_dict[key] = value
    return state_dict
