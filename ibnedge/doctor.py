"""``ibnedge doctor``: can this box run the model? One finding per component, each problem
on one line with its fix.

Checks, in order: Python; ibnedge and its native engine (the resize kernel's SIMD path,
the libjpeg-turbo it was built against, partial decode); each runtime (MindSpore Lite:
version, Python-API features, which device plugins load; ONNX Runtime and its
providers; MindSpore); the Ascend stack (:mod:`ibnedge.ascend_box`: toolkit, driver,
``npu-smi``, visible chips); and for a model: its metadata, batch profiles, and whether
each backend loads it on the device. A finding is a *problem* only when it stops the
device being checked (``--device``, else the model's, else cpu): a missing Ascend driver
is a problem for ``--device ascend`` and a note on a CPU box.
"""
from __future__ import annotations

import fnmatch
import glob
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

OK, NOTE, PROBLEM = "ok", "note", "problem"
# ``--json``: {"schema", "ok", "device", "model", "findings": [{"area", "status", "detail",
# "fix"}], "facts"}; "facts" holds every section below on every box, a runtime that is absent
# as {"installed": false, ...} and "model" as null without --model, so that scripts read keys
# rather than test for them. The number changes when a key changes meaning or goes away.
JSON_SCHEMA = 1

# Lite plugins per device: (file name pattern, what it is). A plugin that does not load
# (its CANN / CUDA libraries missing) means Lite cannot use that device.
LITE_PLUGINS = {
    "ascend": [("libascend_kernel_plugin*.so", "Ascend ACL kernels"), ("libmsplugin-ge-litert*.so", "Ascend GE provider")],
    "gpu": [("libtensorrt_plugin*.so", "TensorRT")],
}
# Of those, the one a device needs (the 310 runs through ACL; GE serves 310P/910 in 2.2+).
_REQUIRED_PLUGIN = {"ascend": "libascend_kernel_plugin*.so", "gpu": "libtensorrt_plugin*.so"}


_FACT_SECTIONS = ("python", "engine", "lite", "onnxruntime", "mindspore", "ascend", "model")


@dataclass
class Finding:
    area: str
    status: str  # OK, NOTE or PROBLEM
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = "%-8s %-12s %s" % (self.status, self.area, self.detail)
        return text + (" -- fix: %s" % self.fix if self.fix else "")


@dataclass
class Report:
    device: str
    model: Optional[str]
    findings: List[Finding] = field(default_factory=list)
    facts: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.status == PROBLEM for f in self.findings)

    def add(self, area: str, status: str, detail: str, fix: str = "") -> None:
        self.findings.append(Finding(area, status, detail, fix))

    def to_dict(self) -> Dict[str, Any]:
        """The ``--json`` form (:data:`JSON_SCHEMA`)."""
        return {"schema": JSON_SCHEMA, "ok": self.ok, "device": self.device, "model": self.model,
                "findings": [asdict(f) for f in self.findings], "facts": self.facts}


def diagnose(model: Optional[str] = None, device: Optional[str] = None,
             environ: Optional[Dict[str, str]] = None) -> Report:
    """Every check; ``device`` None means the model's deployment device, else cpu."""
    meta, meta_error = _model_metadata(model)
    if device is None:
        device = meta.deployment.device if meta is not None and meta.deployment is not None else "cpu"
    report = Report(device=device, model=model)
    report.facts.update((name, None) for name in _FACT_SECTIONS)
    _check_python(report)
    _check_engine(report)
    _check_lite(report)
    _check_onnxruntime(report)
    _check_mindspore(report)
    _check_ascend(report, meta, environ)
    if model is not None:
        _check_model(report, Path(model), meta, meta_error)
    return report


def format_report(report: Report) -> str:
    head = "ibnedge doctor: checking for device %s%s" % (report.device, ", model %s" % report.model if report.model else "")
    lines = [head] + ["  " + f.line() for f in report.findings]
    problems = [f for f in report.findings if f.status == PROBLEM]
    lines.append("%d problem%s: this box %s %s" % (
        len(problems), "" if len(problems) == 1 else "s", "can run" if report.ok else "cannot run",
        "the model" if report.model else "on %s" % report.device))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- checks


