"""Checkpoints: safetensors + JSON round trip, resume state, and refusal of broken folders."""

from __future__ import annotations

import json

import pytest
import torch

from liverlesion.errors import CheckpointError, LiverLesionError
from liverlesion.grid import ModelGrid
from liverlesion.labels import LESION_CLASSES, TARGET_LABELS, YNET_SEG_LABELS
from liverlesion.model import ModelConfig, build_model
from liverlesion.preprocessing import Preprocessing
from liverlesion.training import ResumeState, load_checkpoint, save_checkpoint

GRID = ModelGrid((32, 32), (3.0, 3.0))
PREP = Preprocessing(((-100.0, 200.0), (0.0, 100.0), (-1000.0, 1000.0)))


def _trained(arch: str = "joint"):
    """A tiny model after two optimizer steps (non-default weights and BatchNorm statistics)."""
    torch.manual_seed(1)
    config = ModelConfig(arch, base_width=4, depth=3)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        out = model(torch.randn(2, 3, 32, 32))
        loss = sum(o.square().mean() for o in (out if isinstance(out, tuple) else (out,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return config, model.eval(), optimizer


def _save(path, arch="joint", **kwargs):
    config, model, optimizer = _trained(arch)
    labels = TARGET_LABELS if arch == "joint" else YNET_SEG_LABELS
    save_checkpoint(path, model, config=config, preprocessing=PREP, grid=GRID, labels=labels,
                    classes=LESION_CLASSES, training={"stage": "finetune", "epoch": 2, "seed": 1}, **kwargs)
    return config, model, optimizer


@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_round_trip_gives_identical_outputs(arch, tmp_path):
    config, model, _ = _save(tmp_path / "ckpt", arch)
    loaded = load_checkpoint(tmp_path / "ckpt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, got = model(x), loaded.model(x)
    if arch == "joint":
        want, got = (want,), (got,)
    for w, g in zip(want, got, strict=True):
        assert torch.equal(w, g)
    assert loaded.config == config and loaded.grid == GRID and loaded.preprocessing == PREP
    assert loaded.labels == (TARGET_LABELS if arch == "joint" else YNET_SEG_LABELS)
    assert loaded.classes == LESION_CLASSES
    assert loaded.training["epoch"] == 2 and loaded.resume is None
    assert not loaded.model.training
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folders left behind


def test_resume_state_restores_the_optimizer(tmp_path):
    config, model, optimizer = _trained()
    save_checkpoint(tmp_path / "ckpt", model, config=config, preprocessing=PREP, grid=GRID,
                    labels=TARGET_LABELS,
                    resume=ResumeState(2, model.state_dict(), optimizer.state_dict()))
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {
        "checkpoint.json", "model.safetensors", "last.safetensors", "optimizer.safetensors"}
    loaded = load_checkpoint(tmp_path / "ckpt", with_resume=True)
    assert loaded.resume is not None and loaded.resume.epoch == 2
    restored_model = build_model(config)
    restored_model.load_state_dict(loaded.resume.model_state)
    restored = torch.optim.AdamW(restored_model.parameters(), lr=1.0)
    restored.load_state_dict(loaded.resume.optimizer_state)
    assert restored.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert restored.param_groups[0]["betas"] == optimizer.param_groups[0]["betas"]
    # One more identical step on both gives identical weights.
    x = torch.randn(2, 3, 32, 32)
    for m, opt in ((model, optimizer), (restored_model, restored)):
        m.train()
        opt.zero_grad()
        m(x).square().mean().backward()
        opt.step()
    for (name, a), b in zip(model.state_dict().items(), restored_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert load_checkpoint(tmp_path / "ckpt").resume is None  # only read on request


def test_missing_or_unreadable_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is missing"):
        load_checkpoint(tmp_path / "empty")
    _save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load_checkpoint(tmp_path / "ckpt")


def _edit_json(path, change):
    file = path / "checkpoint.json"
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data))


def test_bad_json_format_and_version_are_refused(tmp_path):
    _save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ckpt")
    _save(tmp_path / "ckpt")
    _edit_json(tmp_path / "ckpt", lambda d: d.update(format="something-else"))
    with pytest.raises(CheckpointError, match="format 'something-else'"):
        load_checkpoint(tmp_path / "ckpt")
    _save(tmp_path / "ckpt")
    _edit_json(tmp_path / "ckpt", lambda d: d.update(version=99))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "ckpt")


def test_corrupted_weights_are_refused(tmp_path):
    _save(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path / "ckpt")
    # Without a recorded checksum the safetensors reader itself must refuse a truncated file.
    _save(tmp_path / "ckpt")
    _edit_json(tmp_path / "ckpt", lambda d: d.pop("files"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "ckpt")


def test_config_that_does_not_fit_the_weights_is_refused(tmp_path):
    _save(tmp_path / "ckpt")
    _edit_json(tmp_path / "ckpt", lambda d: d["model"].update(seg_labels=3))
    with pytest.raises(CheckpointError, match=r"head.weight: file \(5, 4, 1, 1\) vs model \(3, 4, 1, 1\)"):
        load_checkpoint(tmp_path / "ckpt")
    _save(tmp_path / "ckpt")
    _edit_json(tmp_path / "ckpt", lambda d: d["model"].update(depth=4))
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "ckpt")
    _save(tmp_path / "ckpt")
    _edit_json(tmp_path / "ckpt", lambda d: d.pop("grid"))
    with pytest.raises(CheckpointError, match="grid"):
        load_checkpoint(tmp_path / "ckpt")


def test_save_refuses_to_overwrite_a_foreign_folder(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(LiverLesionError, match="refusing to overwrite"):
        _save(foreign)
    assert (foreign / "holiday.jpg").exists()
    _save(tmp_path / "ckpt")
    _save(tmp_path / "ckpt")  # replacing an older checkpoint is fine
    assert load_checkpoint(tmp_path / "ckpt").config.arch == "joint"
