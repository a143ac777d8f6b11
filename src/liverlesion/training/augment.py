"""Light, label-safe augmentation on HU batches: left-right flips and small intensity changes."""

from __future__ import annotations

import torch


def augment_batch(hu: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, *, flip: float = 0.5,
                  shift_hu: float = 20.0, scale: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Per slice: flip columns with probability ``flip``; HU * (1 +- scale) + (+- shift_hu).

    ``hu`` is N x 1 x H x W, ``labels`` N x H x W; ``generator`` makes it reproducible.
    """
    n = hu.shape[0]
    flips = torch.rand(n, generator=generator) < flip  # drawn even when flip=0: same random stream
    if flips.any():
        hu, labels = hu.clone(), labels.clone()
        hu[flips] = hu[flips].flip(-1)
        labels[flips] = labels[flips].flip(-1)
    gain = 1.0 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * scale
    offset = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * shift_hu
    return hu * gain + offset, labels