def _check_python(report: Report) -> None:
    report.facts["python"] = {"version": platform.python_version(), "implementation": platform.python_implementation(),
                              "machine": platform.machine(), "executable": sys.executable}
    report.add("python", OK, "%s %s on %s (%s)" % (platform.python_implementation(), platform.python_version(),
                                                  platform.machine(), sys.executable))


def _check_engine(report: Report) -> None:
    from . import __version__

    from .engine import REINSTALL, EngineUnavailable, load_native

    try:
        _native = load_native()
    except EngineUnavailable as exc:
        reason = exc.__cause__
        report.facts["engine"] = {"ibnedge": __version__, "loads": False, "error": str(reason), "simd_path": None,
                                  "jpeg": {}}
        report.add("engine", PROBLEM, "ibnedge %s: the native engine does not load (%s)" % (__version__, reason),
                   REINSTALL)
        return
    simd = _native.simd_path() if hasattr(_native, "simd_path") else "unknown"
    jpeg = _native.jpeg_library() if hasattr(_native, "jpeg_library") else {}
    report.facts["engine"] = {"ibnedge": __version__, "loads": True, "error": "", "simd_path": simd, "jpeg": jpeg}
    turbo = jpeg.get("turbo_version") or "not libjpeg-turbo"
    report.add("engine", OK, "ibnedge %s, resize kernel %s, libjpeg-turbo %s (libjpeg API %s), partial decode %s" % (
        __version__, simd, turbo, jpeg.get("api_version", "?"), "yes" if jpeg.get("partial_decode") else "no"))
    if simd == "scalar" and platform.machine() in ("x86_64", "AMD64"):
        report.add("engine", NOTE, "this x86 CPU has no AVX2 (or IBNEDGE_SIMD=off): preprocessing runs the "
                   "scalar kernel, with the same results, more slowly")


def _version(module: Any) -> str:
    return str(getattr(module, "__version__", "unknown"))


def _check_lite(report: Report) -> None:
    report.facts["lite"] = {"installed": False, "error": "", "features": {}, "plugins": {}}
    if importlib.util.find_spec("mindspore_lite") is None:
        status = PROBLEM if report.device == "ascend" else NOTE
        report.add("lite", status, "MindSpore Lite is not installed",
                   "install the Lite package for this device (PyPI: pip install mindspore-lite, 2.0.0 for CPython 3.7 "
                   "on x86_64, CPU; Ascend builds come from mindspore.cn)")
        return
    os.environ.setdefault("GLOG_v", "3")
    try:
        import mindspore_lite as mslite
        from .backends.lite import api_features

        features = api_features(mslite)
    except Exception as exc:  # a broken install fails in many ways; report it, do not crash the doctor
        report.facts["lite"].update(installed=True, error=" ".join(str(exc).split()))
        report.add("lite", PROBLEM, "mindspore_lite does not import (%s)" % " ".join(str(exc).split()),
                   "reinstall the Lite wheel for this Python (%s)" % platform.python_version())
        return
    report.facts["lite"] = {"installed": True, "error": "", "features": features, "plugins": {}}
    shown = ", ".join("%s %s" % (k, "yes" if v else "no") for k, v in features.items() if k != "version")
    report.add("lite", OK, "MindSpore Lite %s (%s)" % (features["version"], shown))
    _check_lite_plugins(report, Path(mslite.__file__).parent / "lib")


