"""CIFAR-stem ResNets from torchvision's building blocks, and SupCon's projection head.

The CIFAR stem (Khosla et al.'s code, used by the paper) replaces ImageNet's 7x7 stride-2
convolution and max-pool with one 3x3 stride-1 convolution, keeping 32x32 inputs at full
resolution into the first stage. ``width`` scales every stage (64 = torchvision's ResNet), so
CPU-scale runs can use a thin network with the same topology.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

ARCHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def check_arch(arch: str) -> str:
    """An architecture name: one of ``ARCHS``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown; choose one of {', '.join(ARCHS)}")
    return arch


class CifarResNet(ResNet):
    """torchvision's ResNet with a 3x3 stride-1 stem, no max-pool, no classifier, and stage
    widths (w, 2w, 4w, 8w). ``forward`` returns the pooled feature vector."""

    def __init__(self, arch: str = "resnet50", width: int = 64, in_channels: int = 3):
        block, layers = ARCHS[check_arch(arch)]
        super().__init__(block, list(layers))
        # Rebuild the stages at the requested width with torchvision's own _make_layer.
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.fc = nn.Identity()
        self.feature_dim = 8 * width * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class ProjectionHead(nn.Module):
    """SupCon's MLP head: Linear(d, d) - ReLU - Linear(d, out), output L2-normalised."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True),
                                 nn.Linear(in_dim, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(h), dim=-1)


class ContrastiveModel(nn.Module):
    """Encoder + projection head. ``forward`` gives L2-normalised embeddings; ``features`` the
    encoder's pooled features (what the linear probe and kNN monitor use)."""

    def __init__(self, arch: str = "resnet50", width: int = 64, in_channels: int = 3,
                 proj_dim: int = 128):
        super().__init__()
        self.encoder = CifarResNet(arch, width, in_channels)
        self.head = ProjectionHead(self.encoder.feature_dim, proj_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build_model(config, in_channels: int, n_classes: int = 0) -> nn.Module:
    """The run's model: encoder + projection head (:class:`ContrastiveModel`), or for the
    supervised reference (``loss=ce``) encoder + linear classifier to ``n_classes``
    (:class:`sincere.supervised.ClassifierModel`)."""
    from sincere.supervised import ClassifierModel, is_supervised
    m = config.model
    if is_supervised(config.loss.name):
        if n_classes < 2:
            raise ValueError(f"loss=ce needs the number of classes (>= 2); got {n_classes}")
        return ClassifierModel(m.arch, m.width, in_channels, n_classes)
    return ContrastiveModel(m.arch, m.width, in_channels, m.proj_dim)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
