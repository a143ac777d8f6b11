"""Training checkpoints: a folder of safetensors weights and one JSON description (no pickle).

Layout::

    checkpoint.json        format, version, ModelConfig, preprocessing, grid, labels,
                           classes, training metadata, sha256 of each file, resume info
    model.safetensors      the weights this checkpoint stands for (best on validation)
    last.safetensors       optional: weights after the last epoch, for resuming
    optimizer.safetensors  optional: optimizer state tensors, keys "state.<param>.<name>"

The optimizer's param_groups and non-tensor state go into the JSON. The folder is
written beside its destination and swapped in (``atomic.folder_swap``), so a
reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import folder_swap
from ..errors import CheckpointError, InputError
from ..grid import ModelGrid
from ..model import ModelConfig, build_model
from ..package.store import sha256_file
from ..preprocessing import Preprocessing

FORMAT = "liverlesion-checkpoint"
VERSION = 1
CONFIG_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


@dataclass
class ResumeState:
    """What resuming needs: the last epoch done, its weights and the optimizer state."""

    epoch: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``model`` holds the checkpoint's weights, in eval mode."""

    path: Path
    config: ModelConfig
    model: nn.Module
    preprocessing: Preprocessing
    grid: ModelGrid
    labels: tuple[str, ...]
    classes: tuple[str, ...]
    training: dict[str, Any] = field(default_factory=dict)
    resume: ResumeState | None = None


def _state_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; weights are small, so copy.
    return {name: t.detach().to("cpu").contiguous().clone() for name, t in state.items()}


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into safetensors tensors and JSON-able scalars."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{name}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
              for group in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_flatten_optimizer`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, values in info.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in info["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: str | Path, model: nn.Module, *, config: ModelConfig, preprocessing: Preprocessing,
                    grid: ModelGrid, labels: Sequence[str], classes: Sequence[str] = (),
                    training: Mapping[str, Any] | None = None,
                    model_state: Mapping[str, torch.Tensor] | None = None,
                    resume: ResumeState | None = None) -> Path:
    """Write a checkpoint folder at ``path`` atomically and return its path.

    ``model_state`` (default: ``model.state_dict()``) are the weights the checkpoint
    stands for; ``resume`` optionally adds the last epoch's weights and optimizer state.
    """
    dest = Path(path)
    if len(labels) != config.seg_labels:
        raise InputError(f"{len(labels)} label names for a model with {config.seg_labels} labels")
    with folder_swap(dest, lambda folder: (folder / CONFIG_FILE).is_file(), "a checkpoint") as tmp:
        save_file(_state_tensors(model_state if model_state is not None else model.state_dict()),
                  str(tmp / MODEL_FILE))
        description: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "model": config.to_dict(),
            "preprocessing": preprocessing.to_dict(), "grid": grid.to_dict(),
            "labels": list(labels), "classes": list(classes), "training": dict(training or {}),
        }
        if resume is not None:
            save_file(_state_tensors(resume.model_state), str(tmp / LAST_FILE))
            tensors, info = _flatten_optimizer(resume.optimizer_state)
            save_file(tensors, str(tmp / OPTIMIZER_FILE))
            description["resume"] = {"epoch": resume.epoch, "optimizer": info}
        description["files"] = {p.name: sha256_file(p) for p in sorted(tmp.glob("*.safetensors"))}
        (tmp / CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return dest


def read_checkpoint_json(path: str | Path) -> dict[str, Any]:
    """The checkpoint's JSON description, checked for format and version (weights not read)."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} not found: expected a folder holding {CONFIG_FILE}")
    config_path = folder / CONFIG_FILE
    try:
        description = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{config_path} is missing: {folder} is not a liverlesion checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from None
    if not isinstance(description, dict):
        raise CheckpointError(f"{config_path} holds a JSON {type(description).__name__}, not an object")
    if description.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} has format {description.get('format')!r}; accepted: {FORMAT!r}")
    if description.get("version") != VERSION:
        raise CheckpointError(f"{config_path} has version {description.get('version')!r}; this liverlesion "
                              f"reads version {VERSION}")
    return description


def _read_tensors(folder: Path, name: str, description: dict[str, Any]) -> dict[str, torch.Tensor]:
    file = folder / name
    if not file.is_file():
        raise CheckpointError(f"{file} is missing from the checkpoint")
    expected = description.get("files", {}).get(name)
    if expected is not None and sha256_file(file) != expected:
        raise CheckpointError(f"{file} does not match the sha256 recorded in {CONFIG_FILE}: it is corrupted")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file} is not a readable safetensors file: {exc}") from None


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], file: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            details.append("shape mismatch " + ", ".join(
                f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:5]))
        raise CheckpointError(f"weights in {file} do not fit the model described in {CONFIG_FILE}: "
                              + "; ".join(details))
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, *, with_resume: bool = False) -> Checkpoint:
    """Read a checkpoint folder; the model is rebuilt from its config and loaded strictly.

    ``with_resume`` also reads the last-epoch weights and optimizer state (``None`` when
    the checkpoint has none).
    """
    folder = Path(path)
    description = read_checkpoint_json(folder)
    try:
        config = ModelConfig.from_dict(description["model"])
        preprocessing = Preprocessing.from_dict(description["preprocessing"])
        grid = ModelGrid.from_dict(description["grid"])
        labels = tuple(str(v) for v in description["labels"])
        classes = tuple(str(v) for v in description.get("classes", []))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE} has an invalid or missing entry: {exc!r}") from None
    model = build_model(config)
    _load_weights(model, _read_tensors(folder, MODEL_FILE, description), folder / MODEL_FILE)
    model.eval()
    resume = None
    if with_resume and "resume" in description:
        info = description["resume"]
        last = _read_tensors(folder, LAST_FILE, description)
        _load_weights(build_model(config), last, folder / LAST_FILE)  # same strict check as the main weights
        tensors = _read_tensors(folder, OPTIMIZER_FILE, description)
        optimizer = _unflatten_optimizer(tensors, info["optimizer"])
        resume = ResumeState(epoch=int(info["epoch"]), model_state=last, optimizer_state=optimizer)
    return Checkpoint(path=folder, config=config, model=model, preprocessing=preprocessing, grid=grid,
                      labels=labels, classes=classes, training=description.get("training", {}), resume=resume)