def _check_lite_plugins(report: Report, lib: Path) -> None:
    """Which of Lite's device plugins load, and whether the device checked needs one that does not."""
    found = [(dev, label, path) for dev, entries in LITE_PLUGINS.items() for pattern, label in entries
             for path in sorted(glob.glob(str(lib / pattern)))]
    reasons = _plugins_load([path for _, _, path in found]) if found else {}
    plugins = dict((Path(path).name, {"device": dev, "what": label, "loads": reasons[path]})
                   for dev, label, path in found)  # type: Dict[str, Dict[str, str]]
    report.facts["lite"]["plugins"] = plugins
    for name, info in sorted(plugins.items()):
        loads = info["loads"] == ""
        required = report.device == info["device"] and fnmatch.fnmatch(name, _REQUIRED_PLUGIN[info["device"]])
        status = OK if loads else (PROBLEM if required else NOTE)
        detail = "%s plugin %s %s" % (info["what"], name, "loads" if loads else "does not load: %s" % info["loads"])
        fix = "" if loads or not required else (
            "source the CANN toolkit's set_env.sh (/usr/local/Ascend/ascend-toolkit/set_env.sh) before running, "
            "and use the Lite package built for Ascend" if info["device"] == "ascend" else
            "install CUDA, cuDNN and TensorRT matching this Lite build")
        report.add("lite", status, detail, fix)
    if report.device in _REQUIRED_PLUGIN and not any(
            fnmatch.fnmatch(n, _REQUIRED_PLUGIN[report.device]) for n in plugins):
        report.add("lite", PROBLEM, "this Lite build has no %s plugin" % report.device,
                   "install the Lite package built for %s from mindspore.cn" % report.device)


