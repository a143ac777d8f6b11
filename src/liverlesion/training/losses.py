"""Losses: cross-entropy + soft Dice for segmentation, cross-entropy for the Y-Net class head."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice of the foreground labels, pooled over the batch (stable with small lesions)."""
    labels = logits.shape[1]
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, labels).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return 1.0 - dice[1:].mean()


def training_loss(outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor], target: torch.Tensor,
                  classes: torch.Tensor | None = None, *, dice_weight: float = 1.0,
                  class_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts; a Y-Net's ``(seg, class)`` outputs add the class cross-entropy."""
    seg, class_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
    ce = F.cross_entropy(seg, target)
    dice = soft_dice_loss(seg, target)
    loss = ce + dice_weight * dice
    parts = {"ce": float(ce.detach()), "dice": float(dice.detach())}
    if class_logits is not None:
        if classes is None:
            raise ValueError("a Y-Net needs slice classes for its class head")
        class_ce = F.cross_entropy(class_logits, classes)
        loss = loss + class_weight * class_ce
        parts["class_ce"] = float(class_ce.detach())
    return loss, parts
