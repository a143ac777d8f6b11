"""The manifest's typed sections: input, model, accuracy records (with their verdict), calibration, quantization.

Each section is parsed and checked once, here, by ``from_dict`` and written back by
``to_dict``; fields the schema does not know are kept as written (``extra``), so that a
producer can add fields without a schema bump. Readers outside ``package/`` use these
objects, never the raw JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, PackageError
from ..grid import SPACING_RANGE_MM, ModelGrid
from .fields import emit, names, need, number, optional, split, typed
from .limits import DEFAULT_LIMITS, PackageLimits

#: Accuracy fields that ``inspect`` and ``precision="auto"`` read as numbers.
SCORES = ("lesion_dice", "liver_dice", "accuracy", "agreement_with_fp32")
_NUMBERS = (int, float)


@dataclass(frozen=True)
class InputSpec:
    """The model input: its name, units (HU), grid, default spacing and batch bound."""

    name: str
    grid: ModelGrid
    units: str = "HU"
    dtype: str | None = None
    shape: list[Any] | None = None
    max_batch: int | None = None
    default_spacing_mm: tuple[float, float] | None = None
    resample: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()

    _KNOWN = ("name", "units", "dtype", "shape", "grid", "max_batch", "default_spacing_mm", "resample")

    @classmethod
    def from_dict(cls, spec: Any, limits: PackageLimits = DEFAULT_LIMITS) -> InputSpec:
        typed(spec, dict, "manifest.input")
        name = need(spec, "name", str, "input")
        if not 0 < len(name) <= limits.name_chars:
            raise PackageError(f"manifest: 'input.name' must be 1 to {limits.name_chars} characters")
        if spec.get("units") != "HU":
            raise PackageError("manifest: input.units must be 'HU'")
        max_batch = optional(spec, "max_batch", int, "input")
        if max_batch is not None and max_batch < 1:
            raise PackageError(f"manifest: 'input.max_batch' is {max_batch}; accepted: a positive integer")
        default = optional(spec, "default_spacing_mm", list, "input")
        if default is not None:
            if len(default) != 2:
                raise PackageError("manifest: 'input.default_spacing_mm' must be [row_mm, col_mm]")
            low, high = SPACING_RANGE_MM  # the spacing of a slice given without one: a slice's range
            for k, value in enumerate(default):
                number(value, f"input.default_spacing_mm[{k}]", low=low, high=high)
        resample = optional(spec, "resample", dict, "input")
        shape = optional(spec, "shape", list, "input")
        dtype = optional(spec, "dtype", str, "input")
        try:
            grid = ModelGrid.from_dict(need(spec, "grid", dict, "input"), side_range=limits.grid_side,
                                       spacing_range=limits.grid_spacing_mm)
        except InputError as exc:
            raise PackageError(f"manifest: input.{exc}") from None
        given, extra = split(spec, cls._KNOWN)
        return cls(name, grid, "HU", dtype, shape, max_batch, None if default is None else (default[0], default[1]),
                   resample, extra, given)

    def to_dict(self) -> dict[str, Any]:
        spacing = None if self.default_spacing_mm is None else list(self.default_spacing_mm)
        return emit({"name": self.name, "dtype": self.dtype, "shape": self.shape, "units": self.units,
                     "grid": self.grid.to_dict(), "max_batch": self.max_batch, "default_spacing_mm": spacing,
                     "resample": self.resample}, self.given | {"name", "units", "grid"}, self.extra)


@dataclass(frozen=True)
class ModelInfo:
    """What the model is: name, version, architecture and its config, size, and how it was trained."""

    name: str
    version: str
    arch: str
    config: dict[str, Any]
    parameters: int | None = None
    gflops_per_slice: float | None = None
    created: str | None = None
    training: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()

    _KNOWN = ("name", "version", "arch", "config", "parameters", "gflops_per_slice", "created", "training")

    @classmethod
    def from_dict(cls, model: Any) -> ModelInfo:
        typed(model, dict, "manifest.model")
        name, version, arch = (need(model, key, str, "model") for key in ("name", "version", "arch"))
        config = need(model, "config", dict, "model")
        parameters = optional(model, "parameters", int, "model")
        if parameters is not None and parameters < 0:
            raise PackageError("manifest: 'model.parameters' must be 0 or more")
        gflops = model.get("gflops_per_slice")
        if gflops is not None:
            number(gflops, "model.gflops_per_slice", low=0)
        created = optional(model, "created", str, "model")
        training = optional(model, "training", dict, "model")
        given, extra = split(model, cls._KNOWN)
        return cls(name, version, arch, config, parameters, gflops, created, training, extra, given)

    def to_dict(self) -> dict[str, Any]:
        return emit({"name": self.name, "version": self.version, "arch": self.arch, "config": self.config,
                     "parameters": self.parameters, "gflops_per_slice": self.gflops_per_slice,
                     "created": self.created, "training": self.training}, self.given, self.extra)


@dataclass(frozen=True)
class AccuracyRecord:
    """Scores measured at one precision (and form, and runtime) against the reference, and the target verdict."""

    lesion_dice: float | None = None
    liver_dice: float | None = None
    accuracy: float | None = None
    agreement_with_fp32: float | None = None
    meets_target: bool | None = None
    target_misses: list[Any] | None = None
    target_max_loss: dict[str, float] | None = None
    data: str | None = None
    slices: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()

    _KNOWN = (*SCORES, "meets_target", "target_misses", "target_max_loss", "data", "slices")

    @classmethod
    def from_dict(cls, record: Any, where: str) -> AccuracyRecord:
        typed(record, dict, where)
        scores = [None if record.get(s) is None else number(record[s], f"{where}.{s}", low=0, high=1)
                  for s in SCORES]
        meets = optional(record, "meets_target", bool, where)
        misses = optional(record, "target_misses", list, where)
        data = optional(record, "data", str, where)
        slices = optional(record, "slices", int, where)
        if slices is not None and slices < 0:
            raise PackageError(f"manifest: '{where}.slices' must be 0 or more")
        limits = optional(record, "target_max_loss", dict, where)
        for metric, limit in (limits or {}).items():
            number(limit, f"{where}.target_max_loss.{metric}")
        given, extra = split(record, cls._KNOWN)
        # the scores as written (an integer 1 stays 1), so that the record writes back unchanged
        lesion, liver, acc, agree = (record.get(s) if v is not None else None for s, v in zip(SCORES, scores))
        return cls(lesion, liver, acc, agree, meets, misses, limits, data, slices, extra, given)

    def to_dict(self) -> dict[str, Any]:
        return emit({"lesion_dice": self.lesion_dice, "liver_dice": self.liver_dice, "accuracy": self.accuracy,
                     "agreement_with_fp32": self.agreement_with_fp32, "meets_target": self.meets_target,
                     "target_misses": self.target_misses, "target_max_loss": self.target_max_loss,
                     "data": self.data, "slices": self.slices}, self.given, self.extra)

    @property
    def has_verdict(self) -> bool:
        """Whether the export recorded a target verdict (``meets_target``) for this record."""
        return "meets_target" in self.given

    def score(self, metric: str) -> Any:
        """A score by name, known or not (None when absent)."""
        return getattr(self, metric) if metric in SCORES else self.extra.get(metric)

    def verdict(self, precision: str, fp32: AccuracyRecord | None) -> tuple[bool, str]:
        """(may ``precision="auto"`` choose what this record vouches for, why); ``fp32``: the reference record."""
        dice = self.lesion_dice
        measured = f"lesion Dice {dice:.4f}" if isinstance(dice, _NUMBERS) else "accuracy"
        if self.has_verdict:
            if self.meets_target:
                return True, f"recorded {measured} meets the export target against FP32"
            misses = "; ".join(str(m) for m in self.target_misses or []) or "see the manifest"
            return False, f"recorded {precision.upper()} accuracy misses the export target ({misses})"
        if self.target_max_loss is not None and fp32 is not None:
            lost = [metric for metric, limit in self.target_max_loss.items()
                    if isinstance(self.score(metric), _NUMBERS) and isinstance(fp32.score(metric), _NUMBERS)
                    and float(fp32.score(metric)) - float(self.score(metric)) > float(limit) + 1e-12]
            if lost:
                return False, (f"recorded {precision.upper()} accuracy loses more than the target on "
                               f"{', '.join(lost)}")
            return True, f"recorded {measured} is within the target loss against FP32"
        return False, f"the package records {precision.upper()} accuracy but no target verdict for it"


def accuracy_records(records: Any) -> dict[str, AccuracyRecord]:
    """``accuracy``: record key (``fp32``, ``int8``, ``int8-u8s8@openvino``...) -> record, in written order."""
    if records is None:
        return {}
    typed(records, dict, "manifest.accuracy")
    return {key: AccuracyRecord.from_dict(record, f"accuracy.{key}") for key, record in records.items()}


@dataclass(frozen=True)
class Calibration:
    """The INT8 calibration slices: where from, how many, how chosen, and the range method."""

    source: str | None = None
    data: str | None = None
    slices: int | None = None
    method: str | None = None
    selection: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()

    _KNOWN = ("source", "data", "slices", "method", "selection")

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        typed(data, dict, "manifest.calibration")
        source, where, method, selection = (optional(data, key, str, "calibration")
                                            for key in ("source", "data", "method", "selection"))
        slices = optional(data, "slices", int, "calibration")
        if slices is not None and slices < 0:
            raise PackageError("manifest: 'calibration.slices' must be 0 or more")
        given, extra = split(data, cls._KNOWN)
        return cls(source, where, slices, method, selection, extra, given)

    def to_dict(self) -> dict[str, Any]:
        return emit({"source": self.source, "data": self.data, "slices": self.slices, "method": self.method,
                     "selection": self.selection}, self.given, self.extra)


@dataclass(frozen=True)
class Quantization:
    """How the INT8 files were made: format, tool, range method, and the blocks kept in float."""

    format: str | None = None
    tool: str | None = None
    method: str | None = None
    extra_excluded_blocks: tuple[str, ...] | None = None
    forms: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()

    _KNOWN = ("format", "tool", "method", "extra_excluded_blocks", "forms")

    @classmethod
    def from_dict(cls, data: Any, limits: PackageLimits = DEFAULT_LIMITS) -> Quantization:
        typed(data, dict, "manifest.quantization")
        fmt, tool, method = (optional(data, key, str, "quantization") for key in ("format", "tool", "method"))
        blocks = optional(data, "extra_excluded_blocks", list, "quantization")
        kept = None if blocks is None else names(blocks, "quantization.extra_excluded_blocks", limits,
                                                 distinct=False)
        forms = optional(data, "forms", dict, "quantization")
        given, extra = split(data, cls._KNOWN)
        return cls(fmt, tool, method, kept, forms, extra, given)

    def to_dict(self) -> dict[str, Any]:
        blocks = None if self.extra_excluded_blocks is None else list(self.extra_excluded_blocks)
        return emit({"format": self.format, "forms": self.forms, "tool": self.tool, "method": self.method,
                     "extra_excluded_blocks": blocks}, self.given, self.extra)

