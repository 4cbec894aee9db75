"""``ibnedge doctor`` for real on this (CPU-only) box, and against a fake Ascend install:
a toolkit folder laid out as CANN's installer lays it out, but missing its driver, and an
``npu-smi`` script naming a chip."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import pytest

from edge_helpers import PY37, PY311, have, make_tiny_onnx, run_py

PY = Path(sys.executable)


def _doctor(*args, **kw):
    proc = run_py(PY, ["-m", "ibnedge", "doctor"] + [str(a) for a in args], **kw)
    return proc, proc.stdout.decode(), proc.stderr.decode()


def _no_ascend():
    """This process's environment without any Ascend toolkit variable."""
    return {"ASCEND_HOME_PATH": "", "ASCEND_TOOLKIT_HOME": "", "ASCEND_RT_VISIBLE_DEVICES": ""}


def test_doctor_on_this_cpu_box(tmp_path):
    proc, out, err = _doctor("--json", env=_no_ascend())
    assert proc.returncode == 0, out + err
    report = json.loads(out)
    assert report["ok"] is True and report["device"] == "cpu"
    areas = {f["area"] for f in report["findings"]}
    assert {"python", "engine", "lite", "onnxruntime", "mindspore", "ascend"} <= areas
    assert report["facts"]["python"]["version"] == platform.python_version()
    assert report["facts"]["engine"]["simd_path"] in ("avx2", "neon", "scalar")
    assert report["facts"]["ascend"]["toolkit"] is None and report["facts"]["ascend"]["chips"] == []
    assert all(f["status"] != "problem" for f in report["findings"])
    if have("mindspore_lite"):
        lite = report["facts"]["lite"]
        assert lite["features"]["version"].startswith("2.")
        assert lite["features"]["converter_config_file"] is True
        if lite["features"]["version"] == "2.0.0":  # the 2.0 API: no provider / rank_id / dec_key yet
            assert not lite["features"]["ascend_provider"] and not lite["features"]["encrypted_models"]
        # The PyPI wheel carries the Ascend plugin, which cannot load without CANN's libraries.
        ascend = [p for p in lite["plugins"].values() if p["device"] == "ascend" and "kernel" in p["what"].lower()]
        assert ascend and all("libgraph.so" in p["loads"] or p["loads"] == "" for p in ascend)
    if have("onnxruntime"):
        assert "CPUExecutionProvider" in report["facts"]["onnxruntime"]["providers"]
    # The text form: one line per finding, a summary, the same verdict.
    proc, out, _ = _doctor(env=_no_ascend())
    assert proc.returncode == 0 and out.strip().splitlines()[-1] == "0 problems: this box can run on cpu"


@pytest.fixture
def fake_toolkit(tmp_path):
    """CANN's layout under tmp/Ascend: a toolkit with its install info and atc, no driver."""
    root = tmp_path / "Ascend"
    toolkit = root / "ascend-toolkit" / "latest"
    info = toolkit / ("%s-linux" % platform.machine()) / "ascend_toolkit_install.info"
    info.parent.mkdir(parents=True)
    info.write_text("package_name=Ascend-cann-toolkit\nversion=7.0.0\narch=%s\n" % platform.machine())
    atc = toolkit / "compiler" / "bin" / "atc"
    atc.parent.mkdir(parents=True)
    atc.write_text("#!/bin/sh\nexit 0\n")
    atc.chmod(0o755)
    return root, toolkit


def _with_npu_smi(tmp_path, script, toolkit=None):
    """The environment of a box whose PATH has an ``npu-smi`` running ``script`` (sh)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "npu-smi"
    smi.write_text("#!/bin/sh\n%s\n" % script)
    smi.chmod(0o755)
    env = dict(_no_ascend(), PATH="%s:%s" % (bin_dir, os.environ["PATH"]))
    if toolkit is not None:
        env["ASCEND_HOME_PATH"] = str(toolkit)
    return env


def _configured_for_ascend(tmp_path, env, batch):
    """The tiny model's Ascend configuration and metadata (``--config-only``): its output path."""
    onnx_path = make_tiny_onnx(tmp_path / "net.onnx")
    proc = run_py(PY, ["-m", "ibnedge", "convert", str(onnx_path), "--to", "lite", "--device", "ascend", "--batch",
                       batch, "--config-only"], env=env)
    assert proc.returncode == 2, proc.stderr.decode()
    return tmp_path / "net_lite.mindir"


