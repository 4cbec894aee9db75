"""Preprocessing speed: the native engine against libjpeg-turbo's own decode (the floor)
and the libraries it replaces, in one run on the same files.

    python -m ibnedge.bench.preprocess [--corpus DIR] [--images DIR] [--json FILE]

Every pipeline turns JPEG bytes already in memory into the model input (short side 256,
centre crop 224, normalised float32 CHW) except the floors, which only decode. Timing is
round-robin (file by file, pipeline by pipeline, repeated) so machine noise hits every
pipeline alike, in an order shuffled for every file and repeat (seeded: the same in every
run), and each timed call follows an untimed call of the same pipeline on the previous
file, so that every pipeline is timed as it runs in a loop over images, its code and tables
warm. In a fixed order without that call, a pipeline's time depended on which one ran before
it: the full-decode floor always followed a simplejpeg pipeline (its own library, warm) and
the engine's pil pipeline the DCT-scaled decode, which put pil at ~1.5x the floor against
~1.2x measured either way here (and mindspore, right after pil, at ~1.05x). Each file's
time is the median of its repeats and a pipeline's figure is the median over files. Engine
batches at 1 and 2 native threads give the thread scaling.
OpenCV is limited to one thread (``cv2.setNumThreads(1)``): every figure is one core
unless it says otherwise.

The per-pipeline timers (:func:`make_pipelines`, :func:`time_per_image`,
:func:`time_batches`) are reused by ``ibnedge bench``.
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ibnedge.metadata import IMAGENET_MEAN, IMAGENET_STD, SEMANTICS, PreprocessSpec

FLOOR_FULL = "floor_full"
FLOOR_SCALED = "floor_scaled"
FLOOR_SYSTEM = "floor_system"
MINDSPORE_OPS = "mindspore_ops"
OPENCV = "opencv"
OPENCV_TUNED = "opencv_tuned"
OPENCV_REDUCED = "opencv_reduced"
PILLOW = "pillow"
SIMPLEJPEG_CV2 = "simplejpeg_cv2"
SIMPLEJPEG_CV2_TUNED = "simplejpeg_cv2_tuned"

LABELS = OrderedDict([
    (FLOOR_FULL, "floor: libjpeg-turbo full decode only (simplejpeg)"),
    (FLOOR_SCALED, "floor: libjpeg-turbo DCT-scaled decode only (simplejpeg, short side >= 256)"),
    (FLOOR_SYSTEM, "floor: libjpeg-turbo full decode only (the system's libturbojpeg, as the engine links)"),
    ("ibnedge_pil", "ibnedge engine, pil semantics"),
    ("ibnedge_mindspore", "ibnedge engine, mindspore semantics"),
    ("ibnedge_fast", "ibnedge engine, fast semantics"),
    (MINDSPORE_OPS, "MindSpore vision ops, eager (Decode, Resize, CenterCrop, Normalize, HWC2CHW)"),
    (OPENCV, "OpenCV imdecode + resize + numpy normalise"),
    (OPENCV_TUNED, "OpenCV imdecode + resize + tuned numpy normalise"),
    (OPENCV_REDUCED, "OpenCV IMREAD_REDUCED_COLOR_n + resize + numpy"),
    (PILLOW, "Pillow (draft for large JPEGs) + resize + numpy"),
    (SIMPLEJPEG_CV2, "simplejpeg scaled decode + cv2.resize + numpy"),
    (SIMPLEJPEG_CV2_TUNED, "simplejpeg scaled decode + cv2.resize + tuned numpy"),
])


def engine_key(semantics: str) -> str:
    return "ibnedge_" + semantics


@dataclass
class Pipeline:
    """One way to turn one image's bytes into its output (``per_image``); engine
    pipelines also take a whole batch (``batch``, returning the ``PreprocessResult``)."""

    key: str
    label: str
    per_image: Callable[[bytes], Any]
    batch: Optional[Callable[[Sequence[bytes]], Any]] = None


# --------------------------------------------------------------------------- pipelines


_MEAN_255 = np.asarray(IMAGENET_MEAN, np.float32) * np.float32(255.0)
_INV_STD_255 = np.float32(1.0) / (np.asarray(IMAGENET_STD, np.float32) * np.float32(255.0))


def _numpy_normalise(rgb: np.ndarray) -> np.ndarray:
    """Normalise + HWC->CHW as application code usually writes it (what the issue's
    reference figures measured): whole-array float ops, then a transposing copy."""
    return np.ascontiguousarray(((rgb.astype(np.float32) - _MEAN_255) * _INV_STD_255).transpose(2, 0, 1))


def _numpy_normalise_tuned(rgb: np.ndarray) -> np.ndarray:
    """The same result about 10x faster: one strided read per channel straight into the
    CHW output, then in-place scaling (no temporaries, no transposing copy)."""
    out = np.empty((3,) + rgb.shape[:2], dtype=np.float32)
    for c in range(3):
        np.subtract(rgb[:, :, c], _MEAN_255[c], out=out[c], dtype=np.float32)
        out[c] *= _INV_STD_255[c]
    return out


def _short_side_size(width: int, height: int, resize: int) -> Tuple[int, int]:
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def _centre(img: np.ndarray, crop: Tuple[int, int]) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
    return img[top:top + crop[0], left:left + crop[1]]


def _cv2_resize_crop(rgb: np.ndarray, resize: int, crop: Tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    size = _short_side_size(w, h, resize)
    return _centre(cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR), crop)


TJPF_RGB = 0  # TurboJPEG's pixel format: packed RGB, what simplejpeg's floor returns


def system_turbojpeg_decode() -> Optional[Callable[[bytes], np.ndarray]]:
    """A full RGB decode by the system's TurboJPEG library, through ctypes; None where it is
    not installed (Debian's libturbojpeg0).

    It is the same libjpeg-turbo build as the libjpeg the engine links (one source package),
    so the engine over this floor is the engine's own cost; simplejpeg bundles its own,
    newer libjpeg-turbo (3.1 beside the system's 2.1 here), which decodes a few percent
    faster and so moves the simplejpeg floor for reasons outside the engine.
    """
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("turbojpeg") or "libturbojpeg.so.0")
    except OSError:
        return None
    lib.tjInitDecompress.restype = ctypes.c_void_p
    lib.tjDecompressHeader3.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong] + [
        ctypes.POINTER(ctypes.c_int)] * 4
    lib.tjDecompress2.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p] + [
        ctypes.c_int] * 5
    lib.tjGetErrorStr.restype = ctypes.c_char_p
    handle = lib.tjInitDecompress()  # lives as long as the process: the benchmark's only decoder
    if not handle:
        return None

    def decode(data: bytes) -> np.ndarray:
        width, height, subsampling, colorspace = (ctypes.c_int() for _ in range(4))
        if lib.tjDecompressHeader3(handle, data, len(data), ctypes.byref(width), ctypes.byref(height),
                                   ctypes.byref(subsampling), ctypes.byref(colorspace)) != 0:
            raise RuntimeError("libturbojpeg: %s" % lib.tjGetErrorStr().decode(errors="replace"))
        rgb = np.empty((height.value, width.value, 3), dtype=np.uint8)
        if lib.tjDecompress2(handle, data, len(data), rgb.ctypes.data, width.value, 0, height.value, TJPF_RGB, 0):
            raise RuntimeError("libturbojpeg: %s" % lib.tjGetErrorStr().decode(errors="replace"))
        return rgb

    return decode


def make_pipelines(resize: int = 256, crop: Tuple[int, int] = (224, 224), threads: int = 1,
                   include: Optional[Sequence[str]] = None) -> "OrderedDict[str, Pipeline]":
    """The pipelines importable here, keyed as in :data:`LABELS`; ``include`` limits them.

    Engine pipelines reuse one preallocated output buffer per call shape, as an
    application would. ``threads`` is the engine's native thread count.
    """
    wanted = set(include) if include is not None else None
    pipes = OrderedDict()  # type: OrderedDict[str, Pipeline]

    def add(key: str, per_image: Callable[[bytes], Any], batch: Optional[Callable] = None) -> None:
        if wanted is None or key in wanted:
            pipes[key] = Pipeline(key, LABELS.get(key, key), per_image, batch)

    try:
        import simplejpeg
    except ImportError:
        simplejpeg = None
    if simplejpeg is not None:
        add(FLOOR_FULL, lambda data: simplejpeg.decode_jpeg(data, colorspace="RGB"))
        add(FLOOR_SCALED, lambda data: simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=resize, min_width=resize))

    if wanted is None or FLOOR_SYSTEM in wanted:
        system_decode = system_turbojpeg_decode()
        if system_decode is not None:
            add(FLOOR_SYSTEM, system_decode)

    for semantics in SEMANTICS:
        key = engine_key(semantics)
        if wanted is None or key in wanted:
            per_image, batch = _engine_callables(semantics, resize, crop, threads)
            add(key, per_image, batch)

    vision = _mindspore_vision()
    if vision is not None:
        ops = [vision.Decode(), vision.Resize(resize, vision.Inter.LINEAR), vision.CenterCrop(list(crop)),
               vision.Normalize([m * 255.0 for m in IMAGENET_MEAN], [s * 255.0 for s in IMAGENET_STD]),
               vision.HWC2CHW()]

        def mindspore_ops(data: bytes) -> Any:
            x = np.frombuffer(data, dtype=np.uint8)
            for op in ops:
                x = op(x)
            return x

        add(MINDSPORE_OPS, mindspore_ops)

    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        cv2.setNumThreads(1)

        def opencv_crop(data: bytes) -> np.ndarray:
            bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            return _cv2_resize_crop(rgb, resize, crop)

        add(OPENCV, lambda data: _numpy_normalise(opencv_crop(data)))
        add(OPENCV_TUNED, lambda data: _numpy_normalise_tuned(opencv_crop(data)))
        if simplejpeg is not None:
            reduced_flags = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                             (2, cv2.IMREAD_REDUCED_COLOR_2))

            def opencv_reduced(data: bytes) -> np.ndarray:
                h, w = simplejpeg.decode_jpeg_header(data)[:2]
                flag = cv2.IMREAD_COLOR
                for factor, candidate in reduced_flags:
                    if min(h, w) // factor >= resize:
                        flag = candidate
                        break
                bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                return _numpy_normalise(_cv2_resize_crop(rgb, resize, crop))

            add(OPENCV_REDUCED, opencv_reduced)

            def simplejpeg_crop(data: bytes) -> np.ndarray:
                rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=resize, min_width=resize)
                return _cv2_resize_crop(rgb, resize, crop)

            add(SIMPLEJPEG_CV2, lambda data: _numpy_normalise(simplejpeg_crop(data)))
            add(SIMPLEJPEG_CV2_TUNED, lambda data: _numpy_normalise_tuned(simplejpeg_crop(data)))

    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        bilinear = getattr(Image, "Resampling", Image).BILINEAR

        def pillow(data: bytes) -> np.ndarray:
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if min(w, h) >= 2 * resize:  # let libjpeg reduce in the DCT domain, short side >= resize
                img.draft("RGB", _short_side_size(w, h, resize))
            img = img.convert("RGB")
            size = _short_side_size(img.size[0], img.size[1], resize)
            img = img.resize(size, bilinear)
            left, top = int(round((size[0] - crop[1]) / 2.0)), int(round((size[1] - crop[0]) / 2.0))
            return _numpy_normalise(np.asarray(img.crop((left, top, left + crop[1], top + crop[0]))))

        add(PILLOW, pillow)
    return pipes


def _mindspore_vision() -> Any:
    try:
        import mindspore.dataset.vision as vision
    except ImportError:
        return None
    return vision


def _engine_callables(semantics: str, resize: int, crop: Tuple[int, int], threads: int):
    from ibnedge.preprocess import Preprocessor

    pre = Preprocessor(spec=PreprocessSpec(resize=resize, crop=crop, semantics=semantics), threads=threads)
    buffers = {}  # type: Dict[int, np.ndarray]

    def out_for(n: int) -> np.ndarray:
        if n not in buffers:
            buffers[n] = np.empty((n, 3, crop[0], crop[1]), dtype=np.float32)
        return buffers[n]

    def per_image(data: bytes) -> Any:
        return pre.run([data], out=out_for(1))

    def batch(datas: Sequence[bytes]) -> Any:
        return pre.run(list(datas), out=out_for(len(datas)))

    return per_image, batch


# --------------------------------------------------------------------------- timing


def _check_output(pipe: Pipeline, result: Any) -> None:
    errors = getattr(result, "errors", None)
    if errors is not None and any(e is not None for e in errors):
        bad = next(e for e in errors if e is not None)
        raise RuntimeError("%s failed on a benchmark file: %s: %s" % (pipe.key, bad.kind, bad.message))


ORDER_SEED = 12  # the pipelines' order of each file and repeat (time_per_image_clocks)


def time_per_image(datas: Sequence[bytes], pipelines: "OrderedDict[str, Pipeline]", repeats: int = 5,
                   log: Optional[Callable[[str], None]] = None) -> Dict[str, List[float]]:
    """Seconds per file for each pipeline: the median of ``repeats`` calls, round-robin in a
    shuffled order, each after an untimed call on the previous file (wall clock; see the
    module's docstring)."""
    return time_per_image_clocks(datas, pipelines, repeats, log)[0]


def time_per_image_clocks(datas: Sequence[bytes], pipelines: "OrderedDict[str, Pipeline]", repeats: int = 5,
                          log: Optional[Callable[[str], None]] = None
                          ) -> Tuple[Dict[str, List[float]], Dict[str, List[float]]]:
    """Like :func:`time_per_image`, by wall clock and by this process's CPU time.

    CPU time leaves out the time other processes held the core, so on a shared machine
    its ratios are the steadier ones (it still counts cache and memory contention); it
    counts every thread of the process, so a library working on helper threads is not
    flattered.
    """
    for pipe in pipelines.values():  # warm-up: first-call costs (imports, pools, allocations)
        _check_output(pipe, pipe.per_image(datas[0]))
    wall = {k: [[] for _ in datas] for k in pipelines}  # type: Dict[str, List[List[float]]]
    cpu = {k: [[] for _ in datas] for k in pipelines}  # type: Dict[str, List[List[float]]]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    order = list(pipelines.items())
    shuffler = random.Random(ORDER_SEED)
    try:
        for r in range(repeats):
            for i, data in enumerate(datas):
                shuffler.shuffle(order)
                for key, pipe in order:
                    pipe.per_image(datas[i - 1])  # untimed: the pipeline's code warm, as in a loop over images
                    c0 = time.process_time()
                    t0 = time.perf_counter()
                    pipe.per_image(data)
                    t1 = time.perf_counter()
                    c1 = time.process_time()
                    wall[key][i].append(t1 - t0)
                    cpu[key][i].append(c1 - c0)
            if log:
                log("  repeat %d/%d done" % (r + 1, repeats))
    finally:
        if gc_was_enabled:
            gc.enable()
    medians = lambda samples: {k: [statistics.median(s) for s in v] for k, v in samples.items()}  # noqa: E731
    return medians(wall), medians(cpu)


def time_batches(datas: Sequence[bytes], semantics: Sequence[str] = SEMANTICS, threads: Sequence[int] = (1, 2),
                 resize: int = 256, crop: Tuple[int, int] = (224, 224), repeats: int = 5) -> Dict[str, Dict[int, float]]:
    """Seconds per image of whole-batch engine runs: ``{engine key: {threads: s}}`` (median of repeats)."""
    engines = {}
    for s in semantics:
        for t in threads:
            engines[(s, t)] = _engine_callables(s, resize, crop, t)[1]
    for (s, t), batch in engines.items():
        _check_output(Pipeline(engine_key(s), "", lambda d: None), batch(datas))
    samples = {key: [] for key in engines}  # type: Dict[Tuple[str, int], List[float]]
    for _ in range(repeats):
        for key, batch in engines.items():
            t0 = time.perf_counter()
            batch(datas)
            samples[key].append((time.perf_counter() - t0) / len(datas))
    out = {}  # type: Dict[str, Dict[int, float]]
    for (s, t), v in samples.items():
        out.setdefault(engine_key(s), {})[t] = statistics.median(v)
    return out


# --------------------------------------------------------------------------- targets

# The issues' speed targets: (set, claim, numerator, denominator, bound, kind). For
# kind "within" the engine's time over the reference's must be <= bound; for
# "faster" the reference's time over the engine's must be >= bound (or > bound when
# bound is 1.0, "faster than").
TARGETS = [
    ("imagenet_like", "pil within 1.25x of a full decode", "ibnedge_pil", FLOOR_FULL, 1.25, "within"),
    ("imagenet_like", "mindspore within 1.05x of a full decode", "ibnedge_mindspore", FLOOR_FULL, 1.05, "within"),
    # The same against the engine's own libjpeg-turbo, free of the library-version gap.
    ("imagenet_like", "pil within 1.25x of the same library's decode", "ibnedge_pil", FLOOR_SYSTEM, 1.25, "within"),
    ("imagenet_like", "mindspore within 1.05x of the same library's decode", "ibnedge_mindspore", FLOOR_SYSTEM,
     1.05, "within"),
    ("imagenet_like", "pil >= 3x faster than MindSpore ops", "ibnedge_pil", MINDSPORE_OPS, 3.0, "faster"),
    ("imagenet_like", "mindspore >= 3x faster than MindSpore ops", "ibnedge_mindspore", MINDSPORE_OPS, 3.0, "faster"),
    ("imagenet_like", "pil >= 4x faster than OpenCV", "ibnedge_pil", OPENCV, 4.0, "faster"),
    ("imagenet_like", "mindspore >= 4x faster than OpenCV", "ibnedge_mindspore", OPENCV, 4.0, "faster"),
    ("phone_like", "fast within 1.2x of a DCT-scaled decode", "ibnedge_fast", FLOOR_SCALED, 1.2, "within"),
    ("phone_like", "fast >= 8x faster than MindSpore ops", "ibnedge_fast", MINDSPORE_OPS, 8.0, "faster"),
    ("phone_like", "fast faster than simplejpeg scaled + cv2 + numpy", "ibnedge_fast", SIMPLEJPEG_CV2, 1.0, "faster"),
    ("phone_like", "pil >= 3x faster than MindSpore ops", "ibnedge_pil", MINDSPORE_OPS, 3.0, "faster"),
    ("phone_like", "mindspore >= 3x faster than MindSpore ops", "ibnedge_mindspore", MINDSPORE_OPS, 3.0, "faster"),
    # The same comparisons against the tuned numpy normalisation (stricter than the issue).
    ("imagenet_like", "pil >= 4x faster than OpenCV, tuned numpy", "ibnedge_pil", OPENCV_TUNED, 4.0, "faster"),
    ("imagenet_like", "mindspore >= 4x faster than OpenCV, tuned numpy", "ibnedge_mindspore", OPENCV_TUNED, 4.0,
     "faster"),
    ("phone_like", "fast faster than simplejpeg + cv2, tuned numpy", "ibnedge_fast", SIMPLEJPEG_CV2_TUNED, 1.0,
     "faster"),
]
THREAD_SCALING_TARGET = 1.8


def check_targets(sets: Dict[str, Dict[str, Any]], clock: str = "median_ms") -> List[Dict[str, Any]]:
    """Each target with its measured ratio and verdict (``None`` when a pipeline is missing).

    ``clock``: ``"median_ms"`` (wall clock) or ``"cpu_median_ms"`` (process CPU time);
    thread scaling is judged by wall clock only.
    """
    rows = []
    for set_name, claim, ours, theirs, bound, kind in TARGETS:
        if set_name not in sets:
            continue
        med = sets[set_name].get(clock, {})
        if ours not in med or theirs not in med:
            rows.append({"set": set_name, "target": claim, "ratio": None, "bound": bound, "kind": kind,
                         "pass": None, "why": "%s not measured here" % (theirs if ours in med else ours)})
            continue
        if kind == "within":
            ratio = med[ours] / med[theirs]
            ok = ratio <= bound
        else:
            ratio = med[theirs] / med[ours]
            ok = ratio > bound if bound == 1.0 else ratio >= bound
        rows.append({"set": set_name, "target": claim, "ratio": ratio, "bound": bound, "kind": kind, "pass": ok})
    for set_name, data in sets.items():
        if clock != "median_ms":
            break
        for key, by_threads in sorted(data.get("batch_ms_per_image", {}).items()):
            if "1" in by_threads and "2" in by_threads:
                ratio = by_threads["1"] / by_threads["2"]
                rows.append({"set": set_name, "target": "%s: 2 threads >= 1.8x one thread" % key.replace("ibnedge_", ""),
                             "ratio": ratio, "bound": THREAD_SCALING_TARGET, "kind": "faster",
                             "pass": ratio >= THREAD_SCALING_TARGET})
    return rows


# --------------------------------------------------------------------------- report


def run_set(name: str, paths: Sequence[Path], repeats: int, resize: int = 256, crop: Tuple[int, int] = (224, 224),
            log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Time every pipeline on one set of files; returns medians in milliseconds."""
    datas = [Path(p).read_bytes() for p in paths]
    load_before = _load_average()
    log("%s: %d files, %.2f MB mean, timing %d repeats" % (
        name, len(datas), np.mean([len(d) for d in datas]) / 1e6, repeats))
    pipes = make_pipelines(resize, crop, threads=1)
    per_file, cpu_per_file = time_per_image_clocks(datas, pipes, repeats=repeats, log=log)
    batches = time_batches(datas, resize=resize, crop=crop, repeats=repeats)
    return {
        "files": [str(p) for p in paths],
        "mean_bytes": float(np.mean([len(d) for d in datas])),
        "labels": {k: p.label for k, p in pipes.items()},
        "median_ms": {k: 1e3 * statistics.median(v) for k, v in per_file.items()},
        "per_file_ms": {k: [1e3 * x for x in v] for k, v in per_file.items()},
        "cpu_median_ms": {k: 1e3 * statistics.median(v) for k, v in cpu_per_file.items()},
        "batch_ms_per_image": {k: {str(t): 1e3 * s for t, s in v.items()} for k, v in batches.items()},
        "load_average": [load_before, _load_average()],
    }


def _load_average() -> Optional[float]:
    """The 1-minute load average (other processes competing for the cores), when the OS says."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def format_report(sets: Dict[str, Dict[str, Any]], targets: List[Dict[str, Any]],
                  cpu_targets: Optional[List[Dict[str, Any]]] = None) -> str:
    """The pipeline table (wall clock and CPU time per set), engine batches, and the targets."""
    names = list(sets)
    clocks = [("median_ms", "wall")] + ([("cpu_median_ms", "cpu")] if all("cpu_median_ms" in sets[n] for n in names)
                                        else [])
    lines = []
    head = "%-66s" % "pipeline (per-image median ms, 1 thread; x floor)" + "".join(
        "%17s" % ("%s %s" % (n, label)) for n in names for _, label in clocks)
    lines.append(head)
    lines.append("-" * len(head))
    keys = [k for k in LABELS if any(k in sets[n]["median_ms"] for n in names)]
    for key in keys:
        cells = []
        for n in names:
            for clock, _ in clocks:
                med = sets[n][clock]
                if key not in med:
                    cells.append("%17s" % "n/a")
                    continue
                floor = med.get(FLOOR_FULL if n != "phone_like" else FLOOR_SCALED)
                ratio = " (%.2fx)" % (med[key] / floor) if floor else ""
                cells.append("%17s" % ("%.2f%s" % (med[key], ratio)))
        lines.append("%-66s" % LABELS[key][:65] + "".join(cells))
    lines.append("(x floor: against the full decode for imagenet_like, the DCT-scaled decode for phone_like)")
    lines.append("")
    lines.append("engine batches, wall ms per image:")
    for n in names:
        for key, by_threads in sorted(sets[n].get("batch_ms_per_image", {}).items()):
            parts = ", ".join("%s thread%s %.2f" % (t, "" if t == "1" else "s", v) for t, v in sorted(by_threads.items()))
            lines.append("  %-14s %-18s %s" % (n, key, parts))
    cpus = os.cpu_count() or 1
    for n in names:
        loads = [v for v in sets[n].get("load_average", []) if v is not None]
        if loads and max(loads) > 0.5 * cpus:
            lines.append("  note: %s ran with load average up to %.1f on %d CPUs: other processes took cores, so "
                         "wall-clock figures and thread scaling are disturbed; CPU-time ratios are steadier"
                         % (n, max(loads), cpus))
    lines.append("")
    cpu_by_target = {(r["set"], r["target"]): r for r in (cpu_targets or [])}
    lines.append("%-14s %-50s %9s %9s %8s  %s" % ("set", "target", "wall", "cpu", "needed", "verdict (wall / cpu)"))
    for row in targets:
        cpu_row = cpu_by_target.get((row["set"], row["target"]))
        if row["ratio"] is None:
            lines.append("%-14s %-50s %9s %9s %8s  n/a (%s)" % (row["set"], row["target"], "-", "-", "-", row["why"]))
            continue
        needed = ("<= %gx" if row["kind"] == "within" else ">= %gx") % row["bound"]
        cpu_ratio = "%8.2fx" % cpu_row["ratio"] if cpu_row and cpu_row["ratio"] is not None else "%9s" % "-"
        verdict = "PASS" if row["pass"] else "FAIL"
        if cpu_row and cpu_row["pass"] is not None:
            verdict += " / " + ("PASS" if cpu_row["pass"] else "FAIL")
        lines.append("%-14s %-50s %8.2fx %s %8s  %s" % (row["set"], row["target"], row["ratio"], cpu_ratio, needed,
                                                         verdict))
    return "\n".join(lines)


def machine_info() -> Dict[str, Any]:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": np.__version__}
    for mod in ("cv2", "PIL", "simplejpeg", "mindspore"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # absent or broken: the report says so instead of failing
            info[mod] = None
    try:
        from ibnedge import _native

        info["engine_libjpeg_turbo"] = _native.jpeg_library()["turbo_version"] or None
    except ImportError:
        info["engine_libjpeg_turbo"] = None
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), None)
    except OSError:
        info["cpu"] = None
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ibnedge import corpus

    parser = argparse.ArgumentParser(prog="python -m ibnedge.bench.preprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=None,
                        help="where the generated corpora are cached (default: %s)" % corpus.default_cache_dir())
    parser.add_argument("--images", type=Path, default=None,
                        help="also time your own JPEG files (every *.jpg / *.jpeg in this folder)")
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    parser.add_argument("--imagenet-count", type=int, default=32, help="ImageNet-like files (default 32)")
    parser.add_argument("--phone-count", type=int, default=4, help="12 MP phone-like files (default 4)")
    parser.add_argument("--phone-grain", type=float, default=3.0,
                        help="sensor-like grain of the phone-like files, grey levels (default 3; 0: a smooth "
                             "upscale, whose sparse entropy-coded data decodes faster)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per file and pipeline (default 5)")
    parser.add_argument("--sets", default="imagenet_like,phone_like", help="comma-separated sets to run")
    args = parser.parse_args(argv)

    root = args.corpus or corpus.default_cache_dir()
    chosen = [s.strip() for s in args.sets.split(",") if s.strip()]
    sets = OrderedDict()  # type: OrderedDict[str, Dict[str, Any]]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    for name in chosen:
        if name == "imagenet_like":
            paths = corpus.imagenet_like(root, count=args.imagenet_count)
        elif name == "phone_like":
            paths = corpus.phone_like(root, count=args.phone_count, grain=args.phone_grain)
        else:
            parser.error("unknown set %r: choose imagenet_like, phone_like" % name)
        sets[name] = run_set(name, paths, repeats=args.repeats, log=log)
    if args.images is not None:
        paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if not paths:
            parser.error("%s holds no .jpg/.jpeg files" % args.images)
        sets["custom"] = run_set("custom", paths, repeats=args.repeats, log=log)
    targets = check_targets(sets)
    cpu_targets = check_targets(sets, clock="cpu_median_ms")
    print(format_report(sets, targets, cpu_targets))
    if args.json is not None:
        payload = {"machine": machine_info(), "sets": sets, "targets": targets, "cpu_targets": cpu_targets}
        args.json.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        print("figures written to %s" % args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
