"""The joint U-Net and the Y-Net: shapes, gradients, config round trip, ONNX export, FLOPs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from liverlesion.errors import InputError
from liverlesion.model import (
    MODEL_REGISTRY,
    JointUNet,
    ModelConfig,
    YNet,
    build_model,
    count_flops,
    count_parameters,
)

TINY = {"base_width": 4, "depth": 3}


@pytest.mark.parametrize("extra", [{}, {"downsample": "maxpool", "blocks_per_level": 2}, {"depth": 4}])
def test_joint_output_shape(extra):
    config = ModelConfig("joint", **{**TINY, **extra})
    model = build_model(config)
    out = model(torch.randn(2, 3, 32, 48))
    assert isinstance(model, JointUNet) and not isinstance(model, YNet)
    assert out.shape == (2, 5, 32, 48)


def test_ynet_outputs_segmentation_and_class_scores():
    model = build_model(ModelConfig("ynet", **TINY))
    seg, cls = model(torch.randn(3, 3, 16, 16))
    assert isinstance(model, YNet)
    assert seg.shape == (3, 3, 16, 16) and cls.shape == (3, 3)


def test_label_counts_follow_config():
    assert ModelConfig("joint").seg_labels == 5
    assert ModelConfig("ynet").seg_labels == 3
    assert build_model(ModelConfig("joint", seg_labels=3, **TINY))(torch.zeros(1, 3, 8, 8)).shape[1] == 3


@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_every_parameter_gets_a_gradient(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, **TINY)).train()
    out = model(torch.randn(4, 3, 16, 16))
    outputs = out if isinstance(out, tuple) else (out,)
    loss = sum((o * torch.randn_like(o)).sum() for o in outputs)
    loss.backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_input_size_must_fit_depth():
    model = build_model(ModelConfig("joint", base_width=4, depth=4))
    with pytest.raises(InputError, match="multiples of 8"):
        model(torch.zeros(1, 3, 20, 16))
    with pytest.raises(InputError, match="N x 3 x H x W"):
        model(torch.zeros(1, 1, 16, 16))


def test_config_json_round_trip_and_validation():
    config = ModelConfig("ynet", base_width=8, depth=5, blocks_per_level=2, downsample="maxpool")
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(InputError, match="architecture"):
        ModelConfig("vnet")
    with pytest.raises(InputError, match="base_width"):
        ModelConfig(base_width=0)
    with pytest.raises(InputError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"arch": "joint", "colour": "red"})
    assert set(MODEL_REGISTRY) == {"joint", "ynet"}


def test_count_parameters_and_flops_by_hand():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False))
    assert count_parameters(conv) == 8 * 3 * 9
    assert count_flops(conv, (1, 3, 16, 16)) == 2 * 8 * 3 * 9 * 16 * 16
    model = build_model(ModelConfig("joint", **TINY))
    single = count_flops(model, (1, 3, 32, 32))
    assert count_flops(model, (2, 3, 32, 32)) == 2 * single
    # Full-resolution convolutions alone (stem + first encoder block) are a lower bound.
    assert single > 2 * 32 * 32 * 9 * (3 * 4 + 4 * 4 + 4 * 4)


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_onnx_export_opset17_dynamic_batch_matches_torch(arch, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, **TINY)).eval()
    names = ["seg_logits", "class_logits"] if arch == "ynet" else ["seg_logits"]
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), opset_version=17, dynamo=False,
                      input_names=["image"], output_names=names,
                      dynamic_axes={name: {0: "batch"} for name in ["image", *names]})
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    ops = {node.op_type for node in graph.graph.node}
    assert "ConvTranspose" not in ops and "Resize" in ops  # the INT8-friendly upsampling
    x = torch.randn(3, 3, 32, 32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = model(x)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)
