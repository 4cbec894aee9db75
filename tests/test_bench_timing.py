"""The preprocessing benchmark's timing loop (ibnedge.bench.preprocess): every pipeline is
timed on every file, each timed call right after an untimed call of the same pipeline on
the previous file (so each is timed warm, as in a loop over images), in an order that
changes from file to file (so no pipeline always follows the same one)."""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Tuple

from ibnedge.bench.preprocess import Pipeline, time_per_image_clocks


def _recording_pipelines(names: List[str], calls: List[Tuple[str, bytes]]) -> "OrderedDict[str, Pipeline]":
    def make(name: str):
        return lambda data: calls.append((name, data))

    return OrderedDict((n, Pipeline(n, n, make(n))) for n in names)


def _timed_calls(names: List[str], datas: List[bytes], repeats: int) -> List[Tuple[str, bytes]]:
    calls = []  # type: List[Tuple[str, bytes]]
    wall, cpu = time_per_image_clocks(datas, _recording_pipelines(names, calls), repeats=repeats)
    assert set(wall) == set(cpu) == set(names) and all(len(v) == len(datas) for v in wall.values())
    return calls[len(names):]  # after the first-call warm-up of each pipeline


def test_each_timed_call_follows_a_call_of_the_same_pipeline_on_the_previous_file():
    names, datas = ["a", "b", "c", "d"], [b"0", b"1", b"2"]
    calls = _timed_calls(names, datas, repeats=2)
    assert len(calls) == 2 * len(names) * len(datas) * 2
    for k in range(0, len(calls), 2):
        (warm_name, warm_data), (name, data) = calls[k], calls[k + 1]
        assert warm_name == name
        assert warm_data == datas[datas.index(data) - 1]


def test_the_order_of_pipelines_changes_from_file_to_file_and_is_the_same_every_run():
    names, datas = ["a", "b", "c", "d", "e"], [bytes([i]) for i in range(6)]
    calls = _timed_calls(names, datas, repeats=2)
    timed = [name for name, _ in calls[1::2]]
    orders = [tuple(timed[k:k + len(names)]) for k in range(0, len(timed), len(names))]
    assert all(sorted(o) == names for o in orders)
    assert len(set(orders)) > len(orders) // 2, orders
    followers = {(o[i], o[i + 1]) for o in orders for i in range(len(o) - 1)}
    assert len(followers) > len(names), "pipelines always follow the same ones: %r" % sorted(followers)
    assert [name for name, _ in _timed_calls(names, datas, repeats=2)[1::2]] == timed


def test_the_same_library_floor_is_a_full_decode_equal_to_simplejpegs(imagenet_files):
    """The floor through the system's libturbojpeg (the engine's own libjpeg-turbo build)
    decodes every pixel, as the simplejpeg floor does: same pixels, same shape."""
    import numpy as np
    import simplejpeg

    from ibnedge.bench.preprocess import FLOOR_SYSTEM, make_pipelines, system_turbojpeg_decode

    decode = system_turbojpeg_decode()
    assert decode is not None, "libturbojpeg is missing: install libturbojpeg0 (make sysdeps does)"
    for path in imagenet_files[:4]:
        data = path.read_bytes()
        assert np.array_equal(decode(data), simplejpeg.decode_jpeg(data, colorspace="RGB")), path.name
    assert FLOOR_SYSTEM in make_pipelines(include=[FLOOR_SYSTEM])


def test_the_same_library_floor_names_the_fault_of_a_bad_file():
    import pytest

    from ibnedge.bench.preprocess import system_turbojpeg_decode

    with pytest.raises(RuntimeError, match="libturbojpeg: "):
        system_turbojpeg_decode()(b"\xff\xd8\xff\xe0 not a jpeg")