def test_fake_toolkit_missing_its_driver_fails_ascend(fake_toolkit):
    root, toolkit = fake_toolkit
    env = dict(_no_ascend(), ASCEND_HOME_PATH=str(toolkit))
    proc, out, err = _doctor("--device", "ascend", env=env)
    assert proc.returncode == 1, out + err
    lines = out.strip().splitlines()
    driver = [l for l in lines if "no driver" in l]
    assert len(driver) == 1 and "problem" in driver[0]
    assert str(root / "driver" / "version.info") in driver[0] and "-- fix: install the Ascend driver" in driver[0]
    assert any("toolkit 7.0.0 at %s (from $ASCEND_HOME_PATH)" % toolkit in l for l in lines)
    assert any(l.split()[0] == "problem" and "no Ascend chip visible" in l for l in lines)
    assert lines[-1].endswith("problems: this box cannot run on ascend")
    # Every problem line carries its fix.
    assert all("-- fix: " in l for l in lines if l.split()[0] == "problem")
    # The same box checked for the CPU: the Ascend findings are notes, not problems.
    proc, out, _ = _doctor("--json", env=env)
    report = json.loads(out)
    assert proc.returncode == 0 and report["facts"]["ascend"]["toolkit_version"] == "7.0.0"
    assert [f["status"] for f in report["findings"] if "no driver" in f["detail"]] == ["note"]


def test_driver_chips_and_a_soc_mismatch(fake_toolkit, tmp_path):
    root, toolkit = fake_toolkit
    (root / "driver").mkdir()
    (root / "driver" / "version.info").write_text("Version=23.0.rc3\n")
    env = _with_npu_smi(tmp_path, "echo '| 0     310P3     | OK  | 12.8  45  |'\necho '| 1     310P3     | OK  | 12.1  44  |'",
                        toolkit)
    proc, out, err = _doctor("--json", "--model", _configured_for_ascend(tmp_path, env, "1,8"), env=env)
    report = json.loads(out)
    assert report["device"] == "ascend"  # the model's deployment says so
    assert report["facts"]["ascend"]["driver_version"] == "23.0.rc3"
    assert report["facts"]["ascend"]["chip_names"] == ["310P3", "310P3"] and report["facts"]["ascend"]["soc"] == "Ascend310P"
    problems = [f for f in report["findings"] if f["status"] == "problem"]
    mismatch = [f for f in problems if "converted for Ascend310 but this box's chip is Ascend310P" in f["detail"]]
    assert mismatch and mismatch[0]["fix"] == "convert it again with --soc Ascend310P"
    assert any("does not exist" in f["detail"] for f in problems)  # only the configuration was written
    assert proc.returncode == 1


def test_model_metadata_profiles_and_backends(tmp_path):
    onnx_path = make_tiny_onnx(tmp_path / "net.onnx")
    model = onnx_path
    if have("mindspore_lite"):
        from ibnedge.convert import convert_to_lite

        model = convert_to_lite(onnx_path, batch_sizes=[1, 8])
    proc, out, err = _doctor("--json", "--model", model, env=_no_ascend())
    report = json.loads(out)
    assert proc.returncode == (0 if have("mindspore_lite") or have("onnxruntime") else 1), out + err
    details = [f["detail"] for f in report["findings"] if f["area"] == "model"]
    assert details[0].startswith("tiny_conv, 10 classes")
    if have("mindspore_lite"):
        assert "converted for cpu, batch profiles [1, 8], precision fp32" in details
        assert "lite loads it on cpu (batch sizes [1, 8])" in details
        assert report["facts"]["model"]["backends"] == {"lite": ""}
    proc, out, _ = _doctor("--model", tmp_path / "missing.mindir", env=_no_ascend())
    assert proc.returncode == 1 and "problem  model        %s does not exist" % (tmp_path / "missing.mindir") in out


