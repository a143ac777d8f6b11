"""Training core: loss goes down, resume is exact, patient split, transfer, evaluation, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from liverlesion.errors import InputError
from liverlesion.labels import LESION_CLASSES
from liverlesion.training import TrainConfig, evaluate_checkpoint, load_checkpoint, train
from liverlesion.training.augment import augment_batch
from liverlesion.training.datasets import SliceSet, split_groups, split_indices
from liverlesion.training.losses import soft_dice_loss

SIZE = 32
TINY = {"base_width": 4, "depth": 3, "grid_size": SIZE, "grid_spacing": 3.0, "threads": 2, "batch_size": 4}
LESION_HU = (10.0, 180.0, 60.0)  # cyst, hemangioma, metastasis


def _slice(rng, size=SIZE, lesion_class=None):
    """HU and a label map: air, a liver disc at 110 HU, a lesion disc whose HU gives its class."""
    yy, xx = np.mgrid[:size, :size] * (SIZE / size)
    hu = rng.normal(-900, 30, (size, size)).astype(np.float32)
    labels = np.zeros((size, size), np.uint8)
    cy, cx = rng.uniform(12, 20, 2)
    liver = (yy - cy) ** 2 + (xx - cx) ** 2 < 81
    hu[liver], labels[liver] = rng.normal(110, 8, liver.sum()), 1
    if lesion_class is not None:
        lesion = (yy - cy - 2) ** 2 + (xx - cx + 1) ** 2 < 9
        hu[lesion], labels[lesion] = LESION_HU[lesion_class], 2 + lesion_class
    return hu, labels


def _lesion_set(n=24, seed=0):
    rng = np.random.default_rng(seed)
    classes = np.arange(n) % 3
    pairs = [_slice(rng, lesion_class=int(c)) for c in classes]
    return SliceSet("lesion_slices", np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]),
                    np.array([f"P{i // 2:02d}" for i in range(n)]), classes.astype(np.int64),
                    [f"s{i}" for i in range(n)])


class _StopAfter:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_start(self, info):
        pass

    def on_epoch(self, report):
        if report.epoch == self.epoch:
            raise KeyboardInterrupt

    def on_end(self, summary):
        pass


@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_tiny_training_lowers_the_loss(arch, tmp_path):
    result = train(TrainConfig(data=tmp_path, out=tmp_path / "ckpt", arch=arch, epochs=6, lr=1e-2, **TINY),
                   dataset=_lesion_set())
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 6
    assert losses[-1] < 0.85 * losses[0]
    checkpoint = load_checkpoint(tmp_path / "ckpt")
    assert checkpoint.training["best_epoch"] == result.best_epoch
    assert checkpoint.config.arch == arch and checkpoint.grid.size == (SIZE, SIZE)


def test_resume_continues_exactly_where_an_interrupted_run_stopped(tmp_path):
    data = _lesion_set()
    config = {"data": tmp_path, "arch": "ynet", "epochs": 3, **TINY}
    train(TrainConfig(out=tmp_path / "full", **config), dataset=data)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=tmp_path / "cut", **config), _StopAfter(2), dataset=data)
    assert load_checkpoint(tmp_path / "cut", with_resume=True).resume.epoch == 2
    result = train(TrainConfig(data=tmp_path, out=tmp_path / "cut", resume=tmp_path / "cut", epochs=3),
                   dataset=data)
    assert result.epochs_run == 1 and [h["epoch"] for h in result.history] == [1, 2, 3]
    full = load_checkpoint(tmp_path / "full", with_resume=True).resume.model_state
    resumed = load_checkpoint(tmp_path / "cut", with_resume=True).resume.model_state
    for name, tensor in full.items():
        assert torch.equal(tensor, resumed[name]), name


def test_split_is_by_patient_and_seeded():
    data = _lesion_set(n=40)
    val = split_groups(data.groups, 0.25, seed=3)
    assert len(val) == 5 and val == split_groups(data.groups, 0.25, seed=3)
    assert val != split_groups(data.groups, 0.25, seed=4)
    train_idx, val_idx = split_indices(data, val)
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(40))
    assert not set(data.groups[train_idx]) & set(data.groups[val_idx])
    assert split_groups(data.groups, 0.0, seed=3) == []


def test_split_can_be_stratified_by_class():
    groups = np.array([f"P{i:02d}" for i in range(30)])
    classes = np.array([0] * 20 + [1] * 5 + [2] * 5)  # one slice per patient
    for seed in range(5):
        val = split_groups(groups, 0.2, seed=seed, classes=classes)
        counts = np.bincount(classes[np.isin(groups, val)], minlength=3)
        assert counts.tolist() == [4, 1, 1]


def test_augmentation_moves_labels_with_pixels():
    hu = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    labels = torch.arange(2 * 4 * 4).reshape(2, 4, 4)
    out_hu, out_labels = augment_batch(hu, labels, torch.Generator().manual_seed(0), flip=1.0, shift_hu=0,
                                       scale=0)
    assert torch.equal(out_labels, labels.flip(-1))
    assert torch.allclose(out_hu, hu.flip(-1))


def test_soft_dice_loss_bounds():
    target = torch.tensor([[[0, 1], [2, 2]]])
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert float(soft_dice_loss(perfect, target)) < 0.01
    assert float(soft_dice_loss(-perfect, target)) > 0.5


def test_config_refuses_contradictions(tmp_path):
    with pytest.raises(InputError, match="pretraining"):
        TrainConfig(data=tmp_path, out=tmp_path / "x", stage="pretrain", arch="ynet")
    with pytest.raises(InputError, match="not both"):
        TrainConfig(data=tmp_path, out=tmp_path / "x", init=tmp_path, resume=tmp_path)
    with pytest.raises(InputError, match="multiple of 4"):
        train(TrainConfig(data=tmp_path, out=tmp_path / "x", **{**TINY, "grid_size": 30}))


def _write_dataset(root):
    """A tiny LiTS folder (NIfTI) and lesion-slice dataset, in the agreed on-disk formats."""
    nib = pytest.importorskip("nibabel")
    from liverlesion.data.lesion_slices import LesionSlice, write_lesion_slices

    rng = np.random.default_rng(0)
    (root / "lits").mkdir(parents=True)
    for case in range(3):
        pairs = [_slice(rng, size=48, lesion_class=0 if z % 2 else None) for z in range(4)]
        volume = np.stack([p[0] for p in pairs], axis=-1)  # stored (x, y, z)
        seg = np.minimum(np.stack([p[1] for p in pairs], axis=-1), 2)
        affine = np.diag([-2.0, -2.0, 5.0, 1.0])
        nib.save(nib.Nifti1Image(volume.astype(np.int16), affine), root / "lits" / f"volume-{case}.nii.gz")
        nib.save(nib.Nifti1Image(seg.astype(np.uint8), affine), root / "lits" / f"segmentation-{case}.nii.gz")
    slices = []
    for i in range(12):
        hu, mask = _slice(rng, size=48, lesion_class=i % 3)
        slices.append(LesionSlice(f"c{i}", f"P{i // 2}", hu, mask, (2.0, 2.0), LESION_CLASSES[i % 3]))
    write_lesion_slices(root / "lesion_slices", slices)


def test_pretrain_transfer_finetune_evaluate_from_files(tmp_path):
    _write_dataset(tmp_path / "data")
    common = {"data": tmp_path / "data", "epochs": 2, **TINY}
    pretrained = train(TrainConfig(out=tmp_path / "lits", stage="pretrain", **common))
    assert pretrained.data["kind"] == "lits" and pretrained.data["groups"] == 3
    assert load_checkpoint(tmp_path / "lits").config.seg_labels == 3
    result = train(TrainConfig(out=tmp_path / "joint", init=tmp_path / "lits", **common))
    assert result.transfer is not None and set(result.transfer["fresh"]) == {"head.weight", "head.bias"}
    metrics = evaluate_checkpoint(tmp_path / "joint", tmp_path / "data", "val")
    assert metrics["slices"] == result.data["val_slices"] and 0 <= metrics["lesion_dice"] <= 1
    assert "accuracy" in metrics and len(metrics["confusion_matrix"]) == 3
    assert evaluate_checkpoint(tmp_path / "joint", tmp_path / "data", "all")["slices"] == 12
    lits = evaluate_checkpoint(tmp_path / "joint", tmp_path / "data", "all", dataset="lits")
    assert "accuracy" not in lits and lits["slices"] == pretrained.data["slices"]


def test_cli_train_and_evaluate(tmp_path, capsys):
    from liverlesion.cli import main

    _write_dataset(tmp_path / "data")
    tiny = ["--width", "4", "--depth", "3", "--grid-size", "32", "--grid-spacing", "3", "--threads", "2"]
    args = ["train", "--data", str(tmp_path / "data"), "--arch", "ynet", "--epochs", "2", "--out",
            str(tmp_path / "ynet"), "--json", str(tmp_path / "train.json"), *tiny]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "left ~" in out
    assert json.loads((tmp_path / "train.json").read_text())["arch"] == "ynet"
    assert main(["train", "--data", str(tmp_path / "data"), "--resume", str(tmp_path / "ynet"),
                 "--epochs", "3", "--out", str(tmp_path / "ynet")]) == 0
    assert load_checkpoint(tmp_path / "ynet", with_resume=True).resume.epoch == 3
    assert main(["train", "--data", str(tmp_path / "data"), "--resume", str(tmp_path / "ynet"), "--stage",
                 "pretrain", "--out", str(tmp_path / "ynet")]) == 2
    assert main(["evaluate", str(tmp_path / "ynet"), "--data", str(tmp_path / "data"), "--split", "all",
                 "--json", str(tmp_path / "eval.json")]) == 0
    assert "class accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval.json").read_text())["slices"] == 12
