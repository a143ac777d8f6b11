"""Reproduce the shape of the paper's table on phantoms: {Y-Net, joint} x {scratch, LiTS-pretrained}.

One LiTS pretraining (3 labels) is shared by both LiTS-initialised runs; every run uses
the same seeds, grid, width and patient split. Classification accuracy, lesion Dice and
lesion recall are measured on the validation patients (the ones each run's best epoch
was chosen on) and printed beside the numbers published by Heker & Greenspan (MIDL 2020).

    python examples/paper_comparison.py --data phantoms --out runs/comparison [--quick]

Phantom data are generated into --data when it holds none. Phantoms are not patients:
the comparison checks that the pipeline reproduces the paper's *ordering*, not its values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

#: Published results (slide 6): class accuracy, lesion Dice, lesion recall.
PAPER = {
    ("ynet", "scratch"): (0.43, 0.49, 0.43),
    ("ynet", "lits"): (0.79, 0.71, 0.68),
    ("joint", "scratch"): (0.63, 0.57, 0.60),
    ("joint", "lits"): (0.86, 0.71, 0.76),
}
NAMES = {"ynet": "multi-task (Y-Net)", "joint": "joint learning"}

#: Sized for 2 CPU cores; measured on 2 idle cores with phantom generation: full 8.7 min, quick 0.5 min.
SETTINGS = {
    "full": {"grid_size": 128, "grid_spacing": 3.0, "base_width": 8, "depth": 4,
             "pretrain_epochs": 30, "finetune_epochs": 60, "batch_size": 8},
    "quick": {"grid_size": 96, "grid_spacing": 4.0, "base_width": 8, "depth": 4,
              "pretrain_epochs": 6, "finetune_epochs": 10, "batch_size": 8},
}
QUICK_PHANTOMS = {"lits_volumes": 3, "lits_slices": 16, "lesion_slices": 60, "size": 256}


def _has_data(root: Path) -> bool:
    return (root / "lits").is_dir() and (root / "lesion_slices" / "dataset.json").is_file()


def _table(rows: list[dict]) -> str:
    head = f"{'training strategy':<20}{'init':<9}{'accuracy':>17}{'lesion Dice':>17}{'lesion recall':>17}"
    lines = [head, f"{'':<29}{'ours / paper':>17}{'ours / paper':>17}{'ours / paper':>17}", "-" * len(head)]
    for row in rows:
        cells = "".join(f"{row['ours'][k]:>10.2f} / {row['paper'][k]:.2f}"
                        for k in ("accuracy", "lesion_dice", "lesion_recall"))
        lines.append(f"{NAMES[row['arch']]:<20}{row['init']:<9}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="phantom folder (lits/ + lesion_slices/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for checkpoints and comparison.json")
    parser.add_argument("--quick", action="store_true", help="small grid and few epochs (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="reuse this LiTS-pretrained checkpoint instead of pretraining again")
    args = parser.parse_args(argv)

    from liverlesion.package.store import atomic_write_bytes
    from liverlesion.training import ProgressPrinter, TrainConfig, evaluate_checkpoint, train

    started = time.perf_counter()
    settings = SETTINGS["quick" if args.quick else "full"]
    if not _has_data(args.data):
        from liverlesion.data.phantom import generate_phantoms

        print(f"generating phantoms into {args.data} ...", flush=True)
        generate_phantoms(args.data, seed=args.seed, progress=lambda m: print(f"  {m}", flush=True),
                          **(QUICK_PHANTOMS if args.quick else {}))
    model_keys = ("batch_size", "grid_size", "grid_spacing", "base_width", "depth")
    common = {"data": args.data, "seed": args.seed, "threads": args.threads,
              **{key: settings[key] for key in model_keys}}
    printer = ProgressPrinter(prefix="  ")
    pretrained = args.pretrained or args.out / "lits-pretrain"
    if args.pretrained is None:
        print("== LiTS pretraining (3 labels)", flush=True)
        train(TrainConfig(out=pretrained, stage="pretrain", epochs=settings["pretrain_epochs"], **common),
              printer)

    rows = []
    for arch in ("ynet", "joint"):
        for init in ("scratch", "lits"):
            name = f"{arch}-{init}"
            print(f"== {NAMES[arch]}, init {init}", flush=True)
            train(TrainConfig(out=args.out / name, stage="finetune", arch=arch,
                              epochs=settings["finetune_epochs"], init=pretrained if init == "lits" else None,
                              **common), printer)
            metrics = evaluate_checkpoint(args.out / name, args.data, "val")
            acc, dice, rec = PAPER[(arch, init)]
            rows.append({"arch": arch, "init": init, "checkpoint": str(args.out / name), "metrics": metrics,
                         "ours": {k: metrics[k] for k in ("accuracy", "lesion_dice", "lesion_recall")},
                         "paper": {"accuracy": acc, "lesion_dice": dice, "lesion_recall": rec}})

    elapsed = time.perf_counter() - started
    print()
    print(_table(rows))
    print(f"\n(ours: the {rows[0]['metrics']['slices']} slices of the phantom set's validation patients, "
          f"which also chose each run's best epoch; total time {elapsed / 60:.1f} min)")
    report = {"settings": settings, "quick": args.quick, "seed": args.seed, "elapsed_s": elapsed,
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "comparison.json", (json.dumps(report, indent=2) + "\n").encode())
    print(f"wrote {args.out / 'comparison.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
