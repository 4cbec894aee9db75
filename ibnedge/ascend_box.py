"""What this machine has of the Ascend software stack: toolkit, driver, chips.

Read from the places CANN's installers write (no Ascend library is loaded):

* toolkit: ``$ASCEND_HOME_PATH`` (set by ``source .../ascend-toolkit/set_env.sh``; also
  ``$ASCEND_TOOLKIT_HOME``), else ``/usr/local/Ascend/ascend-toolkit/latest``; its version
  in ``<toolkit>/<arch>-linux/ascend_toolkit_install.info`` (``version=...``), and the
  model compiler ``atc`` under ``<toolkit>/compiler/bin`` or ``<toolkit>/bin`` (CANN
  installation guide, "File Paths":
  https://www.hiascend.com/document/detail/en/canncommercial/800/softwareinst/instg/instg_0044.html);
* driver: ``<Ascend root>/driver/version.info`` (``Version=...``), the root being the
  folder that holds ``ascend-toolkit`` (default ``/usr/local/Ascend``);
* chips: the device nodes ``/dev/davinciN`` the driver creates, narrowed and renumbered by
  ``$ASCEND_RT_VISIBLE_DEVICES`` when set; ``npu-smi info`` (on PATH) for the chip name.

``ASCEND_RT_VISIBLE_DEVICES=2,3`` (CANN's CUDA_VISIBLE_DEVICES) shows the process chips 2
and 3 only, as devices 0 and 1: a device id (``--device-id``, Lite's ``ascend.device_id``)
is then an index into that list. CANN reads the list up to its first entry that is not a
number (``1, 2`` is ``1``: the space) or not a chip of the box (``1,3,8`` on 8 chips is
``1,3``), and supports ascending ids only (CANN environment variable reference,
ASCEND_RT_VISIBLE_DEVICES:
https://www.hiascend.com/document/detail/en/canncommercial/800/apiref/envvar/envref_07_0028.html).
Chip N is taken to be ``/dev/davinciN``.
"""
from __future__ import annotations

import os
import platform
import re
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .ascend_config import soc_of_chip
from .errors import UserError

DEFAULT_ROOT = Path("/usr/local/Ascend")
_TOOLKIT_VARS = ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME")
# npu-smi answers in about a second and prints a table of a few kB per chip.
NPU_SMI_TIMEOUT_S = 10.0
NPU_SMI_MAX_BYTES = 1 << 20
_CHIP_NAME = re.compile(r"\b(310P\d*|310B\d*|310|910[A-C]?\d*)\b")
VISIBLE_ENV = "ASCEND_RT_VISIBLE_DEVICES"


class DeviceIdError(UserError, ValueError):
    """A device id this process has no Ascend chip for."""


@dataclass
class AscendBox:
    """The findings; ``None`` / empty where a part is absent."""

    toolkit: Optional[Path] = None
    toolkit_from: str = ""  # the variable (or default path) it was found through
    # Why a toolkit the environment names is not there ("$ASCEND_HOME_PATH=/x is not a folder").
    toolkit_problem: str = ""
    toolkit_version: str = ""
    atc: Optional[Path] = None
    driver: Optional[Path] = None  # where the driver should be (it may be missing)
    driver_version: str = ""
    driver_problem: str = ""  # why no version was read: the file is missing, or unreadable
    npu_smi: Optional[str] = None
    npu_smi_output: str = ""
    npu_smi_error: str = ""
    chips: List[int] = field(default_factory=list)  # chip numbers (davinciN) in device id order
    visible: Optional[str] = None  # ASCEND_RT_VISIBLE_DEVICES as set
    visible_problem: str = ""  # which part of it CANN does not read, and why
    # False when the only doubt is an entry with no /dev/davinci<entry>: in a container given
    # other chips CANN may number them from 0, so that is no sure fault
    visible_problem_certain: bool = False
    chip_names: List[str] = field(default_factory=list)  # from npu-smi, e.g. "310", "310P3"

    @property
    def soc(self) -> str:
        """The chip family of the first chip npu-smi names ("Ascend310", ...), or ""."""
        return soc_of_chip(self.chip_names[0]) if self.chip_names else ""

    def to_dict(self) -> Dict[str, object]:
        return {
            "toolkit": str(self.toolkit) if self.toolkit else None,
            "toolkit_from": self.toolkit_from,
            "toolkit_problem": self.toolkit_problem,
            "toolkit_version": self.toolkit_version,
            "atc": str(self.atc) if self.atc else None,
            "driver": str(self.driver) if self.driver else None,
            "driver_version": self.driver_version,
            "driver_problem": self.driver_problem,
            "npu_smi": self.npu_smi,
            "npu_smi_error": self.npu_smi_error,
            "chips": list(self.chips),
            "visible": self.visible,
            "visible_problem": self.visible_problem,
            "visible_problem_certain": self.visible_problem_certain,
            "chip_names": list(self.chip_names),
            "soc": self.soc,
        }


