"""Training: LiTS pretraining, transfer, joint / Y-Net fine-tuning, checkpoints, evaluation (needs torch)."""

from __future__ import annotations

from .checkpoint import (
           Checkpoint,
           ResumeState,
           load_checkpoint,
           read_checkpoint_json,
           save_checkpoint,
)
from .config import STAGES, TrainConfig
from .evaluation import evaluate_checkpoint, evaluate_model, predict_slices
from .loop import TrainResult, train
from .progress import EpochReport, ProgressPrinter, TrainCallback
from .transfer import TransferReport, transfer_weights

__all__ = ["STAGES", "Checkpoint", "EpochReport", "ProgressPrinter", "ResumeState", "TrainCallback",
           "TrainConfig", "TrainResult", "TransferReport", "evaluate_checkpoint", "evaluate_model",
           "load_checkpoint", "predict_slices", "read_checkpoint_json", "save_checkpoint", "train",
           "transfer_weights"]
