"""The TSM network: a torchvision 2D backbone with temporal shifts, a per-frame head, avg consensus."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision import models
from torchvision.models.mobilenetv2 import InvertedResidual

from model_store.tsm.config import ModelCard, TSMConfig
from model_store.tsm.shift import TemporalShift

# Wraps a module so that its input is shifted in time first.
ShiftWrapper = Callable[[nn.Module], nn.Module]

_RESNETS: dict[str, Callable[..., models.ResNet]] = {
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "resnet101": models.resnet101,
}


def build_backbone(config: TSMConfig, wrap: ShiftWrapper) -> tuple[nn.Module, int]:
    """The torchvision backbone (no classifier) with ``wrap`` applied where TSM shifts; its output width.

    Called with weights=None: weights come from checkpoints, never from the network.
    """
    if config.arch == "mobilenet_v2":
        mnet = models.mobilenet_v2(weights=None)
        mnet.classifier = nn.Identity()
        if config.shift_div:
            for block in mnet.modules():
                # As the paper's online demo: shift inside the residual inverted blocks only, right
                # before their first (pointwise expansion) convolution.
                if isinstance(block, InvertedResidual) and block.use_res_connect:
                    first = block.conv[0]
                    assert isinstance(first, nn.Sequential)
                    first[0] = wrap(first[0])
        return mnet, mnet.last_channel

    resnet = _RESNETS[config.arch](weights=None)
    width = resnet.fc.in_features
    resnet.fc = nn.Identity()
    if config.shift_div:
        # The reference code shifts every other block when layer3 is deep (ResNet-101), so that its
        # published checkpoints have `.net.` only on those blocks.
        n_round = 2 if len(resnet.layer3) >= 23 else 1
        for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            for i, block in enumerate(stage):
                if config.shift_place == "blockres":
                    if i % n_round == 0:
                        block.conv1 = wrap(block.conv1)
                else:
                    stage[i] = wrap(block)
    return resnet, width


class TSM(nn.Module):
    """Input float [N, T, 3, H, W] (normalised RGB) -> logits [N, K] averaged over the T segments.

    ``config.causal`` shifts from the past only (the network ``OnlineTSM`` runs frame by frame).

    Parameter names follow the reference implementation without its DataParallel prefix
    (``base_model.*``, ``new_fc.*``), so its checkpoints load by dropping ``module.``.
    """

    def __init__(self, config: TSMConfig) -> None:
        super().__init__()
        self.config = config
        causal = config.causal

        def wrap(net: nn.Module) -> nn.Module:
            return TemporalShift(
                net, num_segments=config.num_segments, shift_div=config.shift_div, causal=causal
            )

        self.base_model, self.embedding_dim = build_backbone(config, wrap)
        self.dropout = nn.Dropout(config.dropout)
        self.new_fc = nn.Linear(self.embedding_dim, config.num_classes)
        # The reference initialisation of the new classifier.
        nn.init.normal_(self.new_fc.weight, 0.0, 0.001)
        nn.init.zeros_(self.new_fc.bias)

    def forward_frames(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-frame (logits [N, T, K], pooled features [N, T, D])."""
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"expected input [N, T, 3, H, W], got {tuple(x.shape)}")
        t = self.config.num_segments
        if x.shape[1] != t:
            raise ValueError(f"expected {t} segments per clip (the weights' setting), got {x.shape[1]}")
        feats: Tensor = self.base_model(x.flatten(0, 1))  # [N*T, D]
        logits: Tensor = self.new_fc(self.dropout(feats))  # [N*T, K]
        return logits.view(-1, t, logits.shape[-1]), feats.view(-1, t, feats.shape[-1])

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits [N, K], clip embedding [N, D]), both averaged over the T segments."""
        logits, feats = self.forward_frames(x)
        return logits.mean(dim=1), feats.mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[0]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_from_card(card: ModelCard) -> TSM:
    return TSM(card.config)
