"""The oneDNN ISA cap (``ibnedge.cpu_isa``): on CPU, ``train``, ``train.bench`` and the
``mindspore`` backend run MindSpore with ``ONEDNN_MAX_CPU_ISA=AVX2`` unless the user set it or
``DNNL_MAX_CPU_ISA``. Checked in real child processes, twice over: what the entry point left
in its own environment (read back as that process exits) and what oneDNN itself says it uses
(``ONEDNN_VERBOSE=profile_create`` prints the ISA once, when the first kernel is created).
The user's cap here is SSE4.1, which oneDNN reports as such on every x86-64 CPU.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from edge_helpers import REPO, have, subprocess_env
from ibnedge.cpu_isa import DEFAULT_CPU_ISA_CAP, ISA_VARIABLES, apply_default_cpu_isa_cap
from train_helpers import last_json, make_image_folder, module_then_command, run_module

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="the caps are x86-64 ISA names")
needs_ms = pytest.mark.skipif(not have("mindspore"), reason="the cap is for MindSpore's CPU kernels (Python 3.9+)")

USER_CAP, USER_ISA = "SSE41", "Intel SSE4.1"
ONEDNN_NAMES = {"AVX2": "Intel AVX2", USER_CAP: USER_ISA}  # oneDNN's names in its verbose output
REPORT_ENVIRONMENT = """
import json, os, sys
print("ISA_ENV " + json.dumps({name: os.environ.get(name) for name in %r}), file=sys.stderr)
""" % (ISA_VARIABLES,)

# user's environment -> the environment the entry point runs MindSpore with
CASES = {
    "default": ({}, {"ONEDNN_MAX_CPU_ISA": DEFAULT_CPU_ISA_CAP, "DNNL_MAX_CPU_ISA": None}),
    "user ONEDNN_MAX_CPU_ISA": ({"ONEDNN_MAX_CPU_ISA": USER_CAP},
                                {"ONEDNN_MAX_CPU_ISA": USER_CAP, "DNNL_MAX_CPU_ISA": None}),
    "user DNNL_MAX_CPU_ISA": ({"DNNL_MAX_CPU_ISA": USER_CAP},
                              {"ONEDNN_MAX_CPU_ISA": None, "DNNL_MAX_CPU_ISA": USER_CAP}),
}


def run_reporting(module: str, args: Sequence[str],
                  user_env: Dict[str, str]) -> Tuple[Dict[str, Optional[str]], List[str]]:
    """``python -m module args`` with only ``user_env``'s ISA variables set: (its ISA variables
    as it exits, oneDNN's ``isa:`` lines)."""
    env = subprocess_env({"ONEDNN_VERBOSE": "profile_create"})
    for name in ISA_VARIABLES:
        env.pop(name, None)
    env.update(user_env)
    proc = subprocess.run(module_then_command(module, args, REPORT_ENVIRONMENT), cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    reported = [line[len("ISA_ENV "):] for line in proc.stderr.splitlines() if line.startswith("ISA_ENV ")]
    isa = [line.split(",isa:", 1)[1] for line in (proc.stdout + proc.stderr).splitlines() if ",info,cpu,isa:" in line]
    return json.loads(reported[-1]), isa


def expected_isa(env_after: Dict[str, Optional[str]]) -> str:
    return ONEDNN_NAMES[next(v for v in env_after.values() if v)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("photos"), per_class=2, size=48, corrupt=False)


@needs_ms
@pytest.mark.parametrize("case", sorted(CASES))
def test_training_on_cpu_caps_onednn_unless_the_user_chose(case, photos, tmp_path):
    user_env, env_after = CASES[case]
    reported, isa = run_reporting("train", [
        "--train-dir", photos, "--arch", "resnet_ibn_a_tiny", "--image-size", "32", "--resize", "36", "--device",
        "CPU", "--batch-size", "6", "--epochs", "1", "--max-steps", "1", "--workers", "1",
        "--output-dir", tmp_path / "run"], user_env)
    assert reported == env_after
    assert isa == [expected_isa(env_after)]


@pytest.fixture(scope="module")
def tiny_mindir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.mindir"
    run_module("train.export", ["--arch", "resnet_ibn_a_tiny", "--device", "CPU", "--image-size", "32",
                                "--output", path])
    return path


@needs_ms
@pytest.mark.parametrize("case", ["default", "user ONEDNN_MAX_CPU_ISA"])
def test_mindspore_backend_on_cpu_caps_onednn_unless_the_user_chose(case, tiny_mindir, photos):
    user_env, env_after = CASES[case]
    reported, isa = run_reporting("ibnedge", ["infer", photos, "--model", tiny_mindir, "--backend", "mindspore",
                                              "--device", "cpu", "--quiet"], user_env)
    assert reported == env_after
    assert isa == [expected_isa(env_after)]


@needs_ms
def test_bench_records_the_cap_of_each_mindspore_worker(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_module("train.bench", ["--arch", "resnet_ibn_a_tiny", "--size", "32", "--steps", "2", "--parts",
                                      "mindspore", "--compare-isa", USER_CAP, "--json-out", out])
    result = json.loads(out.read_text())
    assert result == last_json(proc.stdout)
    default, capped = result["mindspore"], result["mindspore@%s" % USER_CAP]
    assert (default["onednn_max_cpu_isa"], capped["onednn_max_cpu_isa"]) == (DEFAULT_CPU_ISA_CAP, USER_CAP)
    assert "oneDNN ISA cap: %s" % DEFAULT_CPU_ISA_CAP in proc.stdout
    ratios = [m / c for m, c in zip(default["step_s"], capped["step_s"])]  # speed relative to the default
    assert capped["vs_mindspore_per_round"] == pytest.approx(ratios)
    assert result["mindspore@%s_vs_mindspore" % USER_CAP] == pytest.approx(statistics.median(ratios))
    refused = run_module("train.bench", ["--parts", "torch", "--compare-isa", "ALL"], check=False)
    assert refused.returncode == 2 and "--compare-isa compares against the mindspore part" in refused.stdout


@needs_ms
@pytest.mark.parametrize("flags, named", [
    (["--parts", "mindspore", "--compare-isa", "%s,ALL,%s" % (USER_CAP, USER_CAP)], "--compare-isa names %s" % USER_CAP),
    (["--parts", "mindspore,mindspore"], "--parts names mindspore"),
])
def test_bench_refuses_a_worker_named_twice(flags, named):
    """A worker's steps are kept under its name: one named twice mixed two workers' steps in
    one list (2 x --steps of them), each round's ratio then paired with another round's step."""
    proc = run_module("train.bench", ["--arch", "resnet_ibn_a_tiny", "--size", "32", "--steps", "2"] + flags,
                      check=False)
    assert proc.returncode == 2 and "%s more than once" % named in proc.stdout, proc.stdout[-2000:]
    assert "timing" not in proc.stdout  # refused before any worker started


def test_the_default_never_replaces_a_value_the_user_set(monkeypatch):
    for name in ISA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert apply_default_cpu_isa_cap() == DEFAULT_CPU_ISA_CAP
    monkeypatch.setenv(ISA_VARIABLES[0], "")  # set, if empty: oneDNN then uses every ISA, and so do we
    assert apply_default_cpu_isa_cap() is None
    monkeypatch.delenv(ISA_VARIABLES[0])
    monkeypatch.setenv(ISA_VARIABLES[1], "ALL")
    assert apply_default_cpu_isa_cap() == "ALL"
    assert ISA_VARIABLES[0] not in os.environ