def probe(environ: Optional[Mapping[str, str]] = None, dev_dir: str = "/dev") -> AscendBox:
    """The Ascend stack as ``environ`` (default: this process's) and ``dev_dir`` show it."""
    env = os.environ if environ is None else environ
    box = probe_toolkit(env)
    root = DEFAULT_ROOT
    if box.toolkit is not None and "ascend-toolkit" in box.toolkit.parts:
        parts = box.toolkit.parts
        root = Path(*parts[: parts.index("ascend-toolkit")])
    box.driver = root / "driver"
    box.driver_version, box.driver_problem = _read_key(box.driver / "version.info", "Version")
    box.visible = env.get(VISIBLE_ENV)
    present = _device_nodes(Path(dev_dir))
    box.chips, box.visible_problem = visible_chips(present, box.visible)
    box.visible_problem_certain = bool(visible_chips(present, box.visible, by_node=False)[1])
    box.npu_smi = shutil.which("npu-smi", path=env.get("PATH"))
    if box.npu_smi:
        _run_npu_smi(box)
    return box


def probe_toolkit(environ: Optional[Mapping[str, str]] = None) -> AscendBox:
    """Only the toolkit part of :func:`probe` (what converting needs: no driver, no chips)."""
    env = os.environ if environ is None else environ
    box = AscendBox()
    for var in _TOOLKIT_VARS:
        if env.get(var):
            box.toolkit_from = "$" + var
            if Path(env[var]).is_dir():
                box.toolkit = Path(env[var])
            else:
                box.toolkit_problem = "%s=%s is not a folder" % (var, env[var])
            break
    else:
        default = DEFAULT_ROOT / "ascend-toolkit" / "latest"
        if default.is_dir():
            box.toolkit, box.toolkit_from = default, str(default)
    if box.toolkit is not None:
        info = box.toolkit / ("%s-linux" % platform.machine()) / "ascend_toolkit_install.info"
        box.toolkit_version = _read_key(info, "version")[0]
        for candidate in (box.toolkit / "compiler" / "bin" / "atc", box.toolkit / "bin" / "atc"):
            if candidate.is_file():
                box.atc = candidate
                break
    return box


def _read_key(path: Path, key: str) -> Tuple[str, str]:
    """(value, "") of ``key=value`` in a CANN info file, else ("", why not)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "", "%s is missing" % path
    except OSError as exc:
        return "", "%s cannot be read (%s)" % (path, exc.strerror or exc)
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip().lower() == key.lower():
            return value.strip(), ""
    return "", "%s has no %s= line" % (path, key)


def _device_nodes(dev_dir: Path) -> List[int]:
    try:
        names = os.listdir(str(dev_dir))
    except OSError:
        return []
    return sorted(int(n[len("davinci"):]) for n in names if re.match(r"^davinci\d+$", n))


def visible_chips(present: List[int], visible: Optional[str], by_node: bool = True) -> Tuple[List[int], str]:
    """(the chips of ``present`` a process sees, in device id order; which part of
    ``visible``, ASCEND_RT_VISIBLE_DEVICES, CANN does not read and why, or "").
    Unset or empty, every chip is seen. ``by_node=False`` does not stop at a number with no
    ``/dev/davinci<number>``: in a container given other chips, CANN's ids may not be the
    host's node numbers."""
    if not visible or not present:
        return list(present), ""
    chips = []  # type: List[int]
    for entry in visible.split(","):
        if not re.fullmatch(r"[0-9]+", entry):
            why = "%r is not a chip number (only digits and commas are read)" % entry
        elif by_node and int(entry) not in present:
            why = "this box has no chip %s (/dev/davinci%s)" % (entry, entry)
        elif chips and int(entry) <= chips[-1]:
            why = "chip %s does not come after chip %d (CANN takes ascending ids only)" % (entry, chips[-1])
        else:
            chips.append(int(entry))
            continue
        return chips, "%s=%s is read only up to %s: %s" % (
            VISIBLE_ENV, visible, ",".join(map(str, chips)) if chips else "nothing (no chip is visible)", why)
    return chips, ""


