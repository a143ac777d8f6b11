"""Training progress a person can follow: per-epoch reports and a printer the CLI and demo share."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO


@dataclass
class EpochReport:
    """One finished epoch: losses, validation metrics, timing."""

    stage: str
    epoch: int
    epochs: int
    train_loss: float
    loss_parts: dict[str, float]
    val_metrics: dict[str, Any]
    score: float | None
    best: bool
    lr: float
    epoch_s: float
    elapsed_s: float
    eta_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "train_loss": self.train_loss, "loss_parts": self.loss_parts,
                "lr": self.lr,
                "val": {k: v for k, v in self.val_metrics.items() if not isinstance(v, (list, dict))},
                "score": self.score, "best": self.best, "epoch_s": round(self.epoch_s, 3)}


class TrainCallback(Protocol):
    """What :func:`liverlesion.training.train` calls as it goes."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_epoch(self, report: EpochReport) -> None: ...

    def on_end(self, summary: dict[str, Any]) -> None: ...


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class ProgressPrinter:
    """Prints one line per epoch (loss, validation metrics, elapsed and time left)."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    prefix: str = ""

    def _print(self, text: str) -> None:
        print(f"{self.prefix}{text}", file=self.stream, flush=True)

    def on_start(self, info: dict[str, Any]) -> None:
        data = info.get("data", {})
        self._print(
            f"[{info['stage']}] {info['arch']} ({info['parameters'] / 1e6:.2f} M parameters, "
            f"{info['gflops']:.2f} GFLOP/slice) on {info['grid']}; {data.get('train_slices')} training / "
            f"{data.get('val_slices')} validation slices; epochs {info['start_epoch']}..{info['epochs']}"
        )
        if info.get("transfer"):
            self._print(f"[{info['stage']}] init from {info['init']}: {info['transfer']}")

    def on_epoch(self, report: EpochReport) -> None:
        val = report.val_metrics
        parts = []
        if val:
            parts.append(f"val lesion Dice {val['lesion_dice']:.3f} recall {val['lesion_recall']:.3f} "
                         f"liver Dice {val['liver_dice']:.3f}")
            if "accuracy" in val:
                parts.append(f"acc {val['accuracy']:.3f}")
        width = len(str(report.epochs))
        self._print(
            f"[{report.stage}] epoch {report.epoch:>{width}}/{report.epochs}  loss {report.train_loss:.4f}  "
            + "  ".join(parts) + ("  *best" if report.best else "")
            + f"  ({report.epoch_s:.1f} s/epoch, elapsed {format_duration(report.elapsed_s)}, "
            f"left ~{format_duration(report.eta_s)})"
        )

    def on_end(self, summary: dict[str, Any]) -> None:
        self._print(f"[{summary['stage']}] done in {format_duration(summary['elapsed_s'])}: best epoch "
                    f"{summary['best_epoch']} (score {summary['best_score']}), "
                    f"checkpoint {summary['checkpoint']}")
