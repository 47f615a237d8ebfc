"""`create_localizer()`: a timm backbone with a class head and a box head.

The backbone's weights are resolved by `classification.models` (packaged ImageNet weights
offline, a file, the hub, or none). The class head sees the pooled feature map; the box head
sees the map itself, so it knows where things are. Boxes come out as normalised corners in
[0, 1] with x0 < x1 and y0 < y1 by construction.

For training on a CPU the backbone is split around its last `cut` blocks (`split`): the trunk
before them runs once per (image, view) and its maps are cached; the tail and the heads train.
"""
from __future__ import annotations

import torch
from torch import nn

from classification.models import create_classifier, split_model


def _ordered_corners(raw: torch.Tensor) -> torch.Tensor:
    """(B, 4) raw outputs -> (x0, y0, x1, y1) in [0, 1] with x0 <= x1, y0 <= y1, all smooth:
    x0 = sigmoid(a), x1 = x0 + (1 - x0) * sigmoid(b)."""
    lo = torch.sigmoid(raw[:, :2])
    hi = lo + (1 - lo) * torch.sigmoid(raw[:, 2:])
    return torch.cat([lo[:, :1], lo[:, 1:], hi[:, :1], hi[:, 1:]], dim=1)


class PooledBoxHead(nn.Module):
    """An MLP on the pooled features (seed 003's head); position survives pooling only weakly."""

    def __init__(self, channels: int, grid: int, hidden: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden, 4))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return _ordered_corners(self.mlp(maps.mean(dim=(2, 3))))


class SpatialBoxHead(nn.Module):
    """A 1x1 convolution down to a few channels, then an MLP over every grid cell: the layout of
    the map reaches the regressor (the grid is fixed by the input size)."""

    def __init__(self, channels: int, grid: int, hidden: int, dropout: float, reduced: int = 32):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(channels, reduced, 1), nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(reduced * grid * grid, hidden),
                                 nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, 4))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return _ordered_corners(self.mlp(self.reduce(maps)))


class EdgeBoxHead(nn.Module):
    """Each edge as a soft-argmax over grid positions: a small convolution scores every cell for
    each of the four edges, rows (for x0, x1) or columns (for y0, y1) are pooled by log-sum-exp,
    and the edge is the expected position under the softmax, grid positions spanning [0, 1].
    Few weights, and the same detector everywhere: a few hundred boxes are enough to fit it."""

    def __init__(self, channels: int, grid: int, hidden: int, dropout: float):
        super().__init__()
        self.score = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                   nn.Conv2d(hidden, 4, 3, padding=1))
        self.register_buffer("positions", torch.linspace(0, 1, grid), persistent=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        s = self.score(maps)  # (B, 4, h, w): x0, y0, x1, y1
        cols = torch.logsumexp(s[:, [0, 2]], dim=2)  # (B, 2, w)
        rows = torch.logsumexp(s[:, [1, 3]], dim=3)  # (B, 2, h)
        xs = (torch.softmax(cols, dim=2) * self.positions).sum(dim=2)
        ys = (torch.softmax(rows, dim=2) * self.positions).sum(dim=2)
        xs, _ = xs.sort(dim=1)
        ys, _ = ys.sort(dim=1)
        return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)


BOX_HEADS = {"pooled": PooledBoxHead, "spatial": SpatialBoxHead, "edges": EdgeBoxHead}


class Localizer(nn.Module):
    """images (B, 3, S, S) -> (B, C + 4): class logits, then the normalised box (x0, y0, x1, y1).

    One output tensor, so the ONNX export is a single named output with a dynamic batch axis."""

    def __init__(self, backbone: nn.Module, num_classes: int, box_head: str, size: int,
                 hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        if box_head not in BOX_HEADS:
            raise ValueError(f"unknown box head {box_head!r}; valid: {', '.join(BOX_HEADS)}")
        self.backbone, self.num_classes = backbone, num_classes
        with torch.no_grad():
            c, grid = backbone.eval().forward_features(torch.zeros(1, 3, size, size)).shape[1:3]
        self.cls_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, num_classes))
        self.box_head = BOX_HEADS[box_head](c, grid, hidden, dropout)

    def heads(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone maps (B, C, h, w) -> (class logits (B, K), boxes (B, 4))."""
        return self.cls_head(maps.mean(dim=(2, 3))), self.box_head(maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, boxes = self.heads(self.backbone.forward_features(x))
        return torch.cat([logits, boxes], dim=1)

    def head_modules(self) -> list[nn.Module]:
        return [self.cls_head, self.box_head]


class Tail(nn.Module):
    """Trunk maps -> backbone maps: the last `cut` blocks, then the head convolution (unpooled)."""

    def __init__(self, backbone: nn.Module, cut: int):
        super().__init__()
        self.blocks = nn.ModuleList(list(backbone.blocks)[len(backbone.blocks) - cut:])
        self.conv_head, self.bn2 = backbone.conv_head, backbone.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.bn2(self.conv_head(x))


class FeatureMaps(nn.Module):
    """The whole backbone to its unpooled maps: the trunk when nothing is cut off (any timm CNN)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


def split(model: Localizer, cut: int) -> tuple[nn.Module, nn.Module]:
    """(trunk, tail) around the last `cut` blocks; they share the model's modules, and
    `tail(trunk(x))` equals `model.backbone.forward_features(x)`. With `cut=0` the tail is empty."""
    if cut == 0:
        return FeatureMaps(model.backbone), nn.Identity()
    trunk = split_model(model.backbone, cut)[0]  # also checks the architecture and the range of cut
    return trunk, Tail(model.backbone, cut)


def create_localizer(name: str, num_classes: int, size: int, weights: str | None = "auto",
                     box_head: str = "spatial", hidden: int = 256, dropout: float = 0.2) -> Localizer:
    """A `Localizer` on timm model `name` with resolved backbone weights.

    Raises:
        InputError: unknown model name or unusable weights (see `classification.models`).
    """
    backbone = create_classifier(name, max(num_classes, 2), weights=weights)
    backbone.reset_classifier(0)
    return Localizer(backbone, num_classes, box_head, size, hidden, dropout)
