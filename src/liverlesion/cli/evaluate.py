"""``liverlesion evaluate``: a checkpoint's metrics on a lesion-slice or LiTS dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a checkpoint on a dataset (Dice, recall, accuracy, confusion matrix)",
        description="Predict every slice of a dataset on the model grid and report lesion Dice and recall, "
                    "liver Dice and, for lesion slices, the slice-class accuracy, per-class recall and "
                    "confusion matrix. --split val uses the patients the checkpoint was validated on.",
    )
    add = parser.add_argument
    add("checkpoint", type=Path, metavar="CKPT", help="checkpoint folder")
    add("--data", required=True, type=Path,
        help="LiTS folder, lesion-slice dataset, or a folder holding lits/ and lesion_slices/")
    add("--split", choices=("val", "all"), default="val", help="default val")
    add("--dataset", choices=("lits", "lesion_slices"),
        help="which dataset (default: the one the checkpoint was trained on)")
    add("--device", default="cpu", help="cpu, cuda (default cpu)")
    add("--json", type=Path, metavar="OUT", help="also write the metrics as JSON")


def format_metrics(metrics: dict[str, Any]) -> str:
    """The metrics as a few aligned lines of text."""
    lines = [f"{metrics['checkpoint']} ({metrics['arch']}) on {metrics['dataset']} {metrics['data']} "
             f"[{metrics['split']}, {metrics['slices']} slices]"]
    for key, name in (("lesion_dice", "lesion Dice"), ("lesion_recall", "lesion recall"),
                      ("liver_dice", "liver Dice"), ("accuracy", "class accuracy")):
        if key in metrics:
            lines.append(f"  {name:<15}{metrics[key]:.3f}")
    if "per_class_recall" in metrics:
        recalls = ", ".join(f"{name} {'-' if value is None else f'{value:.2f}'}"
                            for name, value in metrics["per_class_recall"].items())
        lines.append(f"  per-class recall: {recalls}")
        columns = metrics["confusion_columns"]
        lines.append("  confusion (rows: true, columns: predicted)")
        lines.append("  " + " " * 12 + "".join(f"{c:>12}" for c in columns))
        for name, row in zip(metrics["per_class_recall"], metrics["confusion_matrix"], strict=True):
            lines.append(f"  {name:<12}" + "".join(f"{v:>12}" for v in row))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..training import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.split, dataset=args.dataset,
                                  device=args.device)
    print(format_metrics(metrics))
    if args.json is not None:
        from ..atomic import atomic_write_bytes

        atomic_write_bytes(args.json, (json.dumps(metrics, indent=2) + "\n").encode())
    return 0
