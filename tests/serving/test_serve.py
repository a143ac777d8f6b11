"""``liverlesion serve``: its options, its two handlers in-process, and the real tritonserver it starts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from liverlesion.errors import InputError
from liverlesion.labels import TARGET_LABELS
from liverlesion.sdk import LesionAnalyzer
from liverlesion.sdk.geometry import Orientation
from liverlesion.sdk.inputs import load_slice
from liverlesion.serving import contract
from liverlesion.serving.server import NetworkHandler, PipelineHandler, ServeOptions, is_loopback
from liverlesion.serving.wire import orientation_tensor, parse_payload, prediction_from, refusal
from sdk_fixtures import THRESHOLD_GRID, THRESHOLD_HU, drawn_slice
from serving_process import BAD_REQUESTS, post


class FakeRequest(dict):
    """What PyTriton hands a model callable: the inputs by name, and the request's parameters."""

    def __init__(self, data: dict, parameters: dict | None = None) -> None:
        super().__init__(data)
        self.parameters = parameters or {}


def request(hu: np.ndarray, spacing=(1.0, 1.0), orientation=None, **parameters) -> FakeRequest:
    data = {"hu": np.asarray(hu, np.float32)[None], "spacing_mm": np.array([spacing], np.float64)}
    if orientation is not None:
        data["orientation"] = np.array([orientation], np.uint8)
    return FakeRequest(data, parameters)


@pytest.fixture(scope="module")
def analyzer(threshold_package: Path):
    with LesionAnalyzer.load(threshold_package, backend="openvino") as loaded:
        yield loaded


# -- options -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost"])
def test_loopback_hosts_are_loopback(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "192.168.0.1", "::", "example.org", "127.0.0.1.nip.io"])
def test_other_hosts_are_not(host):
    assert not is_loopback(host)


def test_a_non_loopback_host_needs_allow_remote():
    with pytest.raises(InputError, match="--allow-remote"):
        ServeOptions(Path("p"), host="0.0.0.0").check()
    ServeOptions(Path("p"), host="0.0.0.0", allow_remote=True).check()


@pytest.mark.parametrize("changes, words", [
    ({"http_port": 9000, "grpc_port": 9000}, "differ"),
    ({"http_port": 0}, "1 to 65535"),
    ({"instances": 0}, "positive"),
    ({"max_batch": True}, "positive"),
    ({"queue_delay_ms": -1}, "0 to 10000"),
    ({"access_token": "short"}, "16 printable"),
    ({"access_token": "a" * 20 + ":b"}, "without ','"),
])
def test_options_triton_would_misread_are_refused(changes, words):
    with pytest.raises(InputError, match=words):
        ServeOptions(Path("p"), **changes).check()


