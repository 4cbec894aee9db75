"""Shared by the train tests: a tiny ImageFolder of real photographs, running the CLIs, and
seeing which files they open.

Three classes, each a different scikit-image photograph (astronaut, chelsea the cat,
coffee); every image is a random crop of its photograph, randomly flipped and
brightness-jittered, resized and saved as JPEG. One extra file in a class folder is a
truncated JPEG that the data pipeline must report by name and skip.
"""
from __future__ import annotations

import ctypes
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edge_helpers import REPO, subprocess_env
CLASSES = ("astronaut", "chelsea", "coffee")
CORRUPT_NAME = "zz_truncated.jpg"
# Set in a launcher's environment, inherited by every process of its run: finds leftovers.
MARKER_ENV = "IBNEDGE_TEST_RUN"


def make_image_folder(root: Path, per_class: int = 6, size: int = 80, seed: int = 0, corrupt: bool = True) -> Path:
    """ImageFolder at ``root`` with ``per_class`` JPEGs per class (+ one truncated file)."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for name in CLASSES:
        photo = getattr(skimage.data, name)()
        h, w = photo.shape[:2]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
            top = int(rng.integers(0, h - side + 1))
            left = int(rng.integers(0, w - side + 1))
            crop = photo[top : top + side, left : left + side].astype(np.float32)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crop = np.clip(crop * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
            aspect = rng.uniform(0.8, 1.25)
            image = Image.fromarray(crop).resize((int(size * aspect), size), Image.BILINEAR)
            image.save(folder / ("%s_%02d.jpg" % (name, i)), "JPEG", quality=90)
    if corrupt:
        good = (root / CLASSES[0] / ("%s_00.jpg" % CLASSES[0])).read_bytes()
        (root / CLASSES[0] / CORRUPT_NAME).write_bytes(good[: len(good) // 2])
    return root


def run_module(module: str, args: Sequence[str], cwd: Optional[Path] = None, timeout: float = 600,
               check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module] + [str(a) for a in args]
    proc = subprocess.Popen(cmd, cwd=str(cwd or REPO), env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM first: train.distributed then stops msrun and every rank it started.
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError("python -m %s timed out after %ds:\n%s" % (module, timeout, (out or "")[-6000:]))
    proc = subprocess.CompletedProcess(cmd, proc.returncode, out, None)
    if check and proc.returncode != 0:
        raise AssertionError("python -m %s %s failed (%d):\n%s" % (module, " ".join(map(str, args)), proc.returncode, proc.stdout[-6000:]))
    return proc


# python -c this AT_EXIT MODULE ARGS...: runs MODULE as ``python -m`` would, then AT_EXIT as the
# interpreter exits (also after sys.exit), in the module's own process.
_RUN_MODULE_THEN = """
import atexit, runpy, sys
atexit.register(exec, sys.argv[1], {})
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def module_then_command(module: str, args: Sequence[str], at_exit: str) -> List[str]:
    """The argv of ``python -m module args`` that then runs the Python source ``at_exit`` in that
    same process as it exits: to read back what the module left there (its environment, its
    peak RSS), which nothing outside the process can."""
    return [sys.executable, "-c", _RUN_MODULE_THEN, at_exit, module] + [str(a) for a in args]


def last_json(text: str) -> dict:
    """The final JSON summary line a CLI prints."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise AssertionError("no JSON summary in output:\n" + text[-4000:])


# ----------------------------------------------------------------------------- numbers and weights


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref| (shapes must agree)."""
    assert out.shape == ref.shape, "shape %r != reference %r" % (out.shape, ref.shape)
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def randomise_norms(net, seed: int = 0):
    """Norm parameters, running statistics and biases away from their initial values (which
    would hide a wrongly mapped gamma/beta or mean/variance); returns ``net``."""
    import mindspore as ms

    rng = np.random.default_rng(seed)
    for param in net.get_parameters():
        leaf = param.name.rsplit(".", 1)[-1]
        if leaf == "moving_variance":
            value = rng.uniform(0.5, 2.0, param.shape)
        elif leaf in ("moving_mean", "beta", "bias"):
            value = rng.normal(0, 0.2, param.shape)
        elif leaf == "gamma":
            value = rng.uniform(0.6, 1.4, param.shape)
        else:
            continue
        param.set_data(ms.Tensor(value.astype(np.float32)))
    return net


def save_reference_pth(path: Path, arch: str = "resnet_ibn_a_tiny", num_classes: int = 1000) -> Path:
    """``torch.save`` of the PyTorch reference model's state dict (as the official files are)."""
    import torch
    import torch_reference

    torch.save(torch_reference.build(arch, num_classes=num_classes).state_dict(), str(path))
    return Path(path)


def load_converted(name: str, ckpt: Path, num_classes: int = 1000):
    """The registered model ``name`` with the weights of a ``train.convert`` checkpoint (strict)."""
    import mindspore as ms
    from train.model_info import INFO_KEY
    from train.models import create_model

    net = create_model(name, num_classes=num_classes)
    not_loaded, unused = ms.load_param_into_net(net, ms.load_checkpoint(str(ckpt)), strict_load=True)
    # the one extra entry is the record of what the file holds (train.model_info.INFO_KEY)
    assert not not_loaded and unused == [INFO_KEY], (not_loaded, unused)
    return net


def converted_pair(name: str, tmp_path: Path, num_classes: int = 1000):
    """``(PyTorch reference, MindSpore model)`` with the same seeded weights: the reference's
    ``torch.save`` file converted by ``train.convert`` (the .pth stays at ``tmp_path/<name>.pth``)."""
    import torch
    import torch_reference
    from train.convert import convert_file

    ref = torch_reference.build(name, num_classes=num_classes)
    pth, ckpt = tmp_path / (name + ".pth"), tmp_path / (name + ".ckpt")
    torch.save(ref.state_dict(), str(pth))
    report = convert_file(pth, ckpt, arch=name)
    assert report.ok and report.arch == name and report.num_classes == num_classes
    return ref, load_converted(name, ckpt, num_classes)


def load_dumped_weights(path: Path):
    """``(trainable weights, shard files)`` of a ``python -m train --dump-weights`` file."""
    with np.load(str(path)) as z:
        return {k: z[k] for k in z.files if not k.startswith("__")}, [str(f) for f in z["__shard_files__"]]


def max_weight_diff(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


class FileOpens:
    """Opens of anything inside ``folders`` while it watches, as the kernel reports them
    (Linux inotify, IN_OPEN), by whichever process: no tracing, no change to the code watched."""

    IN_OPEN, IN_ISDIR = 0x20, 0x40000000

    def __init__(self, folders: Sequence[Path]):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.folders = {}
        for folder in folders:
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(str(folder)), self.IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), "inotify_add_watch failed", str(folder))
            self.folders[wd] = Path(folder)

    def opened(self) -> List[str]:
        """What was opened so far: ``folder/name`` for files, ``folder/`` for a folder listed."""
        found, raw = [], b""
        while True:
            try:
                raw += os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
        at = 0
        while at < len(raw):
            wd, mask, _, size = struct.unpack_from("iIII", raw, at)
            name = raw[at + 16 : at + 16 + size].rstrip(b"\0").decode()
            at += 16 + size
            if mask & self.IN_OPEN:
                found.append("%s/%s" % (self.folders[wd].name, "" if mask & self.IN_ISDIR and not name else name))
        return found

    def close(self) -> None:
        os.close(self.fd)
