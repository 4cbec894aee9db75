"""ASCEND_RT_VISIBLE_DEVICES, CANN's CUDA_VISIBLE_DEVICES: it narrows the chips a process
sees and renumbers them, so a device id is an index into its list.

No Ascend chip is here. The chips are ``davinciN`` entries of a folder standing in for
``/dev`` (ibnedge only lists their names); the variable is set for real in a child process.
Where this machine lets a test make a private mount namespace (root), ``ibnedge`` itself
runs with such a ``/dev`` (a tmpfs holding the chips and ``/dev/null``), and its doctor and
infer commands are checked end to end; elsewhere those tests skip.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

from edge_helpers import make_tiny_onnx, run_in_mount_namespace, subprocess_env

PY = Path(sys.executable)
ENV = "ASCEND_RT_VISIBLE_DEVICES"
_NO_TOOLKIT = {"ASCEND_HOME_PATH": "", "ASCEND_TOOLKIT_HOME": ""}


@pytest.fixture
def four_chips(tmp_path):
    """A /dev as an Atlas 300I card's driver makes it: davinci0..3 (and what is not a chip)."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("davinci0", "davinci1", "davinci2", "davinci3", "davinci_manager", "null"):
        (dev / name).write_bytes(b"")
    return dev


def _child(code: str, visible: object, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a child process whose environment has ASCEND_RT_VISIBLE_DEVICES=``visible``
    (None: unset)."""
    env = dict(_NO_TOOLKIT)
    if visible is not None:
        env[ENV] = str(visible)
    full = subprocess_env(env)
    if visible is None:
        full.pop(ENV, None)
    return subprocess.run([str(PY), "-c", code] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=full, cwd="/")


_PROBE = "import json, sys; from ibnedge.ascend_box import probe; b = probe(dev_dir=sys.argv[1]); " \
         "print(json.dumps([b.chips, b.visible_problem]))"


@pytest.mark.parametrize("visible, chips, problem", [
    (None, [0, 1, 2, 3], ""),
    ("", [0, 1, 2, 3], ""),
    ("2,3", [2, 3], ""),
    ("3", [3], ""),
    # CANN reads up to the first entry that is not a number: the space before 2 ends it
    ("1, 2,3", [1], "ASCEND_RT_VISIBLE_DEVICES=1, 2,3 is read only up to 1: ' 2' is not a chip number "
                    "(only digits and commas are read)"),
    # ... or not a chip of the box
    ("1,3,8", [1, 3], "ASCEND_RT_VISIBLE_DEVICES=1,3,8 is read only up to 1,3: this box has no chip 8 (/dev/davinci8)"),
    ("3,1", [3], "ASCEND_RT_VISIBLE_DEVICES=3,1 is read only up to 3: chip 1 does not come after chip 3 "
                 "(CANN takes ascending ids only)"),
    # a newline is not a digit either (a regex $ would have let "3\n" through)
    ("1,3\n", [1], "ASCEND_RT_VISIBLE_DEVICES=1,3\n is read only up to 1: '3\\n' is not a chip number "
                   "(only digits and commas are read)"),
    ("x", [], "ASCEND_RT_VISIBLE_DEVICES=x is read only up to nothing (no chip is visible): 'x' is not a chip "
              "number (only digits and commas are read)"),
])
def test_the_visible_chips_are_those_cann_reads_from_the_variable_in_its_order(four_chips, visible, chips, problem):
    proc = _child(_PROBE, visible, str(four_chips))
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == [chips, problem]


_CHECK = "import sys; from ibnedge.ascend_box import check_device_ids, DeviceIdError\n" \
         "try:\n    check_device_ids([int(i) for i in sys.argv[2].split(',')], dev_dir=sys.argv[1])\n" \
         "except DeviceIdError as exc:\n    print(exc)\nelse:\n    print('ok')"


@pytest.mark.parametrize("visible, ids, answer", [
    ("2,3", "0,1", "ok"),
    ("2,3", "2", "no Ascend chip has device id 2 in this process: its device ids are 0 (davinci2), 1 (davinci3) "
                 "(ASCEND_RT_VISIBLE_DEVICES=2,3: ids are indexes into that list)"),
    (None, "3", "ok"),
    (None, "1,4", "no Ascend chip has device id 4 in this process: its device ids are 0 (davinci0), 1 (davinci1), "
                  "2 (davinci2), 3 (davinci3)"),
    ("1, 2", "1", "no Ascend chip has device id 1 in this process: its device ids are 0 (davinci1) "
                  "(ASCEND_RT_VISIBLE_DEVICES=1, 2: ids are indexes into that list); ASCEND_RT_VISIBLE_DEVICES=1, 2 "
                  "is read only up to 1: ' 2' is not a chip number (only digits and commas are read)"),
])
def test_device_ids_are_indexes_into_the_visible_chips(four_chips, visible, ids, answer):
    proc = _child(_CHECK, visible, str(four_chips), ids)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == answer


def test_a_containers_logical_ids_are_not_refused_for_the_hosts_node_numbers(tmp_path):
    """A container given the host's /dev/davinci3 only numbers it 0: ASCEND_RT_VISIBLE_DEVICES=0
    with --device-id 0 is the runtime's to judge, not refused for want of a /dev/davinci0; the
    count still bounds the ids (one node, one entry)."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "davinci3").write_bytes(b"")
    assert _child(_CHECK, "0", str(dev), "0").stdout.decode().strip() == "ok"
    assert _child(_CHECK, "0", str(dev), "1").stdout.decode().strip().startswith(
        "no Ascend chip has device id 1 in this process: its device ids are 0 (davinci0)")
    assert _child(_CHECK, "0,1", str(dev), "1").stdout.decode().strip().startswith(
        "no Ascend chip has device id 1 in this process")  # one node: one chip, whatever the list says


def test_without_chip_nodes_device_ids_are_left_to_the_runtime(tmp_path):
    """No /dev/davinciN (a container not given the chips): nothing to count, nothing refused."""
    proc = _child(_CHECK, "2,3", str(tmp_path), "5")
    assert proc.returncode == 0 and proc.stdout.decode().strip() == "ok", proc.stderr.decode()


# ----------------------------------------------------------------------------- ibnedge with such a /dev


_FAKE_DEV = ('mount -t tmpfs ibnedge-test-dev /dev && mknod -m 666 /dev/null c 1 3 '
             '&& for c in $IBNEDGE_TEST_CHIPS; do : > /dev/davinci$c; done')


def _with_chips(chips: Sequence[int], argv: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    """``argv`` in a private mount namespace whose /dev holds davinci<chip> for each chip."""
    return run_in_mount_namespace(_FAKE_DEV, argv, dict(env, IBNEDGE_TEST_CHIPS=" ".join(map(str, chips))))


def test_doctor_names_each_chip_with_the_device_id_it_has_in_this_process():
    env = dict(_NO_TOOLKIT, **{ENV: "1,3"})
    proc = _with_chips([0, 1, 2, 3], [str(PY), "-m", "ibnedge", "doctor", "--json"], env)
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert report["facts"]["ascend"]["chips"] == [1, 3]
    assert "chips visible: davinci1 as --device-id 0, davinci3 as --device-id 1 (ASCEND_RT_VISIBLE_DEVICES=1,3: " \
           "device ids are indexes into its list)" in [f["detail"] for f in report["findings"]]
    # A list CANN reads only in part is a problem where the chips are needed.
    proc = _with_chips([0, 1, 2, 3], [str(PY), "-m", "ibnedge", "doctor", "--device", "ascend"], dict(env, **{ENV: "1, 3"}))
    line = [ln for ln in proc.stdout.decode().splitlines() if "is read only up to" in ln]
    assert proc.returncode == 1 and len(line) == 1, proc.stdout.decode()
    assert line[0].split()[0] == "problem" and "ASCEND_RT_VISIBLE_DEVICES=1, 3 is read only up to 1: ' 3'" in line[0]
    assert line[0].endswith("-- fix: list chip numbers in ascending order, separated by commas only")
    # A container given the host's davinci3, which CANN numbers 0: a note, not a problem.
    proc = _with_chips([3], [str(PY), "-m", "ibnedge", "doctor", "--device", "ascend"], dict(env, **{ENV: "0"}))
    line = [ln for ln in proc.stdout.decode().splitlines() if "is read only up to" in ln]
    assert len(line) == 1 and line[0].split()[0] == "note", proc.stdout.decode()
    assert line[0].endswith("this box has no chip 0 (/dev/davinci0) (unless this is a container whose chips CANN "
                            "numbers from 0, not as the host's /dev/davinciN)")
    # A list that hides every chip: the variable is the problem, not the driver.
    proc = _with_chips([0, 1, 2, 3], [str(PY), "-m", "ibnedge", "doctor", "--device", "ascend"], dict(env, **{ENV: "8"}))
    out = proc.stdout.decode()
    assert "ASCEND_RT_VISIBLE_DEVICES=8 is read only up to nothing (no chip is visible)" in out, out
    assert "no Ascend chip visible" not in out and "load the driver" not in out, out


def test_infer_refuses_a_device_id_beyond_the_visible_chips_before_loading(tmp_path):
    model = make_tiny_onnx(tmp_path / "net.onnx")
    image = tmp_path / "missing.jpg"  # never read: the device ids are checked first
    argv = [str(PY), "-m", "ibnedge", "infer", str(image), "--model", str(model), "--device", "ascend",
            "--device-id", "0,2"]
    proc = _with_chips([0, 1, 2, 3], argv, dict(_NO_TOOLKIT, **{ENV: "2,3"}))
    assert proc.returncode == 2, proc.stderr.decode()
    assert proc.stderr.decode().strip().splitlines()[-1] == (
        "ibnedge infer: error: no Ascend chip has device id 2 in this process: its device ids are 0 (davinci2), "
        "1 (davinci3) (ASCEND_RT_VISIBLE_DEVICES=2,3: ids are indexes into that list)")

