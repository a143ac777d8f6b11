"""``liverlesion train``: LiTS pretraining or lesion fine-tuning of the joint network or the Y-Net."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train", help="train a network (LiTS pretraining or lesion-slice fine-tuning)",
        description="Train one stage. Pretraining: a 3-label (background/liver/tumor) network on LiTS "
                    "volumes. Fine-tuning: the joint 5-label network or the Y-Net on a lesion-slice "
                    "dataset, from scratch or from --init (weights transferred by name and shape). "
                    "--out is a checkpoint folder holding the best weights on validation; "
                    "--resume continues a checkpoint's run up to --epochs.",
    )
    add = parser.add_argument
    add("--data", required=True, type=Path,
        help="LiTS folder, lesion-slice dataset, or a folder holding lits/ and lesion_slices/")
    add("--stage", choices=("pretrain", "finetune"),
        help="pretrain on LiTS or fine-tune on lesion slices (default finetune; "
             "taken from the checkpoint with --resume)")
    add("--arch", choices=("joint", "ynet"), help="network to fine-tune (default joint)")
    add("--init", type=Path, metavar="CKPT", help="start from this checkpoint's weights")
    add("--resume", type=Path, metavar="CKPT", help="continue this checkpoint's run")
    add("--out", required=True, type=Path, metavar="CKPT_DIR", help="checkpoint folder to write")
    add("--epochs", type=int, default=20, help="total epochs of the run (default 20)")
    add("--seed", type=int, default=0, help="seed of initialisation, batch order, augmentation")
    add("--split-seed", type=int, default=0, help="seed of the patient-grouped validation split")
    add("--val-fraction", type=float, default=0.2, help="patients held out (default 0.2)")
    add("--width", type=int, help="channels of the first level (default 16, or from --init)")
    add("--depth", type=int, help="levels of the U-Net (default 4, or from --init)")
    add("--grid-size", type=int, metavar="PX", help="model grid rows = cols (default 160)")
    add("--grid-spacing", type=float, metavar="MM", help="model grid pixel spacing (default 2.5)")
    add("--batch-size", type=int, default=8)
    add("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay)")
    add("--no-augment", action="store_true", help="no intensity jitter")
    add("--flip", action="store_true", help="also flip slices left-right (off: CT has a fixed orientation)")
    add("--lits-every", type=int, default=1, metavar="N", help="use every Nth LiTS liver slice")
    add("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    add("--json", type=Path, metavar="OUT", help="also write the training summary as JSON")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..training import ProgressPrinter, TrainConfig, read_checkpoint_json, train

    stage, arch = args.stage, args.arch
    if args.resume is not None:
        stored = read_checkpoint_json(args.resume).get("training", {})
        for name, given in (("stage", stage), ("arch", arch)):
            if given is not None and given != stored.get(name):
                raise InputError(f"--{name} {given} contradicts the checkpoint being resumed "
                                 f"({stored.get(name)}); leave it out with --resume")
        stage, arch = stored.get("stage", "finetune"), stored.get("arch", "joint")
    config = TrainConfig(
        data=args.data, out=args.out, stage=stage or "finetune", arch=arch or "joint", epochs=args.epochs,
        seed=args.seed, split_seed=args.split_seed, val_fraction=args.val_fraction,
        batch_size=args.batch_size, lr=args.lr, base_width=args.width, depth=args.depth,
        grid_size=args.grid_size, grid_spacing=args.grid_spacing, init=args.init, resume=args.resume,
        augment=not args.no_augment, flip=args.flip, lits_every=args.lits_every, threads=args.threads,
        device=args.device,
    )
    result = train(config, ProgressPrinter())
    if args.json is not None:
        from ..atomic import atomic_write_bytes

        atomic_write_bytes(args.json, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return 0
