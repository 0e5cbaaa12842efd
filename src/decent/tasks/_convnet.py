"""The deep study's 1-D CNN (:class:`ConvNet1d`), in a module of its own so that
:mod:`decent.tasks.models`, whose batched closed-form gradients recognise it, and
:mod:`decent.tasks.nets`, which builds tasks around it, can both import it."""

from __future__ import annotations

import torch
from torch import nn


class ConvNet1d(nn.Module):
    """Three ``Conv1d(k=5, padding=2) -> GroupNorm -> ReLU`` blocks (the last two with
    stride 2), global average pooling and a linear head.

    Input ``(B, length)`` (datasets are ``(N, f)``; one channel is added here), output
    ``(B, classes)`` logits.
    """

    def __init__(self, channels: int, groups: int, classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for stride in (1, 2, 2):
            layers += [
                nn.Conv1d(c_in, channels, 5, stride=stride, padding=2),
                nn.GroupNorm(groups, channels),
                nn.ReLU(),
            ]
            c_in = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(-2)).mean(-1))


__all__ = ["ConvNet1d"]