def test_a_toolkit_variable_naming_no_folder_is_a_problem_not_a_toolkit(tmp_path):
    """ASCEND_HOME_PATH left pointing at a removed install: before, the doctor reported an
    ok toolkit "(version unknown)" there, and convert blamed a missing atc."""
    gone = tmp_path / "Ascend" / "ascend-toolkit" / "7.0"
    env = dict(_no_ascend(), ASCEND_HOME_PATH=str(gone))
    proc, out, err = _doctor("--device", "ascend", env=env)
    assert proc.returncode == 1, out + err
    line = [l for l in out.splitlines() if l.split()[1:2] == ["ascend"] and "toolkit" in l][0]
    assert line.split()[0] == "problem" and "ASCEND_HOME_PATH=%s is not a folder" % gone in line
    assert "-- fix: source the set_env.sh of the installed CANN toolkit, or unset ASCEND_HOME_PATH" in line
    proc, out, _ = _doctor("--json", env=env)
    report = json.loads(out)
    assert proc.returncode == 0 and report["facts"]["ascend"]["toolkit"] is None
    assert report["facts"]["ascend"]["toolkit_problem"] == "ASCEND_HOME_PATH=%s is not a folder" % gone
    onnx_path = make_tiny_onnx(tmp_path / "net.onnx")
    proc = run_py(PY, ["-m", "ibnedge", "convert", str(onnx_path), "--to", "lite", "--device", "ascend", "--batch",
                       "8"], env=env)
    assert proc.returncode == 2 and "no Ascend toolkit here (ASCEND_HOME_PATH=%s is not a folder)" % gone \
        in proc.stderr.decode()


def test_a_driver_version_file_that_cannot_be_read_is_not_called_missing(fake_toolkit):
    root, toolkit = fake_toolkit
    (root / "driver" / "version.info").mkdir(parents=True)  # unreadable as a file, even for root
    env = dict(_no_ascend(), ASCEND_HOME_PATH=str(toolkit))
    proc, out, err = _doctor("--device", "ascend", env=env)
    line = [l for l in out.splitlines() if "no driver" in l][0]
    assert "%s cannot be read (Is a directory)" % (root / "driver" / "version.info") in line, line
    assert "-- fix: let this user read it" in line and proc.returncode == 1


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_an_npu_smi_printing_without_end_is_cut_off(tmp_path):
    """A broken npu-smi writing garbage for ever: before, the doctor read it all into memory
    (2 GiB in 9 s here) until its 20 s timeout, and died of MemoryError under a 3 GiB limit."""
    env = _with_npu_smi(tmp_path, "exec yes '| 0  310 \\377\\000 garbage'")
    proc, out, err = _doctor("--json", env=env, preexec_fn=_limit_memory, timeout=120)
    assert proc.returncode == 0, err[-2000:]
    facts = json.loads(out)["facts"]["ascend"]
    assert facts["npu_smi_error"] == "more than 1048576 bytes of output" and facts["chip_names"] == []
    assert [f["status"] for f in json.loads(out)["findings"] if "npu-smi" in f["detail"]] == ["note"]


def _running(pid):
    """Whether ``pid`` runs (a killed child that nobody reaped yet is a zombie, not running)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hanging_tool_is_stopped_with_what_it_started(tmp_path):
    """npu-smi on a wedged driver hangs: stopped after the timeout, and so is the child it
    started (before, subprocess.run's timeout killed the script and left its child running)."""
    from ibnedge.ascend_box import run_bounded

    pid_file = tmp_path / "child.pid"
    script = "sleep 60 & echo $! > %s; echo started; wait" % pid_file
    status, output, problem = run_bounded(["/bin/sh", "-c", script], 1.0, 1 << 20)
    assert (status, output, problem) == (None, b"started\n", "no answer within 1 s")
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)
    assert run_bounded(["/bin/sh", "-c", "echo ok; exit 3"], 5.0, 100) == (3, b"ok\n", "")
    assert run_bounded(["/bin/sh", "-c", "head -c 500 /dev/zero"], 5.0, 100)[1:] == (b"\0" * 101, "more than 100 bytes of output")
    assert run_bounded([str(tmp_path / "absent")], 5.0, 100)[2].startswith("cannot run %s (" % (tmp_path / "absent"))


