"""Parity of an exported graph against the PyTorch module it came from.

onnxruntime on CPU and PyTorch see the same HU batches; probabilities must agree within
``atol`` and label maps must be identical. The one exception is a numerical tie: a pixel
whose two most probable labels PyTorch separates by less than ``atol`` may flip (two
correct float32 implementations round differently); such pixels are counted and
reported, never hidden. Export refuses to write a package that fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError
from ..grid import ModelGrid
from ..model.fused import CLASS_PROBABILITIES, LABELS, PROBABILITIES, FusedModel, run_fused

PROBABILITY_ATOL = 1e-4


@dataclass(frozen=True)
class ParityResult:
    """Worst differences over one named input batch."""

    name: str
    batch: int
    label_mismatches: int
    max_probability_error: float
    max_class_probability_error: float
    tie_flips: int = 0

    def passed(self, atol: float) -> bool:
        return (self.label_mismatches == 0 and self.max_probability_error <= atol
                and self.max_class_probability_error <= atol)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.name, "batch": self.batch, "label_mismatches": self.label_mismatches,
                "tie_flips": self.tie_flips,
                "max_probability_error": self.max_probability_error,
                "max_class_probability_error": self.max_class_probability_error}


def cpu_session(path: str | Path) -> Any:
    """An onnxruntime CPU session with every graph optimisation on (as deployed)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_session(session: Any, hu: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: hu.astype(np.float32)})
    return dict(zip(names, values, strict=True))


def top_two_margin(probabilities: np.ndarray) -> np.ndarray:
    """Per pixel, the most probable label's lead over the second (N x L x H x W -> N x H x W)."""
    top = np.sort(probabilities, axis=1)
    return top[:, -1] - top[:, -2]


def compare(name: str, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], *,
            atol: float = PROBABILITY_ATOL) -> ParityResult:
    """Differences of ``candidate`` from ``reference`` outputs (ties within ``atol`` counted apart)."""
    missing = set(reference) - set(candidate)
    if missing:
        raise ExportError(f"the ONNX graph lacks the outputs {sorted(missing)}")
    differ = reference[LABELS] != candidate[LABELS]
    ties = differ & (top_two_margin(reference[PROBABILITIES]) < atol)
    mismatches = int(np.count_nonzero(differ & ~ties))
    errors = {k: float(np.max(np.abs(reference[k].astype(np.float64) - candidate[k])))
              for k in reference if k != LABELS and reference[k].size}
    return ParityResult(name, int(reference[LABELS].shape[0]), mismatches, errors.get(PROBABILITIES, 0.0),
                        errors.get(CLASS_PROBABILITIES, 0.0), int(np.count_nonzero(ties)))


def check_parity(fused: FusedModel, onnx_path: str | Path, inputs: Mapping[str, np.ndarray], *,
                 atol: float = PROBABILITY_ATOL) -> list[ParityResult]:
    """Compare onnxruntime CPU with PyTorch on each HU batch; ExportError on any failure."""
    session = cpu_session(onnx_path)
    results = [compare(name, run_fused(fused, hu), run_session(session, hu), atol=atol)
               for name, hu in inputs.items()]
    failed = [r for r in results if not r.passed(atol)]
    if failed:
        details = "; ".join(
            f"{r.name}: {r.label_mismatches} label pixels differ, probabilities off by up to "
            f"{max(r.max_probability_error, r.max_class_probability_error):.2e}" for r in failed)
        raise ExportError(f"{Path(onnx_path).name} does not match PyTorch (labels must be identical, "
                          f"probabilities within {atol:g}): {details}")
    return results


def random_hu(batch: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Uniform HU over the CT range (-1024 to 2000), float32 N x 1 x H x W."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1024.0, 2000.0, size=(batch, 1, *size)).astype(np.float32)


def phantom_hu(grid: ModelGrid, count: int = 4, seed: int = 0) -> np.ndarray:
    """Synthetic lesion slices (the phantom generator) on the model grid, float32 N x 1 x H x W."""
    from ..data.phantom import lesion_slice_phantoms
    from ..training.datasets import resample_slice

    slices = lesion_slice_phantoms(seed, count, size=256)
    return np.stack([resample_slice(s.hu, s.mask, s.spacing_mm, grid)[0] for s in slices])[:, None]


#: Least label agreement of FP16 with FP32 on phantom slices before export calls the FP16 graph broken.
FP16_MIN_AGREEMENT = 0.99


def check_reduced_precision(reference_path: str | Path, candidate_path: str | Path, hu: np.ndarray, *,
                            min_agreement: float = FP16_MIN_AGREEMENT) -> dict[str, Any]:
    """A sanity check of a half/INT8 graph against FP32: finite outputs, labels mostly the same.

    Not parity (reduced precision differs by design) but the guard against the known
    failure of FP16 U-Nets: overflow to inf/NaN and black label maps.
    """
    reference = run_session(cpu_session(reference_path), hu)
    candidate = run_session(cpu_session(candidate_path), hu)
    finite = all(bool(np.all(np.isfinite(v))) for k, v in candidate.items() if k != LABELS)
    agreement = float(np.mean(reference[LABELS] == candidate[LABELS]))
    error = float(np.max(np.abs(reference[PROBABILITIES] - candidate[PROBABILITIES])))
    if not finite or agreement < min_agreement:
        raise ExportError(f"{Path(candidate_path).name} is broken on phantom slices: "
                          f"{'non-finite outputs, ' if not finite else ''}label agreement with FP32 "
                          f"{agreement:.4f} (at least {min_agreement} expected)")
    return {"inputs": f"phantom slices, batch {len(hu)}", "label_agreement": agreement,
            "max_probability_difference": error}
