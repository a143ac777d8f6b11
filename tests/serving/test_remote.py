"""``RemoteAnalyzer`` against a real ``liverlesion serve``: the in-process Predictions, and typed failures."""

from __future__ import annotations

import numpy as np
import pytest

from concurrency import run_together
from liverlesion.errors import BackendError, InputError
from liverlesion.serving import contract
from liverlesion.serving.remote import ModelMissing, RemoteAnalyzer, RequestRefused, ServerUnavailable, WrongModel
from sdk_fixtures import drawn_slice
from serving_process import assert_same, free_ports

pytestmark = pytest.mark.serving
PROTOCOLS = ("http", "grpc")


@pytest.fixture(params=PROTOCOLS)
def remote(request, served):
    with RemoteAnalyzer(served.server.url(request.param), protocol=request.param, expect_digest=served.digest,
                        expect_name="threshold", timeout_s=30) as analyzer:
        yield analyzer


@pytest.mark.parametrize("spacing", [0.5, 0.7, 0.78125, 1.3])
def test_predict_equals_in_process_predict(remote, served, spacing):
    hu = drawn_slice(spacing, 300.0)
    served_prediction = remote.predict(hu, spacing=(spacing, spacing))
    assert_same(served_prediction, served.analyzer.predict(hu, spacing=(spacing, spacing)))
    assert [x.label for x in served_prediction.lesions] == ["cyst", "cyst"]  # what the slice has drawn
    assert served_prediction.timings["round_trip_ms"] > 0


def test_an_array_without_spacing_takes_the_served_package_default(remote, served):
    hu = drawn_slice(2.0, 300.0)
    assert remote.default_spacing == (2.0, 2.0)
    assert_same(remote.predict(hu), served.analyzer.predict(hu))


def test_predict_batch_equals_in_process_predict_batch_across_shapes(remote, served):
    slices = [drawn_slice(1.0, 300.0), drawn_slice(1.0, 300.0)[::-1].copy(), drawn_slice(1.0, 300.0)[:, :290],
              *[drawn_slice(1.0, 300.0)] * 9]  # 12: two shapes, and more than one request of the server's 8
    remote_results = remote.predict_batch(slices, spacing=(1.0, 1.0))
    local_results = served.analyzer.predict_batch(slices, spacing=(1.0, 1.0))
    assert len(remote_results) == len(slices)
    for a, b in zip(remote_results, local_results):
        assert_same(a, b)


def test_a_dicom_slice_is_read_here_and_its_seg_written_from_the_served_prediction(remote, served):
    pytest.importorskip("highdicom")
    from series_files import ct_series

    volume = np.stack([drawn_slice(0.78125, 400.0)[:, :] for _ in range(2)]).astype(np.float32)
    dataset = ct_series(volume, spacing_mm=(0.78125, 0.78125))[0]
    prediction = remote.predict(dataset)
    assert_same(prediction, served.analyzer.predict(dataset))
    assert prediction.dataset is dataset and prediction.source["kind"] == "dicom"
    seg = prediction.to_dicom_seg()
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == dataset.SeriesInstanceUID


def test_allow_non_hu_travels_with_the_request(remote, served):
    flat = np.full((64, 64), 50.0)
    with pytest.raises(InputError, match="air or fat"):  # read here: refused before it is sent
        remote.predict(flat, spacing=(1.0, 1.0))
    assert_same(remote.predict(flat, spacing=(1.0, 1.0), allow_non_hu=True),
                served.analyzer.predict(flat, spacing=(1.0, 1.0), allow_non_hu=True))


def test_a_slice_larger_than_the_server_takes_is_refused_before_it_is_copied_or_sent(remote):
    # 20000 x 20000 float32 would be 1.6 GB: a zero-stride view of one value allocates nothing, and the
    # refusal comes from its shape
    huge = np.broadcast_to(np.float32(-1000.0), (20_000, 20_000))
    with pytest.raises(InputError, match="2048"):
        remote.predict(huge, spacing=(0.5, 0.5))
    wide = np.broadcast_to(np.float32(-1000.0), (contract.MAX_SIDE + 1, 16))
    with pytest.raises(InputError, match="2048"):
        remote.predict(wide, spacing=(0.5, 0.5))


