"""``liverlesion demo`` checks what every step needs before the first one runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from liverlesion.cli import demo
from liverlesion.errors import MissingDependencyError


def test_a_missing_training_dependency_fails_before_any_step(monkeypatch, tmp_path: Path) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(demo._Steps, "__call__", lambda self, title, argv: ran.append(argv))
    monkeypatch.setitem(sys.modules, "torch", None)  # blocked: importing it would fail
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[train\]"):
        demo.run(argparse.Namespace(out=tmp_path, quick=True, seed=0))
    assert ran == []


@pytest.mark.parametrize("blocked", [(), ("matplotlib",), ("highdicom",), ("matplotlib", "highdicom")])
def test_outputs_whose_extra_is_missing_are_skipped_with_a_note(monkeypatch, tmp_path: Path, capsys,
                                                                 blocked) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(demo._Steps, "__call__", lambda self, title, argv: ran.append(argv))
    for module in blocked:
        monkeypatch.setitem(sys.modules, module, None)
    index = tmp_path / "phantoms" / "lesion_slices" / "dataset.json"
    index.parent.mkdir(parents=True)
    case = {"id": "P0-1", "class": "cyst", "patient_id": "P0", "image": "P0-1.npy", "spacing_mm": [1.0, 1.0]}
    index.write_text(json.dumps({"cases": [case]}))
    assert demo.run(argparse.Namespace(out=tmp_path, quick=True, seed=0)) == 0
    flags = {arg for argv in ran if argv[0] == "predict" for arg in argv}
    assert ("--overlay" in flags) == ("matplotlib" not in blocked)
    if demo._real_ct() is not None:  # pydicom's CT_small: the only input with DICOM outputs
        assert {"--dicom-seg", "--dicom-sr"} <= flags or "highdicom" in blocked
        assert not {"--dicom-seg", "--dicom-sr"} & flags or "highdicom" not in blocked
    notes = capsys.readouterr().out
    for module in blocked:
        assert f"'{module}' is not installed" in notes
