"""The training loop: one stage (LiTS pretraining or lesion fine-tuning), with transfer and resume.

Deterministic for a given seed and thread count: the batch order, augmentation and
dropout of epoch ``e`` are seeded from (seed, e), so a resumed run continues exactly
as an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from ..grid import ModelGrid
from ..model import ModelConfig, build_model, count_flops, count_parameters
from ..preprocessing import DEFAULT_WINDOWS, Preprocessing
from .augment import augment_batch
from .checkpoint import Checkpoint, ResumeState, load_checkpoint, save_checkpoint
from .config import (
    DEFAULT_DEPTH,
    DEFAULT_GRID_SIZE,
    DEFAULT_GRID_SPACING,
    DEFAULT_WIDTH,
    TrainConfig,
    head_spec,
)
from .datasets import SliceSet, load_set, split_groups, split_indices, target_labels
from .evaluation import evaluate_model
from .losses import training_loss
from .progress import EpochReport, TrainCallback
from .transfer import transfer_weights


@dataclass
class TrainResult:
    """The outcome of :func:`train`: where the checkpoint is, and how training went."""

    checkpoint: Path
    stage: str
    arch: str
    best_epoch: int
    best_score: float | None
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    epochs_run: int
    elapsed_s: float
    transfer: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checkpoint": str(self.checkpoint)}


def selection_score(stage: str, metrics: dict[str, Any]) -> float:
    """What 'best on validation' means: fine-tuning mean(lesion Dice, accuracy); pretraining
    mean(liver Dice, lesion Dice)."""
    if stage == "pretrain" or "accuracy" not in metrics:
        return (metrics["liver_dice"] + metrics["lesion_dice"]) / 2.0
    return (metrics["lesion_dice"] + metrics["accuracy"]) / 2.0


def learning_rate(base: float, epoch: int, epochs: int) -> float:
    """Linear warm-up over the first tenth of the run, then cosine decay to 5% of ``base``.

    A pure function of the epoch, so a resumed run follows the same schedule.
    """
    warmup = epochs // 10
    if epoch <= warmup:
        return base * epoch / (warmup + 1)
    progress = (epoch - warmup - 1) / max(1, epochs - warmup - 1)
    return base * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but torch sees no CUDA GPU; use 'cpu' or 'auto'")
    return torch.device(name)


def _from_resume(config: TrainConfig, checkpoint: Checkpoint) -> TrainConfig:
    """The resumed run's config: as stored, except epochs, data, out, threads and device."""
    stored = dict(checkpoint.training.get("config", {}))
    known = {f.name for f in fields(TrainConfig)}
    stored = {k: v for k, v in stored.items() if k in known}
    if "windows" in stored and stored["windows"] is not None:
        stored["windows"] = tuple(tuple(w) for w in stored["windows"])
    base = TrainConfig(**{**stored, "data": config.data, "out": config.out, "init": None,
                          "resume": config.resume})
    return replace(base, epochs=config.epochs, threads=config.threads, device=config.device)


def _resolve_model(config: TrainConfig,
                   source: Checkpoint | None) -> tuple[ModelConfig, ModelGrid, Preprocessing]:
    """Model shape, grid and windows: set in the config, else from the source checkpoint, else defaults."""
    seg_labels, _, _ = head_spec(config.stage, config.arch)
    base = source.config if source is not None else ModelConfig(base_width=DEFAULT_WIDTH, depth=DEFAULT_DEPTH)

    def pick(value: Any, inherited: Any) -> Any:
        return inherited if value is None else value

    model_config = ModelConfig(
        arch=config.arch, in_channels=base.in_channels, base_width=pick(config.base_width, base.base_width),
        depth=pick(config.depth, base.depth),
        blocks_per_level=pick(config.blocks_per_level, base.blocks_per_level), se_reduction=base.se_reduction,
        seg_labels=seg_labels, downsample=base.downsample, dropout=base.dropout,
    )
    default_grid = ModelGrid((DEFAULT_GRID_SIZE,) * 2, (DEFAULT_GRID_SPACING,) * 2)
    grid = source.grid if source is not None else default_grid
    if config.grid_size is not None:
        grid = ModelGrid((config.grid_size,) * 2, grid.spacing_mm)
    if config.grid_spacing is not None:
        grid = ModelGrid(grid.size, (float(config.grid_spacing),) * 2)
    windows = config.windows or (source.preprocessing.windows if source is not None else DEFAULT_WINDOWS)
    preprocessing = Preprocessing(windows=windows)
    if preprocessing.channels != model_config.in_channels:
        model_config = replace(model_config, in_channels=preprocessing.channels)
    if any(s % model_config.divisor for s in grid.size):
        raise InputError(f"grid size {grid.size} must be a multiple of {model_config.divisor} "
                         f"for a network of depth {model_config.depth}")
    return model_config, grid, preprocessing


def _train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: SliceSet,
                 config: TrainConfig, preprocessing: Preprocessing, epoch: int,
                 device: torch.device) -> tuple[float, dict[str, float]]:
    """One pass over the training slices in a seeded order; returns the mean loss and its parts."""
    model.train()
    order = np.random.default_rng([config.seed, epoch]).permutation(len(data))
    torch.manual_seed(config.seed * 100_003 + epoch)  # dropout
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    hu = torch.from_numpy(data.hu)
    labels = torch.from_numpy(target_labels(data.labels, config.arch))
    classes = None if data.classes is None else torch.from_numpy(data.classes)
    total, count = 0.0, 0
    sums: dict[str, float] = {}
    for start in range(0, len(order), config.batch_size):
        index = torch.from_numpy(order[start:start + config.batch_size])
        if len(index) < 2 and len(order) > 1:
            continue  # a batch of one would make BatchNorm statistics degenerate
        x, y = hu[index][:, None], labels[index].long()
        if config.augment:
            x, y = augment_batch(x, y, generator, flip=0.5 if config.flip else 0.0)
        x = preprocessing(x.to(device))
        outputs = model(x)
        batch_classes = None if classes is None else classes[index].to(device)
        loss, parts = training_loss(outputs, y.to(device), batch_classes, dice_weight=config.dice_weight,
                                    class_weight=config.class_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(index)
        count += len(index)
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value * len(index)
    return total / max(1, count), {k: v / max(1, count) for k, v in sums.items()}


def _split(config: TrainConfig, data: SliceSet,
           resumed: Checkpoint | None) -> tuple[SliceSet, SliceSet, dict[str, Any]]:
    """Training and validation slices (a resumed run keeps its validation patients) and a summary."""
    if resumed is not None:
        val_groups = list(resumed.training.get("data", {}).get("val_groups", []))
    else:
        val_groups = split_groups(data.groups, config.val_fraction, config.split_seed, data.classes)
    train_idx, val_idx = split_indices(data, val_groups)
    if len(train_idx) == 0:
        raise InputError(f"no training slices left in {data.root} after holding out {len(val_idx)} "
                         "for validation")
    info = {**data.summary(), "train_slices": len(train_idx), "val_slices": len(val_idx),
            "val_groups": val_groups}
    return data.subset(train_idx), data.subset(val_idx), info


def train(config: TrainConfig, callback: TrainCallback | None = None, *,
          dataset: SliceSet | None = None) -> TrainResult:
    """Run one training stage to ``config.epochs`` and write the best checkpoint to ``config.out``.

    ``dataset`` (slices already on the model grid) replaces reading ``config.data``.
    """
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config.device)
    resumed = load_checkpoint(config.resume, with_resume=True) if config.resume is not None else None
    if resumed is not None:
        if resumed.resume is None:
            raise InputError(f"checkpoint {config.resume} holds no optimizer state to resume from")
        config = _from_resume(config, resumed)
    init = load_checkpoint(config.init) if config.init is not None else None
    model_config, grid, preprocessing = _resolve_model(config, resumed or init)
    config = replace(config, windows=preprocessing.windows)
    _, label_names, class_names = head_spec(config.stage, config.arch)

    data = dataset if dataset is not None else load_set(config.dataset_kind, config.data, grid,
                                                        lits_every=config.lits_every)
    if tuple(data.hu.shape[1:]) != grid.size:
        raise InputError(f"dataset slices are {data.hu.shape[1:]}, the model grid is {grid.size}")
    if config.stage == "finetune" and data.classes is None:
        raise InputError("fine-tuning needs slice classes: give a lesion-slice dataset")
    train_set, val_set, data_info = _split(config, data, resumed)

    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    transfer = None
    history: list[dict[str, Any]] = []
    start_epoch, best_epoch, best_score, best_metrics = 1, 0, None, {}
    best_state: dict[str, torch.Tensor] = {}
    previous_elapsed = 0.0
    if init is not None:
        moved = transfer_weights(init.model.state_dict(), model)
        transfer = {"checkpoint": str(config.init), "summary": moved.summary(), "loaded": len(moved.loaded),
                    "skipped": moved.skipped, "fresh": moved.fresh}
    if resumed is not None and resumed.resume is not None:
        meta = resumed.training
        model.load_state_dict(resumed.resume.model_state)
        optimizer.load_state_dict(resumed.resume.optimizer_state)
        start_epoch = resumed.resume.epoch + 1
        history = list(meta.get("history", []))
        best_epoch, best_score = int(meta.get("best_epoch", 0)), meta.get("best_metric", {}).get("value")
        best_metrics = dict(meta.get("best_metrics", {}))
        best_state = {k: v.detach().clone() for k, v in resumed.model.state_dict().items()}
        previous_elapsed = float(meta.get("elapsed_s", 0.0))
        transfer = meta.get("init")

    if callback is not None:
        callback.on_start({
            "stage": config.stage, "arch": config.arch, "parameters": count_parameters(model),
            "gflops": count_flops(model, (1, model_config.in_channels, *grid.size)) / 1e9,
            "grid": f"{grid.size[0]}x{grid.size[1]} px at {grid.spacing_mm[0]:g} mm", "data": data_info,
            "start_epoch": start_epoch, "epochs": config.epochs,
            "init": str(config.init) if config.init else None,
            "transfer": transfer["summary"] if transfer and init is not None else None,
        })

    run_started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs + 1):
        epoch_started = time.perf_counter()
        lr = learning_rate(config.lr, epoch, config.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, parts = _train_epoch(model, optimizer, train_set, config, preprocessing, epoch, device)
        metrics = evaluate_model(model, val_set, preprocessing, device=device) if len(val_set) else {}
        score = selection_score(config.stage, metrics) if metrics else None
        is_best = score is None or best_score is None or score > best_score
        if is_best:
            best_epoch, best_score, best_metrics = epoch, score, metrics
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        now = time.perf_counter()
        done = epoch - start_epoch + 1
        report = EpochReport(stage=config.stage, epoch=epoch, epochs=config.epochs, train_loss=loss,
                             loss_parts=parts, val_metrics=metrics, score=score, best=is_best, lr=lr,
                             epoch_s=now - epoch_started, elapsed_s=previous_elapsed + now - started,
                             eta_s=(now - run_started) / done * (config.epochs - epoch))
        history.append(report.to_dict())
        training = {
            "stage": config.stage, "arch": config.arch, "epoch": best_epoch, "last_epoch": epoch,
            "epochs": config.epochs, "seed": config.seed, "data": data_info, "history": history,
            "best_epoch": best_epoch, "best_metric": {"name": "selection_score", "value": best_score},
            "best_metrics": best_metrics, "init": transfer, "config": config.to_dict(),
            "elapsed_s": previous_elapsed + now - started, "liverlesion_version": __version__,
            "torch_version": torch.__version__,
        }
        save_checkpoint(config.out, model, config=model_config, preprocessing=preprocessing, grid=grid,
                        labels=label_names, classes=class_names, training=training, model_state=best_state,
                        resume=ResumeState(epoch, model.state_dict(), optimizer.state_dict()))
        if callback is not None:
            callback.on_epoch(report)

    result = TrainResult(checkpoint=config.out, stage=config.stage, arch=config.arch, best_epoch=best_epoch,
                         best_score=best_score, best_metrics=best_metrics, history=history,
                         epochs_run=max(0, config.epochs - start_epoch + 1),
                         elapsed_s=previous_elapsed + time.perf_counter() - started, transfer=transfer,
                         data=data_info)
    if callback is not None:
        callback.on_end({"stage": config.stage, "elapsed_s": result.elapsed_s, "best_epoch": best_epoch,
                         "best_score": None if best_score is None else round(best_score, 4),
                         "checkpoint": str(config.out)})
    return result