def _plugins_load(paths: List[str]) -> Dict[str, str]:
    """For each plugin, "" when it loads after Lite itself (as Lite loads it), else the
    loader's reason. In one child process: a plugin's initialisers must not touch this one."""
    code = (
        "import ctypes, json, sys\nimport mindspore_lite\nout = {}\nfor p in sys.argv[1:]:\n"
        "    try:\n        ctypes.CDLL(p)\n        out[p] = ''\n    except OSError as e:\n        out[p] = str(e)\n"
        "print(json.dumps(out))\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code] + paths, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=120, env=dict(os.environ, GLOG_v="3"))
        lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
        if proc.returncode == 0 and lines:
            return dict(json.loads(lines[-1]))
        reason = "the loader failed (exit status %d)" % proc.returncode
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        reason = str(exc)
    return dict((p, reason) for p in paths)


def _check_onnxruntime(report: Report) -> None:
    report.facts["onnxruntime"] = {"installed": False, "error": "", "version": None, "providers": []}
    if importlib.util.find_spec("onnxruntime") is None:
        report.add("onnxruntime", NOTE, "ONNX Runtime is not installed (optional: pip install onnxruntime)")
        return
    try:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
    except Exception as exc:
        report.facts["onnxruntime"].update(installed=True, error=" ".join(str(exc).split()))
        report.add("onnxruntime", NOTE, "onnxruntime does not import (%s)" % " ".join(str(exc).split()))
        return
    report.facts["onnxruntime"] = {"installed": True, "error": "", "version": _version(ort), "providers": providers}
    report.add("onnxruntime", OK, "ONNX Runtime %s, providers %s" % (_version(ort), ", ".join(providers)))


def _check_mindspore(report: Report) -> None:
    """MindSpore's version from its installed metadata: importing it takes seconds, and the
    edge app needs it only for checkpoints (a --model it reads is loaded below anyway)."""
    spec = importlib.util.find_spec("mindspore")
    report.facts["mindspore"] = {"installed": False, "version": None}
    if spec is None or not spec.origin:
        report.add("mindspore", NOTE, "MindSpore is not installed (needed only to run checkpoints or MindSpore's "
                   "own MINDIR; Python 3.9+)")
        return
    version = _dist_version(Path(spec.origin).parent, "mindspore")
    report.facts["mindspore"] = {"installed": True, "version": version}
    report.add("mindspore", OK, "MindSpore %s (installed at %s)" % (version, Path(spec.origin).parent))


def _dist_version(package_dir: Path, name: str) -> str:
    """``Version:`` of the ``NAME-*.dist-info`` beside an installed package ("unknown" if absent)."""
    for info in sorted(package_dir.parent.glob("%s-*.dist-info" % name)):
        try:
            for line in (info / "METADATA").read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            continue
    return "unknown"


def _check_ascend(report: Report, meta: Any, environ: Optional[Dict[str, str]]) -> None:
    from .ascend_box import probe

    box = probe(environ)
    report.facts["ascend"] = box.to_dict()
    need = report.device == "ascend"
    miss = PROBLEM if need else NOTE
    if box.toolkit_problem:
        report.add("ascend", miss, "no Ascend toolkit: %s" % box.toolkit_problem,
                   "source the set_env.sh of the installed CANN toolkit, or unset %s" % box.toolkit_from.lstrip("$")
                   if need else "")
    elif box.toolkit is None:
        report.add("ascend", miss, "no Ascend toolkit (ASCEND_HOME_PATH is not set, /usr/local/Ascend/ascend-toolkit "
                   "absent)", "install CANN (toolkit or nnrt) and source its set_env.sh" if need else "")
    else:
        report.add("ascend", OK, "toolkit %s at %s (from %s)%s" % (
            box.toolkit_version or "(version unknown)", box.toolkit, box.toolkit_from,
            "" if box.atc else "; no model compiler atc (running is fine, converting is not)"))
    if box.driver_version:
        report.add("ascend", OK, "driver %s (%s)" % (box.driver_version, box.driver / "version.info"))
    elif need or box.toolkit is not None:
        installed = os.path.lexists(str(box.driver / "version.info"))
        fix = ("let this user read it (the driver installs it for the HwHiAiUser group), or run as that user"
               if installed else "install the Ascend driver and firmware packages (Ascend-hdk-*-npu-driver, "
               "-firmware) as root, then reboot")
        report.add("ascend", miss, "no driver: %s" % box.driver_problem, fix if need else "")
    _check_chips(report, box, meta)


def _check_chips(report: Report, box: Any, meta: Any) -> None:
    """npu-smi, the chips this process sees, and the model's SoC against the box's."""
    from .ascend_box import VISIBLE_ENV

    need = report.device == "ascend"
    miss = PROBLEM if need else NOTE
    if box.npu_smi_error:
        report.add("ascend", miss, "npu-smi info failed: %s" % box.npu_smi_error,
                   "check the driver with npu-smi info as root" if need else "")
    elif box.npu_smi:
        report.add("ascend", OK, "npu-smi names %s" % (", ".join(box.chip_names) or "no chip"))
    if box.visible_problem and box.visible_problem_certain:
        report.add("ascend", miss, box.visible_problem,
                   "list chip numbers in ascending order, separated by commas only" if need else "")
    elif box.visible_problem:
        report.add("ascend", NOTE, box.visible_problem + " (unless this is a container whose chips CANN numbers "
                   "from 0, not as the host's /dev/davinciN)")
    if box.chips:
        report.add("ascend", OK, "chips visible: %s%s" % (
            ", ".join("davinci%d as --device-id %d" % (chip, i) for i, chip in enumerate(box.chips)),
            " (%s=%s: device ids are indexes into its list)" % (VISIBLE_ENV, box.visible) if box.visible else ""))
    elif (need or box.toolkit is not None) and not box.visible_problem:  # the driver's nodes are there
        report.add("ascend", miss, "no Ascend chip visible (no /dev/davinciN%s)" % (
            " among %s=%s" % (VISIBLE_ENV, box.visible) if box.visible else ""),
            "load the driver (npu-smi info lists the chips); in a container pass --device /dev/davinci0 "
            "--device /dev/davinci_manager --device /dev/devmm_svm --device /dev/hisi_hdc" if need else "")
    wanted = meta.deployment.soc if meta is not None and meta.deployment is not None else ""
    if box.chip_names and not box.soc:
        from .ascend_config import SOCS

        report.add("ascend", PROBLEM if need and wanted else NOTE,
                   "this box's chip %s is none of the SoCs ibnedge converts for (--soc %s)%s" % (
                       box.chip_names[0], ", ".join(SOCS), "; the model was converted for %s" % wanted if wanted else ""),
                   "convert on the box with converter_lite, setting ge.socVersion in the .ascend.ini to this chip's "
                   "CANN SoC name" if need and wanted else "")
    elif wanted and box.soc and wanted != box.soc:
        report.add("ascend", PROBLEM if need else NOTE,
                   "the model was converted for %s but this box's chip is %s" % (wanted, box.soc),
                   "convert it again with --soc %s" % box.soc)


def _model_metadata(model: Optional[str]):
    if model is None:
        return None, ""
    from .metadata import load_for_model

    try:
        return load_for_model(model), ""
    except ValueError as exc:
        return None, str(exc)


def _check_model(report: Report, model: Path, meta: Any, meta_error: str) -> None:
    report.facts["model"] = {"path": str(model), "exists": model.is_file(), "metadata": None, "backends": {}}
    if not model.is_file():
        report.add("model", PROBLEM, "%s does not exist" % model, "check the --model path")
        return
    from .models import is_weights

    if is_weights(model):
        _check_weights(report, model)
        return
    _check_model_metadata(report, model, meta, meta_error)
    _check_model_backends(report, model)


def _check_weights(report: Report, weights: Path) -> None:
    """For weights (.pth, .ckpt): for which backends ibnedge can make a model of them here."""
    from .backends import BACKENDS
    from .models import entry_dir, unavailable_because

    reasons = dict((name, unavailable_because(name, weights)) for name in BACKENDS)
    report.facts["model"]["backends"] = dict((name, reason or "") for name, reason in reasons.items())
    for name, reason in reasons.items():
        if reason is None:
            report.add("model", OK, "%s holds weights: ibnedge makes them into a model for the %s backend once "
                       "(cached in %s)" % (weights.name, name, entry_dir(weights)))
        else:
            report.add("model", NOTE, "no model for the %s backend can be made of %s here: %s"
                       % (name, weights.name, reason))
    if all(reasons.values()):
        report.add("model", PROBLEM, "no installed backend can run %s here" % weights.name,
                   "install what the notes above name (for a .pth on the box: pip install onnx mindspore-lite)")


def _check_model_metadata(report: Report, model: Path, meta: Any, meta_error: str) -> None:
    if meta_error:
        report.add("model", PROBLEM, " ".join(meta_error.split()), "re-export the model or fix the JSON")
    elif meta is None:
        report.add("model", NOTE, "%s has no metadata JSON beside it: ImageNet preprocessing is assumed" % model.name)
    else:
        dep = meta.deployment
        report.facts["model"]["metadata"] = meta.to_dict()
        report.add("model", OK, "%s, %d classes, input %s, preprocessing %s %d/%s" % (
            meta.arch, meta.num_classes, list(meta.input_shape), meta.preprocess.semantics, meta.preprocess.resize,
            "x".join(str(c) for c in meta.preprocess.crop)))
        if dep is not None:
            report.add("model", OK, "converted for %s%s, batch profiles %s, precision %s" % (
                dep.device, " (%s)" % dep.soc if dep.soc else "", list(dep.batch_profiles) or "any", dep.precision))
            if dep.device != report.device:
                report.add("model", PROBLEM, "the model was converted for %s, not %s" % (dep.device, report.device),
                           "convert it with ibnedge convert --device %s (or check with --device %s)" % (
                               report.device, dep.device))


def _check_model_backends(report: Report, model: Path) -> None:
    """Whether each installed backend that reads the file loads it on the device."""
    from .backends import BACKENDS, BackendError, create_backend

    loaded = {}  # type: Dict[str, str]
    for name, cls in BACKENDS.items():
        if not cls.installed() or not cls.accepts(model):
            continue
        try:
            backend = create_backend(name, model, device=report.device)
        except (BackendError, ValueError) as exc:
            loaded[name] = " ".join(str(exc).split())
            continue
        sizes = backend.batch_sizes
        backend.close()
        loaded[name] = ""
        report.add("model", OK, "%s loads it on %s (batch sizes %s)" % (name, report.device, list(sizes) if sizes else "any"))
    report.facts["model"]["backends"] = loaded
    for name, reason in loaded.items():
        if reason:
            report.add("model", NOTE, "%s cannot load it on %s: %s" % (name, report.device, reason))
    if not any(r == "" for r in loaded.values()):
        readers = [n for n, c in BACKENDS.items() if c.accepts(model)]
        report.add("model", PROBLEM, "no installed backend runs %s on %s" % (model.name, report.device),
                   "install a runtime that reads %s files (%s), or fix what the notes above say" % (
                       model.suffix, ", ".join(readers) or "none does"))


__all__ = ["Finding", "Report", "diagnose", "format_report"]