def test_the_command_refuses_a_remote_host_before_it_loads_anything(tmp_path, capsys):
    from liverlesion.cli import main

    assert main(["serve", str(tmp_path / "no-such-package"), "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


# -- the handlers, in-process --------------------------------------------------------------------------------------
def _answered(response: dict, slice_) -> object:
    data = parse_payload(response["prediction_json"][0])
    assert refusal(data) is None, data
    return prediction_from(data, response["label_map"][0], response["lesion_components"][0], slice_)


def test_a_batch_answers_its_good_requests_and_refuses_only_the_bad_ones(analyzer):
    good = drawn_slice(1.0, 300.0)
    flat = np.full((64, 64), 50.0)  # no air or fat: not a CT slice, unless allow_non_hu
    big = np.full((contract.MAX_SIDE + 1, 8), -1000.0)
    requests = [request(good), request(big), request(flat), FakeRequest({"hu": good[None].astype(np.float32)}),
                request(good, orientation=(2, 0, 0)), request(flat, allow_non_hu=True), request(good, (0.7, 0.7))]
    responses = PipelineHandler(analyzer)(requests)
    assert len(responses) == len(requests)
    reasons = {i: refusal(parse_payload(responses[i]["prediction_json"][0])) for i in (1, 2, 3, 4)}
    assert reasons[1] == ("InputError", reasons[1][1]) and "exceeds this server's limit of 2048" in reasons[1][1]
    assert "air or fat" in reasons[2][1]
    assert "no input 'spacing_mm'" in reasons[3][1]
    assert "orientation must be 3 values of 0 or 1" in reasons[4][1]
    for i, hu, spacing, allow in ((0, good, (1.0, 1.0), False), (5, flat, (1.0, 1.0), True),
                                  (6, good, (0.7, 0.7), False)):
        slice_ = load_slice(hu, spacing=spacing, allow_non_hu=allow)
        served, local = _answered(responses[i], slice_), analyzer.predict(slice_)
        assert np.array_equal(served.label_map, local.label_map)
        assert served.lesions == local.lesions and served.slice_class == local.slice_class


def test_whole_hu_travel_as_int16_and_give_the_float32_answer(analyzer):
    from liverlesion.serving.wire import request_tensors

    whole = load_slice(drawn_slice(1.0, 300.0), spacing=(1.0, 1.0))
    fraction = load_slice(drawn_slice(1.0, 300.0) + 0.25, spacing=(1.0, 1.0))
    sent = request_tensors([whole])
    assert "hu" not in sent and sent["hu_int16"].dtype == np.int16  # half the bytes
    assert np.array_equal(sent["hu_int16"][0], whole.hu)
    assert set(request_tensors([fraction])) & set(contract.HU_INPUTS) == {"hu"}  # never rounded
    as_int16 = FakeRequest({k: v for k, v in sent.items()})
    as_float = request(whole.hu)
    served = [_answered(r, whole) for r in PipelineHandler(analyzer)([as_int16, as_float])]
    assert np.array_equal(served[0].label_map, served[1].label_map) and served[0].lesions == served[1].lesions
    assert served[0].lesions  # the drawn slice has lesions to compare


def test_a_slice_with_more_lesions_than_the_wire_numbers_is_refused_alone(analyzer, monkeypatch):
    monkeypatch.setattr(contract, "MAX_WIRE_LESIONS", 1)
    two = drawn_slice(1.0, 300.0)  # two drawn cysts
    none = np.where(np.arange(64)[None, :] < 20, -1000.0, 100.0).repeat(64, 0)  # air and liver only
    responses = PipelineHandler(analyzer)([request(two), request(none)])
    reason = refusal(parse_payload(responses[0]["prediction_json"][0]))
    assert reason is not None and "more than the 1 a served answer can number" in reason[1]
    assert responses[1]["lesion_components"].dtype == np.uint16
    assert responses[1]["lesion_components"].shape == (1, 1, 1)  # no lesion: not sent whole
    empty = _answered(responses[1], load_slice(none, spacing=(1.0, 1.0)))
    assert empty.lesions == () and empty.lesion_components.shape == (64, 64) and not empty.lesion_components.any()


def test_the_drawn_cysts_come_back_as_two_cysts_of_their_drawn_areas(analyzer):
    response = PipelineHandler(analyzer)([request(drawn_slice(0.5, 300.0), (0.5, 0.5))])[0]
    prediction = _answered(response, load_slice(drawn_slice(0.5, 300.0), spacing=(0.5, 0.5)))
    assert [x.label for x in prediction.lesions] == ["cyst", "cyst"]
    areas = sorted(x.area_mm2 for x in prediction.lesions)
    # discs of radius 12 and 20 mm, seen through the 2 mm model grid: within 10 %
    assert areas == pytest.approx([np.pi * 12.0 ** 2, np.pi * 20.0 ** 2], rel=0.10)


def test_the_orientation_travels_with_the_slice(analyzer):
    canonical = drawn_slice(1.0, 300.0)[:, 20:]  # not square: a lost transpose shows
    stored = canonical.T
    response = PipelineHandler(analyzer)([request(stored, orientation=orientation_tensor(Orientation(True)))])[0]
    label_map = response["label_map"][0]
    expected = analyzer.predict(canonical, spacing=(1.0, 1.0)).label_map
    assert label_map.shape == stored.shape and np.array_equal(label_map, expected.T)


def _known_grid_hu() -> tuple[np.ndarray, np.ndarray]:
    """Model-grid HU in four bands of the threshold graph's HU values, and the label of each pixel."""
    rows, cols = THRESHOLD_GRID.size
    hu = np.empty((rows, cols), np.float32)
    labels = np.empty((rows, cols), np.int32)
    for band, name in enumerate(("liver", "cyst", "hemangioma", "metastasis")):
        hu[band * rows // 4:(band + 1) * rows // 4] = THRESHOLD_HU[name]
        labels[band * rows // 4:(band + 1) * rows // 4] = TARGET_LABELS.index(name)
    return hu, labels


def test_the_network_handler_labels_model_grid_hu_as_the_threshold_graph_does(analyzer):
    hu, labels = _known_grid_hu()
    responses = NetworkHandler(analyzer)([FakeRequest({"hu": hu[None, None]}),
                                          FakeRequest({"hu": np.stack([hu[None], hu[None] * 0 - 1000.0])})])
    assert np.array_equal(responses[0]["labels"][0], labels)
    assert np.array_equal(responses[1]["labels"][0], labels) and not responses[1]["labels"][1].any()  # air: 0
    assert responses[1]["probabilities"].shape == (2, len(TARGET_LABELS), *THRESHOLD_GRID.size)


# -- the real server -----------------------------------------------------------------------------------------------
def _config(served, model: str) -> dict:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(served.server.http)
    try:
        return client.get_model_config(model)
    finally:
        client.close()


@pytest.mark.serving
@pytest.mark.parametrize("model", [contract.PIPELINE_MODEL, contract.NETWORK_MODEL])
def test_each_served_model_carries_the_package_identity_and_batches(served, model):
    config = _config(served, model)
    parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
    name, version, digest = contract.PARAMETER_KEYS
    assert parameters[name] == "threshold" and parameters[version] == "0" and parameters[digest] == served.digest
    assert json.loads(parameters[contract.DEFAULT_SPACING_KEY]) == [2.0, 2.0]
    assert config["max_batch_size"] == 8 and config["dynamic_batching"]["max_queue_delay_microseconds"] == 5000


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


@pytest.mark.serving
def test_the_server_listens_on_loopback_only(served):
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, in IPv4 or IPv4-mapped IPv6 form
    for port in (served.server.http_port, served.server.grpc_port):
        addresses = _listening(port)
        assert len(addresses) == 1 and set(addresses) <= loopback, (port, addresses)


def _works(served) -> None:
    from liverlesion.serving.remote import RemoteAnalyzer

    with RemoteAnalyzer(served.server.http) as remote:
        hu = drawn_slice(1.0, 300.0)
        assert remote.predict(hu, spacing=(1.0, 1.0)).lesions == served.analyzer.predict(hu, spacing=(1.0, 1.0)).lesions


@pytest.mark.serving
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_is_refused_with_its_reason_and_the_server_keeps_serving(served, case):
    body, headers, status, words = BAD_REQUESTS[case]
    got_status, text = post(served.server.http_port, body, headers)
    assert got_status == status and words in text, text
    assert served.server.alive()
    _works(served)


@pytest.mark.serving
def test_an_unknown_model_is_a_404(served):
    status, text = post(served.server.http_port, b"{}", path="/v2/models/no_such_model/infer")
    assert status == 404 and "no_such_model" in text


@pytest.mark.serving
def test_the_admin_endpoints_need_the_access_token(served):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(served.server.http)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_inference_statistics(contract.PIPELINE_MODEL)
        stats = client.get_inference_statistics(contract.PIPELINE_MODEL,
                                                headers={"triton-access-token": served.server.token})
        assert stats["model_stats"][0]["name"] == contract.PIPELINE_MODEL
    finally:
        client.close()


@pytest.mark.serving
def test_the_served_network_labels_model_grid_hu_as_the_threshold_graph_does(served):
    import tritonclient.http as httpclient

    hu, labels = _known_grid_hu()
    client = httpclient.InferenceServerClient(served.server.http)
    try:
        tensor = httpclient.InferInput("hu", [2, 1, *hu.shape], "FP32")
        tensor.set_data_from_numpy(np.stack([hu[None], hu[None]]), binary_data=True)
        result = client.infer(contract.NETWORK_MODEL, [tensor])
    finally:
        client.close()
    assert np.array_equal(result.as_numpy("labels"), np.stack([labels, labels]))
    assert result.as_numpy("probabilities").shape == (2, len(TARGET_LABELS), *hu.shape)