def test_a_server_refusal_is_a_request_refused_and_an_input_error(remote):
    from liverlesion.sdk.inputs import SliceInput

    # a SliceInput is not read again here, so only the server sees that it is not a CT slice
    forged = SliceInput(np.full((64, 64), 50.0, np.float32), (1.0, 1.0))
    with pytest.raises(RequestRefused, match="air or fat") as caught:
        remote.predict(forged)
    assert isinstance(caught.value, InputError) and isinstance(caught.value, BackendError)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_running_another_package_is_a_wrong_model(served, protocol):
    url = served.server.url(protocol)
    with pytest.raises(WrongModel, match="not the expected"):
        RemoteAnalyzer(url, protocol=protocol, expect_digest="0" * 64)
    with pytest.raises(WrongModel, match="'threshold'.*not the expected 'liver-v2'"):
        RemoteAnalyzer(url, protocol=protocol, expect_name="liver-v2")
    lazy = RemoteAnalyzer(url, protocol=protocol, expect_digest="f" * 64, connect=False)
    with pytest.raises(WrongModel):  # checked before the first request too
        lazy.predict(drawn_slice(1.0, 300.0), spacing=(1.0, 1.0))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_model_the_server_does_not_serve_is_missing(served, protocol):
    with pytest.raises(ModelMissing, match="no_such_model"):
        RemoteAnalyzer(served.server.url(protocol), protocol=protocol, model="no_such_model")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_server_is_server_unavailable_after_the_bounded_retries(protocol, monkeypatch):
    from liverlesion.serving import remote as remote_module

    (port,) = free_ports(1)
    waits: list[float] = []
    monkeypatch.setattr(remote_module.time, "sleep", waits.append)
    with pytest.raises(ServerUnavailable, match=f"127.0.0.1:{port}"):
        RemoteAnalyzer(f"127.0.0.1:{port}", protocol=protocol, retries=2, timeout_s=5)
    assert waits == [0.5, 1.0]  # two retries, the second after a longer pause, then the typed error


def test_arguments_are_checked_before_anything_is_sent():
    for kwargs, words in (({"protocol": "ftp"}, "http, grpc"), ({"timeout_s": 0}, "above 0"),
                          ({"retries": -1}, "0 to 10")):
        with pytest.raises(InputError, match=words):
            RemoteAnalyzer("127.0.0.1:1", connect=False, **kwargs)
    with pytest.raises(InputError, match="host:port"):
        RemoteAnalyzer("http://127.0.0.1:1/v2", connect=False)


def test_one_remote_analyzer_shared_by_threads(served):
    hu = drawn_slice(1.0, 300.0)
    local = served.analyzer.predict(hu, spacing=(1.0, 1.0))
    with RemoteAnalyzer(served.server.grpc, protocol="grpc") as shared:
        def work(_: int) -> None:
            for _ in range(5):
                assert_same(shared.predict(hu, spacing=(1.0, 1.0)), local)

        assert run_together(4, work) == []


def test_a_closed_remote_analyzer_refuses_further_calls(served):
    remote = RemoteAnalyzer(served.server.http)
    remote.close()
    with pytest.raises(BackendError, match="closed"):
        remote.predict(drawn_slice(1.0, 300.0), spacing=(1.0, 1.0))


def _drawn_series(folder):
    """A 16-slice 128 x 128 DICOM series on the threshold grid: body, a liver block, a metastasis ball, a cyst."""
    from sdk_fixtures import THRESHOLD_GRID, THRESHOLD_HU
    from series_files import ct_series, sphere_volume, write_series

    side, pixel_mm, slice_mm = THRESHOLD_GRID.size[0], THRESHOLD_GRID.spacing_mm[0], 2.5
    hu = np.full((16, side, side), THRESHOLD_HU["background"][0])
    hu[:, :, :8] = THRESHOLD_HU["background"][1]  # air on the left
    hu[2:14, 30:100, 30:100] = THRESHOLD_HU["liver"]
    hu[sphere_volume(hu.shape, (20.0, 120.0, 120.0), 8.0, (pixel_mm, pixel_mm), slice_mm)] = THRESHOLD_HU["metastasis"]
    hu[sphere_volume(hu.shape, (15.0, 80.0, 160.0), 5.0, (pixel_mm, pixel_mm), slice_mm)] = THRESHOLD_HU["cyst"]
    paths = write_series(folder, ct_series(hu, (pixel_mm, pixel_mm), slice_mm, first_z_mm=0.0))
    return paths[0].parent


