"""ResNet-18/34 trunks up to ``layer3`` (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016),
built without importing torchvision.

Why not ``torchvision.models.resnet18``: importing torchvision imports ``torchvision.ops``, which imports
``torch._dynamo`` (the compiler stack, about 3 s on 2 CPU cores with torch 2.15 and torchvision 0.29), and
every ``crossview locate``, ``index`` or ``demo`` command paid that at start-up for a network it runs in eager
mode. A 40-image ``locate`` took 9-11 s, a third of it that import. The other backbones still come from
torchvision (imported only when one is built), and a test checks that these trunks compute exactly what
torchvision's do with the same weights.

Module and parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
...), so its ImageNet state dicts load as they are and crossview's checkpoints do not change; so is the
initialisation (Kaiming-normal, fan-out, for convolutions; ones and zeros for batch norms).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["BLOCKS_PER_LAYER", "BasicBlock", "ResNetTrunk"]

BLOCKS_PER_LAYER: dict[str, tuple[int, int, int]] = {"resnet18": (2, 2, 2), "resnet34": (3, 4, 6)}
"""Basic blocks in ``layer1``, ``layer2`` and ``layer3`` (``layer4`` and the classifier are never built)."""


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (a strided 1x1 convolution when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNetTrunk(nn.Module):
    """The stem and ``layer1``-``layer3`` of a ResNet-18 or -34 (strides 4, 8 and 16; 64, 128 and 256 channels).

    Only holds the layers; :func:`crossview.encoders.backbones.build_backbone` groups them into stages.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        blocks = BLOCKS_PER_LAYER[name]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._layer(64, 64, blocks[0], stride=1)
        self.layer2 = self._layer(64, 128, blocks[1], stride=2)
        self.layer3 = self._layer(128, 256, blocks[2], stride=2)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _layer(in_channels: int, out_channels: int, blocks: int, *, stride: int) -> nn.Sequential:
        first = BasicBlock(in_channels, out_channels, stride)
        return nn.Sequential(first, *(BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)))
