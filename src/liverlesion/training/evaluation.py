"""Predict label maps and classes with a torch model, and score them with :mod:`liverlesion.metrics`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..metrics import evaluate_predictions, slice_lesion_class
from ..preprocessing import Preprocessing
from .datasets import SliceSet, load_set, split_indices


def class_source(model: nn.Module) -> str:
    """How a model's slice class is read: 'head' (Y-Net), 'vote' (5-label joint map) or 'none'."""
    config = getattr(model, "config", None)
    if config is None:
        return "none"
    if config.arch == "ynet":
        return "head"
    return "vote" if config.seg_labels > 3 else "none"


@torch.no_grad()
def predict_slices(model: nn.Module, hu: np.ndarray, preprocessing: Preprocessing, *, batch_size: int = 16,
                   device: str | torch.device = "cpu") -> tuple[np.ndarray, list[int | None] | None]:
    """Label maps (N, H, W) uint8 and slice classes for HU slices (N, H, W) on the model grid.

    Classes: the Y-Net's head, a majority vote of lesion pixels for the joint 5-label
    map, ``None`` (no list) for a segmentation-only model.
    """
    source = class_source(model)
    was_training = model.training
    model.eval()
    maps: list[np.ndarray] = []
    classes: list[int | None] = []
    try:
        for start in range(0, len(hu), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(hu[start:start + batch_size]))[:, None]
            x = preprocessing(batch.to(device))
            out = model(x)
            seg = out[0] if isinstance(out, tuple) else out
            batch_maps = seg.argmax(1).to(torch.uint8).cpu().numpy()
            maps.append(batch_maps)
            if source == "head":
                classes.extend(int(c) for c in out[1].argmax(1).cpu())
            elif source == "vote":
                classes.extend(slice_lesion_class(m) for m in batch_maps)
    finally:
        model.train(was_training)
    label_maps = np.concatenate(maps) if maps else np.zeros((0, *hu.shape[1:]), np.uint8)
    return label_maps, (classes if source != "none" else None)


def evaluate_model(model: nn.Module, data: SliceSet, preprocessing: Preprocessing, *, batch_size: int = 16,
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """Metrics of ``model`` on ``data`` (on the model grid); class metrics when both sides have classes."""
    maps, pred_classes = predict_slices(model, data.hu, preprocessing, batch_size=batch_size, device=device)
    true_classes = None if data.classes is None else data.classes.tolist()
    if pred_classes is None or true_classes is None:
        pred_classes = true_classes = None
    return evaluate_predictions(list(maps), list(data.labels), pred_classes, true_classes)


def evaluate_checkpoint(path: str | Path, data_dir: str | Path, split: str = "val", *,
                        dataset: str | None = None, batch_size: int = 16,
                        device: str = "cpu") -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset; ``split`` 'val' uses the patients it was validated on.

    ``dataset`` is 'lits' or 'lesion_slices'; by default the one the checkpoint was trained on.
    Metrics are computed on the model grid, as during training.
    """
    from .checkpoint import load_checkpoint

    if split not in ("val", "all"):
        raise InputError(f"unknown split {split!r}; accepted: val, all")
    checkpoint = load_checkpoint(path)
    training = checkpoint.training
    trained_on = training.get("data", {}).get("kind")
    kind = dataset or trained_on or ("lits" if checkpoint.config.seg_labels == 3
                                     and checkpoint.config.arch == "joint" else "lesion_slices")
    data = load_set(kind, data_dir, checkpoint.grid)
    if split == "val":
        if kind != trained_on or "val_groups" not in training.get("data", {}):
            raise InputError(f"checkpoint {path} has no validation split of the {kind} dataset; "
                             "use split 'all'")
        val_groups = training["data"]["val_groups"]
        if not val_groups:
            raise InputError(f"checkpoint {path} was trained without a validation split; use split 'all'")
        data = data.subset(split_indices(data, val_groups)[1])
        if not len(data):
            raise InputError(f"none of the validation patients of {path} are in {data_dir}")
    checkpoint.model.to(device)
    metrics = evaluate_model(checkpoint.model, data, checkpoint.preprocessing, batch_size=batch_size,
                             device=device)
    return {"checkpoint": str(path), "arch": checkpoint.config.arch, "dataset": kind, "data": data.root,
            "split": split, **metrics}
