"""The manifest's typed sections: parsed once in package/, written back unchanged, and the only way to read it."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from engine_fixtures import make_engine_package
from liverlesion.cli.inspect import summary
from liverlesion.engines.plan import BuildOptions, plan_build
from liverlesion.engines.records import add_engine_record, make_record
from liverlesion.errors import PackageError
from liverlesion.package import Manifest, load_package
from liverlesion.package.accuracy import accuracy_verdict
from liverlesion.package.engines import EngineRecord
from liverlesion.package.sections import AccuracyRecord, Calibration, InputSpec, ModelInfo, Quantization
from liverlesion.package.store import read_manifest, write_manifest

SRC = Path(__file__).resolve().parents[2] / "src" / "liverlesion"

#: Sections as the export and quantize write them, with fields the schema does not know (kept as written),
#: explicit nulls and integer scores (which must come back as integers, not floats).
SECTIONS = {
    "model": {"name": "test", "version": "0", "arch": "joint", "config": {"width": 8}, "parameters": 1234,
              "gflops_per_slice": 0.5, "training": {"epochs": 3}, "checkpoint": "ckpt.pt", "created": None},
    "accuracy": {
        "fp32": {"lesion_dice": 0.8, "liver_dice": 0.9, "accuracy": 1, "agreement_with_fp32": 1.0,
                 "data": "phantom", "slices": 24},
        "int8": {"lesion_dice": 0.79, "liver_dice": 0.9, "accuracy": 0.95, "agreement_with_fp32": None,
                 "meets_target": True, "target_misses": [], "target_max_loss": {"lesion_dice": 0.02},
                 "data": "phantom", "slices": 24, "runtime": "onnxruntime", "per_class": {"cyst": 0.5}},
        "int8-u8s8@openvino": {"lesion_dice": 0.7, "target_max_loss": {"lesion_dice": 0.02},
                               "executed": "i8"},
    },
    "calibration": {"source": "LiTS", "data": "lits.npz", "slices": 10, "method": "entropy",
                    "selection": "stratified", "seed": 0, "ids": ["a", "b"]},
    "quantization": {"format": "QDQ", "tool": "ort", "method": "minmax", "extra_excluded_blocks": [],
                     "forms": {"s8s8": {"written": True}}, "study": {"rounds": []}},
}


def package_with_sections(root: Path, **changes) -> Path:
    make_engine_package(root)
    data = json.loads((root / "manifest.json").read_text())
    data.update(copy.deepcopy(SECTIONS))
    data["input"].update(max_batch=4, resample={"image": "linear"}, note="kept")
    data.update(changes)
    write_manifest(root, data)
    return root


def add_engine(root: Path) -> EngineRecord:
    plan = plan_build("10.3.0.30", BuildOptions(precision="fp16", compute_capability=(8, 7)), read_manifest(root))
    (root / plan.engine_file).parent.mkdir(exist_ok=True)
    (root / plan.engine_file).write_bytes(b"PLAN" * 100)
    record = make_record(root, plan.engine_file, plan.to_dict(), gpu_name="Orin", build_seconds=1.5, note="x")
    add_engine_record(root, record)
    return record


def reassembled(manifest: Manifest) -> dict:
    """The manifest rebuilt from its typed sections alone."""
    out = dict(manifest.raw)
    out.update(input=manifest.input.to_dict(), model=manifest.model.to_dict(),
               engines=[e.to_dict() for e in manifest.engines], files=[f.to_dict() for f in manifest.files])
    if manifest.accuracy:
        out["accuracy"] = {k: r.to_dict() for k, r in manifest.accuracy.items()}
    for key in ("calibration", "quantization"):
        section = getattr(manifest, key)
        if section is not None:
            out[key] = section.to_dict()
    return out


def test_sections_parse_to_typed_objects_and_write_back_the_manifest(tmp_path):
    root = package_with_sections(tmp_path / "pkg")
    record = add_engine(root)
    with load_package(root) as package:
        m = package.manifest
        written = json.loads((root / "manifest.json").read_text())
        assert reassembled(m) == written
        assert json.dumps(reassembled(m), sort_keys=True) == json.dumps(written, sort_keys=True)  # 1 stays 1
        assert isinstance(m.input, InputSpec) and isinstance(m.model, ModelInfo)
        assert (m.input.name, m.input.max_batch, m.input.default_spacing_mm) == ("hu", 4, None)
        assert m.input.grid == m.grid and m.input.extra == {"note": "kept"}
        assert (m.model.parameters, m.model.gflops_per_slice, m.model.extra) == (1234, 0.5, {"checkpoint": "ckpt.pt"})
        assert list(m.accuracy) == ["fp32", "int8", "int8-u8s8@openvino"]
        int8 = m.accuracy["int8"]
        assert (int8.meets_target, int8.target_max_loss, int8.extra["runtime"]) == (True, {"lesion_dice": 0.02},
                                                                                   "onnxruntime")
        assert m.calibration == Calibration.from_dict(SECTIONS["calibration"]) and m.calibration.method == "entropy"
        assert isinstance(m.quantization, Quantization) and m.quantization.extra_excluded_blocks == ()
        assert Quantization().to_dict() == {} and Quantization(extra_excluded_blocks=()).to_dict() == {
            "extra_excluded_blocks": []}
        assert m.engines == (record,) and m.engines[0].extra == {"note": "x"}


def test_the_default_spacing_keeps_its_written_numbers(tmp_path):
    data = json.loads((package_with_sections(tmp_path / "pkg") / "manifest.json").read_text())
    data["input"]["default_spacing_mm"] = [1, 0.8]
    spec = Manifest.from_dict(data).input
    assert spec.default_spacing_mm == (1, 0.8) and spec.to_dict() == data["input"]
    assert json.dumps(spec.to_dict()["default_spacing_mm"]) == "[1, 0.8]"


def test_a_manifest_without_optional_sections_has_none(tmp_path):
    m = read_manifest(make_engine_package(tmp_path / "pkg"))
    assert (m.accuracy, m.calibration, m.quantization, m.engines) == ({}, None, None, ())
    assert m.input.max_batch is None and m.input.default_spacing_mm is None and m.model.training is None
    assert reassembled(m) == json.loads((tmp_path / "pkg" / "manifest.json").read_text())


def test_sections_are_frozen(tmp_path):
    m = read_manifest(package_with_sections(tmp_path / "pkg"))
    for section, name in ((m.input, "max_batch"), (m.model, "name"), (m.accuracy["fp32"], "lesion_dice"),
                          (m.calibration, "method")):
        with pytest.raises(AttributeError):
            setattr(section, name, None)


BAD_SECTIONS = [
    ("input.dtype a number", lambda m: m["input"].update(dtype=32), "'input.dtype' must be a string"),
    ("input.shape a string", lambda m: m["input"].update(shape="N"), "'input.shape' must be a list"),
    ("input.resample a list", lambda m: m["input"].update(resample=[]), "'input.resample' must be an object"),
    ("input.max_batch 0", lambda m: m["input"].update(max_batch=0), "accepted: a positive integer"),
    ("input spacing one", lambda m: m["input"].update(default_spacing_mm=[1]), r"must be \[row_mm, col_mm\]"),
    ("input units mm", lambda m: m["input"].update(units="mm"), "input.units must be 'HU'"),
    ("model.version a number", lambda m: m["model"].update(version=1), "'model.version' must be a string"),
    ("model.config a list", lambda m: m["model"].update(config=[]), "'model.config' must be an object"),
    ("model.gflops negative", lambda m: m["model"].update(gflops_per_slice=-1), "gflops_per_slice"),
    ("model.training a list", lambda m: m["model"].update(training=[]), "'model.training' must be an object"),
    ("accuracy slices negative", lambda m: m["accuracy"]["fp32"].update(slices=-1), "must be 0 or more"),
    ("accuracy score above 1", lambda m: m["accuracy"]["fp32"].update(liver_dice=1.5), "liver_dice"),
    ("accuracy loss a string", lambda m: m["accuracy"]["int8"].update(target_max_loss={"a": "x"}),
     "target_max_loss.a"),
    ("accuracy misses a string", lambda m: m["accuracy"]["int8"].update(target_misses="x"),
     "'accuracy.int8.target_misses' must be a list"),
    ("calibration a list", lambda m: m.update(calibration=[]), "'manifest.calibration' must be an object"),
    ("calibration method a number", lambda m: m["calibration"].update(method=1),
     "'calibration.method' must be a string"),
    ("calibration slices negative", lambda m: m["calibration"].update(slices=-2), "must be 0 or more"),
    ("quantization a list", lambda m: m.update(quantization=[]), "'manifest.quantization' must be an object"),
    ("quantization method a list", lambda m: m["quantization"].update(method=[]),
     "'quantization.method' must be a string"),
    ("excluded block empty", lambda m: m["quantization"].update(extra_excluded_blocks=[""]),
     r"extra_excluded_blocks\[0\]"),
]


@pytest.mark.parametrize("edit, match", [pytest.param(e, m, id=i) for i, e, m in BAD_SECTIONS])
def test_bad_section_values_are_refused_naming_the_field(tmp_path, edit, match):
    root = package_with_sections(tmp_path / "pkg")
    data = json.loads((root / "manifest.json").read_text())
    edit(data)
    with pytest.raises(PackageError, match=match):
        Manifest.from_dict(data)


def test_a_bad_engine_record_refuses_the_engines_not_the_package(tmp_path):
    root = package_with_sections(tmp_path / "pkg")
    add_engine(root)
    data = json.loads((root / "manifest.json").read_text())
    data["engines"][0]["tensorrt"] = "ten"
    (root / "manifest.json").write_text(json.dumps(data))
    with load_package(root) as package:  # onnxruntime and OpenVINO never read engine records
        with pytest.raises(PackageError, match=r"engines\[engines/.*\] is not a valid engine record"):
            _ = package.manifest.engines
        text = summary(package.manifest, root)
    assert "engines      1, not all readable" in text and "lesion Dice" in text


@pytest.mark.parametrize("record, fp32, verdict", [
    ({"lesion_dice": 0.5, "meets_target": True}, None, (True, "meets the export target")),
    ({"meets_target": False, "target_misses": ["dice -0.1"]}, None, (False, "misses the export target (dice -0.1)")),
    ({"meets_target": None}, None, (False, "misses the export target (see the manifest)")),
    ({"lesion_dice": 0.7, "target_max_loss": {"lesion_dice": 0.02}}, {"lesion_dice": 0.8},
     (False, "loses more than the target on lesion_dice")),
    ({"lesion_dice": 0.79, "target_max_loss": {"lesion_dice": 0.02}}, {"lesion_dice": 0.8},
     (True, "within the target loss")),
    ({"lesion_dice": 0.7, "custom": 0.1, "target_max_loss": {"custom": 0.01}}, {"custom": 0.5},
     (False, "on custom")),  # a metric the schema does not know is still compared
    ({"lesion_dice": 0.7, "target_max_loss": {"lesion_dice": 0.02}}, None, (False, "no target verdict")),
    ({"lesion_dice": 0.7}, {"lesion_dice": 0.8}, (False, "no target verdict")),
])
def test_accuracy_verdicts(record, fp32, verdict):
    parsed = AccuracyRecord.from_dict(record, "accuracy.int8")
    reference = None if fp32 is None else AccuracyRecord.from_dict(fp32, "accuracy.fp32")
    ok, why = parsed.verdict("int8", reference)
    assert ok is verdict[0] and verdict[1] in why


def test_the_manifest_verdict_reads_the_named_record(tmp_path):
    m = read_manifest(package_with_sections(tmp_path / "pkg"))
    assert accuracy_verdict(m, "int8")[0] is True
    ok, why = accuracy_verdict(m, "int8", "int8-u8s8@openvino")
    assert not ok and "loses more than the target on lesion_dice" in why
    assert "records no FP16 accuracy" in accuracy_verdict(m, "fp16")[1]


def test_no_reader_outside_package_touches_the_raw_manifest():
    """The schema lives in package/: elsewhere the manifest is read through its typed sections."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] == "package":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.raw\b", line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []
