"""Shared by the train tests: a tiny ImageFolder of real photographs, and running the CLIs.

Three classes, each a different scikit-image photograph (astronaut, chelsea the cat,
coffee); every image is a random crop of its photograph, randomly flipped and
brightness-jittered, resized and saved as JPEG. One extra file in a class folder is a
truncated JPEG that the data pipeline must report by name and skip.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("astronaut", "chelsea", "coffee")
CORRUPT_NAME = "zz_truncated.jpg"


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


def env() -> Dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("GLOG_v", "3")  # MindSpore's C++ log: errors only
    return e


def run_module(module: str, args: Sequence[str], cwd: Optional[Path] = None, timeout: float = 600,
               check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module] + [str(a) for a in args]
    proc = subprocess.Popen(cmd, cwd=str(cwd or REPO), env=env(), stdout=subprocess.PIPE,
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


def last_json(text: str) -> dict:
    """The final JSON summary line a CLI prints."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise AssertionError("no JSON summary in output:\n" + text[-4000:])