def _seg_content(seg):
    """What a SEG says, without its UIDs and dates: the segments, the frames' segment numbers, the pixels."""
    segments = [(s.SegmentNumber, s.SegmentLabel, s.SegmentAlgorithmType, s.SegmentAlgorithmName,
                 s.SegmentedPropertyTypeCodeSequence[0].CodeMeaning) for s in seg.SegmentSequence]
    frames = [f.SegmentIdentificationSequence[0].ReferencedSegmentNumber
              for f in seg.PerFrameFunctionalGroupsSequence]
    return segments, frames, bytes(seg.PixelData)


def _sr_content(items):
    """What an SR says, item by item (value type, concept, value), without its UIDs and references."""
    out = []
    for item in items:
        name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
        value = None
        if item.ValueType == "NUM" and "MeasuredValueSequence" in item:
            value = str(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "TEXT":
            value = item.TextValue
        elif item.ValueType == "CODE":
            value = item.ConceptCodeSequence[0].CodeMeaning
        out.append((item.ValueType, name, value))
        if "ContentSequence" in item:
            out.extend(_sr_content(item.ContentSequence))
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predict_series_equals_in_process_predict_series(served, tmp_path, protocol):
    pytest.importorskip("highdicom")
    folder = _drawn_series(tmp_path / "ct")
    local = served.analyzer.predict_series(folder)
    done = []
    with RemoteAnalyzer(served.server.url(protocol), protocol=protocol, expect_digest=served.digest) as remote:
        got = remote.predict_series(folder, batch_size=4, progress=lambda n, total: done.append((n, total)))
    np.testing.assert_array_equal(got.labels, local.labels)
    np.testing.assert_array_equal(got.lesion_ids, local.lesion_ids)
    assert sorted(lesion.label for lesion in local.lesions) == ["cyst", "metastasis"]  # what the series has drawn
    assert [lesion.to_dict() for lesion in got.lesions] == [lesion.to_dict() for lesion in local.lesions]
    assert got.measurements.to_dict() == local.measurements.to_dict()
    assert [s.to_dict() for s in got.slices] == [s.to_dict() for s in local.slices]
    assert (got.backend, got.precision, got.model) == (local.backend, local.precision, local.model)
    assert done[-1] == (16, 16) and got.timings["batch_size"] == 4 and got.timings["open_ms"] > 0
    seg, local_seg = got.to_dicom_seg(), local.to_dicom_seg()
    assert _seg_content(seg) == _seg_content(local_seg) and len(seg.SegmentSequence) == 3
    sr, local_sr = got.to_dicom_sr(seg), local.to_dicom_sr(local_seg)
    content = _sr_content(sr.ContentSequence)
    assert content == _sr_content(local_sr.ContentSequence)
    assert sum(kind == "NUM" for kind, _, _ in content) >= 2 * 3  # volumes and axes of each lesion, the liver's


def test_a_series_already_opened_is_predicted_as_in_process_and_left_open(served, tmp_path):
    from liverlesion.sdk.series.source import open_series

    folder = _drawn_series(tmp_path / "ct")
    with RemoteAnalyzer(served.server.grpc, protocol="grpc") as remote, open_series(folder) as series:
        got = remote.predict_series(series, batch_size=8)
        assert got.series is series
        np.testing.assert_array_equal(got.labels, served.analyzer.predict_series(series).labels)
        with pytest.raises(InputError, match="already opened"):  # reading options belong to open_series then
            remote.predict_series(series, allow_non_hu=True)


def test_predict_series_refuses_a_bad_series_before_sending(served, tmp_path):
    with RemoteAnalyzer(served.server.http) as remote, pytest.raises(InputError, match="DICOM|series"):
        remote.predict_series(tmp_path)  # an empty folder
