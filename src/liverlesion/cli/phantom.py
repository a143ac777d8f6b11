"""``liverlesion phantom``: write synthetic CT phantoms (LiTS-style volumes and lesion slices)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom", help="generate synthetic CT phantoms (NOT clinical data) in the LiTS and lesion-slice formats",
        description="Write LiTS-style NIfTI volumes (OUT/lits) and a lesion-slice dataset (OUT/lesion_slices) "
                    "of procedural abdominal CT. They exercise the pipeline; they are not clinical data.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data (0)")
    parser.add_argument("--lits-volumes", type=int, default=6, metavar="N", help="LiTS-style volumes (6)")
    parser.add_argument("--lits-slices", type=int, default=32, metavar="N", help="slices per volume (32)")
    parser.add_argument("--lesion-slices", type=int, default=120, metavar="N",
                        help="slices of the lesion-slice dataset, classes balanced (120)")
    parser.add_argument("--size", type=int, default=512, metavar="PX", help="rows and columns per slice (512)")


def run(args: argparse.Namespace) -> int:
    from ..data.phantom import generate_phantoms

    summary = generate_phantoms(args.out, seed=args.seed, lits_volumes=args.lits_volumes,
                                lits_slices=args.lits_slices, lesion_slices=args.lesion_slices, size=args.size,
                                progress=lambda message: print(message, flush=True))
    if "lits" in summary:
        cases = summary["lits"]["cases"]
        print(f"{args.out / 'lits'}: {len(cases)} volumes, {sum(c['tumors'] for c in cases)} tumours, liver in "
              f"{sum(c['liver_slices'] for c in cases)}/{sum(c['slices'] for c in cases)} slices")
    if "lesion_slices" in summary:
        lesions = summary["lesion_slices"]
        classes = ", ".join(f"{n} {kind}" for kind, n in lesions["classes"].items())
        print(f"{args.out / 'lesion_slices'}: {lesions['slices']} slices ({classes}) of {lesions['patients']} patients")
    print(f"{summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.1f} s; {summary['note']}")
    return 0