def check_device_ids(device_ids: Sequence[int], environ: Optional[Mapping[str, str]] = None,
                     dev_dir: str = "/dev") -> None:
    """Raises :class:`DeviceIdError` for a device id beyond the chips this process sees
    (the visible list's indexes): no more than the ``/dev/davinciN`` nodes, nor than the
    entries CANN reads of the list. Whether each entry names one of those nodes is left to
    the runtime (and the doctor): a container's ids need not be the host's node numbers.
    Without any ``/dev/davinciN`` there is nothing to count, and the runtime is left to answer."""
    env = os.environ if environ is None else environ
    visible = env.get(VISIBLE_ENV)
    present = _device_nodes(Path(dev_dir))
    chips, problem = visible_chips(present, visible, by_node=False)
    chips = chips[:len(present)]
    beyond = [i for i in device_ids if i >= len(chips)]
    if not present or not beyond:
        return
    seen = ", ".join("%d (davinci%d)" % (i, chip) for i, chip in enumerate(chips)) or "none"
    raise DeviceIdError("no Ascend chip has device id %s in this process: its device ids are %s%s%s" % (
        ", ".join(map(str, beyond)), seen,
        " (%s=%s: ids are indexes into that list)" % (VISIBLE_ENV, visible) if visible else "",
        "; %s" % problem if problem else ""))


def _run_npu_smi(box: AscendBox) -> None:
    status, output, problem = run_bounded([str(box.npu_smi), "info"], NPU_SMI_TIMEOUT_S, NPU_SMI_MAX_BYTES)
    box.npu_smi_output = output.decode("utf-8", "replace")
    if problem or status != 0:
        lines = box.npu_smi_output.strip().splitlines()
        box.npu_smi_error = problem or "exit status %d%s" % (status, ": " + lines[-1][:200] if lines else "")
        return
    box.chip_names = _CHIP_NAME.findall(box.npu_smi_output)


def run_bounded(command: List[str], timeout_s: float, max_bytes: int) -> Tuple[Optional[int], bytes, str]:
    """(exit status, output, "") of a tool, or (None, output so far, why it was stopped) when
    it outlives ``timeout_s`` or writes more than ``max_bytes``: a wedged driver makes
    ``npu-smi`` hang, a broken one can print without end, and the doctor must still answer.
    The tool runs in a session of its own, so that stopping it stops what it started too."""
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as exc:
        return None, b"", "cannot run %s (%s)" % (command[0], exc.strerror or exc)
    deadline = time.monotonic() + timeout_s
    output = bytearray()
    problem = ""
    with proc.stdout, selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not problem:
            left = deadline - time.monotonic()
            if left <= 0:
                problem = "no answer within %g s" % timeout_s
            elif selector.select(left):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                output += chunk[: max_bytes + 1 - len(output)]
                if len(output) > max_bytes:
                    problem = "more than %d bytes of output" % max_bytes
    try:
        if not problem:
            return proc.wait(max(deadline - time.monotonic(), 0.01)), bytes(output), ""
    except subprocess.TimeoutExpired:
        problem = "no exit within %g s" % timeout_s
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(1)
    except (OSError, subprocess.TimeoutExpired):  # gone already, or stuck in the kernel: leave it
        pass
    return None, bytes(output), problem


__all__ = ["AscendBox", "DEFAULT_ROOT", "DeviceIdError", "check_device_ids", "probe", "probe_toolkit", "visible_chips"]