def test_chip_names_map_to_soc_choices_and_a_310b_is_not_a_310():
    from ibnedge.ascend_config import soc_of_chip

    assert [soc_of_chip(n) for n in ("310", "310P3", "310P1", "910", "910A")] == \
        ["Ascend310", "Ascend310P", "Ascend310P", "Ascend910", "Ascend910"]
    assert [soc_of_chip(n) for n in ("310B1", "310B4", "910B", "910B3", "")] == ["", "", "", "", ""]


def test_a_model_for_the_310_on_a_310b_box_is_a_soc_problem(fake_toolkit, tmp_path):
    """Atlas 200I A2 carries a 310B (another SoC, CANN's Ascend310B1): before, its npu-smi name
    "310B1" counted as an Ascend310 and a model converted for the 310 passed the check."""
    root, toolkit = fake_toolkit
    env = _with_npu_smi(tmp_path, "echo '| 0     310B1     | OK  | 12.8  45  |'", toolkit)
    proc, out, err = _doctor("--json", "--model", _configured_for_ascend(tmp_path, env, "8"), env=env)
    report = json.loads(out)
    assert report["facts"]["ascend"]["chip_names"] == ["310B1"] and report["facts"]["ascend"]["soc"] == ""
    soc = [f for f in report["findings"] if "none of the SoCs" in f["detail"]]
    assert len(soc) == 1 and soc[0]["status"] == "problem", report["findings"]
    assert soc[0]["detail"] == ("this box's chip 310B1 is none of the SoCs ibnedge converts for (--soc Ascend310, "
                                "Ascend310P, Ascend910); the model was converted for Ascend310")
    proc, out, _ = _doctor("--json", env=env)  # no model: worth a note only
    assert [f["status"] for f in json.loads(out)["findings"] if "none of the SoCs" in f["detail"]] == ["note"]



def _shape(value, depth=2):
    """The keys of a JSON value, ``depth`` levels down (what a script indexes)."""
    if isinstance(value, dict) and depth:
        return {k: _shape(v, depth - 1) for k, v in value.items()}
    return "value"


def test_json_has_the_same_keys_on_every_box(tmp_path):
    """Scripts index the JSON: a runtime that is absent keeps its section (installed: false).
    Before, Python 3.7's box (Lite, no MindSpore) and 3.11's (MindSpore, no Lite) gave
    reports with different keys. The two interpreters here are two such boxes."""
    pythons = [p for p in (PY37, PY311) if p.is_file()] or [PY]
    missing = tmp_path / "absent.mindir"
    shapes = []
    for python in pythons:
        for args in (["doctor", "--json"], ["doctor", "--json", "--model", str(missing)]):
            proc = run_py(python, ["-m", "ibnedge"] + args, env=_no_ascend())
            report = json.loads(proc.stdout.decode())
            assert report["schema"] == 1 and proc.returncode == (1 if "--model" in args else 0)
            assert all(sorted(f) == ["area", "detail", "fix", "status"] for f in report["findings"])
            facts = report["facts"]
            assert sorted(facts) == ["ascend", "engine", "lite", "mindspore", "model", "onnxruntime", "python"]
            assert isinstance(facts["lite"]["installed"], bool) and isinstance(facts["mindspore"]["installed"], bool)
            shapes.append((args[-1] == str(missing), _shape({k: v for k, v in facts.items() if k != "lite"}),
                           sorted(facts["lite"])))
    assert facts["model"] == {"path": str(missing), "exists": False, "metadata": None, "backends": {}}
    for with_model in (False, True):
        assert len(set(json.dumps(s[1:], sort_keys=True) for s in shapes if s[0] == with_model)) == 1
