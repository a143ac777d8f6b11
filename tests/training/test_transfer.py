"""Transfer learning: tensors load by name and shape; heads with other label counts stay fresh."""

from __future__ import annotations

import torch

from liverlesion.model import ModelConfig, build_model
from liverlesion.training import transfer_weights

TINY = {"base_width": 4, "depth": 3}


def _pretrained():
    torch.manual_seed(0)
    source = build_model(ModelConfig("joint", seg_labels=3, **TINY))
    with torch.no_grad():  # make every tensor, BatchNorm statistics included, distinguishable from an init
        for tensor in source.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) + 0.5)
    return source.state_dict()


def test_joint_target_gets_everything_but_its_five_label_head():
    source = _pretrained()
    torch.manual_seed(1)
    target = build_model(ModelConfig("joint", **TINY))
    fresh_head = target.head.weight.detach().clone()
    report = transfer_weights(source, target)
    assert sorted(report.skipped) == ["head.bias", "head.weight"]
    assert "shape (3, 4, 1, 1) != target (5, 4, 1, 1)" in report.skipped["head.weight"]
    assert report.fresh == ["head.weight", "head.bias"]
    state = target.state_dict()
    assert sorted(report.loaded) == sorted(set(source) - {"head.weight", "head.bias"})
    for name in report.loaded:
        assert torch.equal(state[name], source[name]), name
    assert torch.equal(target.head.weight, fresh_head)


def test_ynet_target_takes_the_three_label_head_and_keeps_a_fresh_classifier():
    source = _pretrained()
    target = build_model(ModelConfig("ynet", **TINY))
    report = transfer_weights(source, target)
    assert report.skipped == {}
    assert sorted(report.loaded) == sorted(source)
    assert sorted(report.fresh) == ["classifier.3.bias", "classifier.3.weight"]
    assert torch.equal(target.state_dict()["head.weight"], source["head.weight"])


def test_a_different_width_transfers_nothing_but_says_why():
    source = _pretrained()
    target = build_model(ModelConfig("joint", base_width=8, depth=3))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = transfer_weights(source, target)
    assert all(name.endswith("num_batches_tracked") for name in report.loaded)
    assert any("shape" in reason for reason in report.skipped.values())
    extra = {"unrelated.weight": torch.zeros(2)}
    assert transfer_weights(extra, target).skipped == {"unrelated.weight": "not in the target model"}
    for name, tensor in target.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(tensor, before[name])
