"""``ibnedge bench``: one table of what limits throughput on this machine.

1. Preprocessing img/s, one thread, per image: the native engine in each mode against
   OpenCV, Pillow and MindSpore's vision ops (the timers of
   :mod:`ibnedge.bench.preprocess`, reused), plus the engine's whole-batch rate at
   1 and ``--threads`` native threads.
2. Per installed backend and batch size: backend-alone latency (ms per call) and img/s
   on preprocessed tensors of real photographs.
3. End-to-end img/s of :meth:`Classifier.predict_iter` (files in, top-5 out, the engine
   preprocessing batch k+1 while the backend runs batch k) at the same batch sizes, and
   its ratio to the backend alone: 100% means preprocessing is fully hidden.
4. With several ``--device-id`` (``0,1,2,3``: the chips of one card), end-to-end img/s at
   the largest batch size per device count 1..K (one backend per device, fed by the same
   preprocessing), and its ratio to one device.

Backend-alone and end-to-end runs are interleaved repeat by repeat, so machine noise hits
both alike; figures are medians over ``--repeat``. One ``--model`` serves every backend
through its siblings: ``net.onnx`` (onnx), ``net_lite.mindir`` (lite), ``net.mindir``
(mindspore), as ``train.export`` and ``ibnedge convert`` name them; weights (``.pth``,
``.ckpt``) and the default model are made into a model for each backend
(:mod:`ibnedge.models`).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError


class BenchSetupError(UserError, RuntimeError):
    """The benchmark cannot start (no model, no backend, no images, no matplotlib...)."""


def _log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- inputs


def bench_files(corpus_dir: Optional[str], count: int) -> List[Path]:
    """``count`` image files: from ``corpus_dir`` (walked, non-images skipped) or the
    generated ImageNet-like corpus; repeated cyclically when there are fewer."""
    from ..files import iter_input_files

    if corpus_dir:
        if not Path(corpus_dir).is_dir():
            raise BenchSetupError("--corpus %s is not a directory" % corpus_dir)
        files = []  # type: List[Path]
        for item in iter_input_files([corpus_dir], skip_non_images=True):
            if item.error is None:
                files.append(Path(item.path))
            if len(files) >= count:
                break
        if not files:
            raise BenchSetupError("--corpus %s holds no image files" % corpus_dir)
    else:
        from .. import corpus

        try:
            files = corpus.imagenet_like(corpus.default_cache_dir())
        except ImportError as exc:
            raise BenchSetupError("building the default corpus needs Pillow and scikit-image (%s): pass --corpus DIR" % exc)
    return [files[i % len(files)] for i in range(count)]


def model_candidates(model: Optional[str], names: Sequence[str], arch: Optional[str]
                     ) -> Tuple[Dict[str, List[Path]], Dict[str, str]]:
    """For each of the backends ``names``, the files to try, and why a backend has none: for
    weights (or no model: the default weights), the model made of them for that backend;
    for a model file, itself if the backend reads it, then its siblings."""
    from ..models import ModelUnavailable, is_weights, made_from, weights_file

    if model is not None and not is_weights(model):
        if not Path(model).is_file():
            raise BenchSetupError("model file not found: %s (check the --model path)" % model)
        return _siblings(Path(model)), {}
    try:
        weights = weights_file(model)
    except ModelUnavailable as exc:
        raise BenchSetupError(str(exc))
    out, reasons = OrderedDict(), OrderedDict()  # type: Dict[str, List[Path]], Dict[str, str]
    for name in names:
        try:
            out[name] = [made_from(weights, name, arch=arch).path]
        except ModelUnavailable as exc:
            out[name], reasons[name] = [], str(exc)
    return out, reasons


def _siblings(model: Path) -> Dict[str, List[Path]]:
    from ..backends import BACKENDS

    stem = model.stem[:-5] if model.stem.endswith("_lite") else model.stem
    siblings = {
        "lite": [stem + "_lite.mindir", stem + ".ms", stem + ".mindir"],
        "mindspore": [stem + ".mindir"],
        "onnx": [stem + ".onnx"],
    }
    out = OrderedDict()  # type: Dict[str, List[Path]]
    for name, cls in BACKENDS.items():
        paths = [model] if cls.accepts(model) else []
        paths += [model.with_name(s) for s in siblings.get(name, []) if model.with_name(s) != model]
        out[name] = [p for p in paths if p.is_file()]
    return out


# --------------------------------------------------------------------------- measurements


def preprocess_table(datas: Sequence[bytes], threads: int, repeats: int) -> Dict[str, Any]:
    """Per-image medians of every available pipeline (1 thread) and engine batch rates."""
    from . import preprocess as pre

    wanted = [pre.engine_key(s) for s in ("pil", "mindspore", "fast")] + [
        pre.OPENCV, pre.PILLOW, pre.MINDSPORE_OPS, pre.FLOOR_FULL,
    ]
    pipes = pre.make_pipelines(threads=1, include=wanted)
    per_file = pre.time_per_image(datas, pipes, repeats=repeats)
    thread_counts = sorted({1, max(threads, 1) if threads else (os.cpu_count() or 1)})
    batches = pre.time_batches(datas, threads=thread_counts, repeats=repeats)
    rows = OrderedDict()  # type: Dict[str, Dict[str, Any]]
    for key, pipe in pipes.items():
        s = statistics.median(per_file[key])
        rows[key] = {"label": pipe.label, "ms_per_image": 1e3 * s, "img_s": 1.0 / s}
    batch_rows = OrderedDict()  # type: Dict[str, Dict[str, float]]
    for key, by_threads in batches.items():
        batch_rows[key] = {str(t): 1.0 / s for t, s in sorted(by_threads.items())}
    missing = OrderedDict((k, pre.LABELS.get(k, k)) for k in wanted if k not in pipes)
    return {"per_image_1_thread": rows, "engine_batch_img_s": batch_rows, "not_available": missing}


def _time_backend(clf: Any, tensors: Sequence[np.ndarray]) -> float:
    """Seconds for the backend alone over all ``tensors`` (preprocessed batches)."""
    t0 = time.perf_counter()
    for t in tensors:
        clf.backend.run(t)
    return time.perf_counter() - t0


def _time_end_to_end(clf: Any, files: Sequence[Path]) -> float:
    t0 = time.perf_counter()
    n = 0
    for p in clf.predict_iter(files, topk=5):
        if not p.ok:
            raise BenchSetupError("%s failed in the end-to-end run: %s" % (p.source, p.error))
        n += 1
    if n != len(files):
        raise RuntimeError("end-to-end run returned %d of %d predictions" % (n, len(files)))
    return time.perf_counter() - t0


def device_table(make: Callable[[Sequence[int]], Any], name: str, device_ids: Sequence[int],
                 files: Sequence[Path], batch: int, repeats: int,
                 log: Callable[[str], None] = _log) -> List[Dict[str, Any]]:
    """End-to-end img/s with the first 1, 2, ..., K of ``device_ids`` (``make(ids)`` builds
    the classifier), repeats interleaved across the counts so drift hits them alike."""
    # Two batches per device at the most devices at least: fewer would leave devices idle and
    # time the count below it again.
    n = max((len(files) // batch) * batch, 2 * batch * len(device_ids))
    use = [files[i % len(files)] for i in range(n)]
    counts = list(range(1, len(device_ids) + 1))
    runs = OrderedDict()  # type: Dict[int, List[float]]
    classifiers = OrderedDict()  # type: Dict[int, Any]
    try:
        for k in counts:
            classifiers[k] = make(device_ids[:k])
            _time_end_to_end(classifiers[k], use[: batch * k])  # warm-up: as many batches as devices
            runs[k] = []
        for r in range(repeats):
            for k in counts:
                runs[k].append(n / _time_end_to_end(classifiers[k], use))
                log("  %s, %d device%s, batch %d, repeat %d/%d: end-to-end %.2f img/s"
                    % (name, k, "" if k == 1 else "s", batch, r + 1, repeats, runs[k][-1]))
    finally:
        for clf in classifiers.values():
            clf.close()
    rows = []
    for k in counts:
        rows.append({
            "backend": name,
            "devices": k,
            "device_ids": list(device_ids[:k]),
            "batch": batch,
            "images": n,
            "end_to_end_img_s": statistics.median(runs[k]),
            "end_to_end_img_s_runs": runs[k],
            # paired per repeat against one device, then the median
            "relative_to_1_device": statistics.median(x / y for x, y in zip(runs[k], runs[1])),
        })
    return rows


def backend_table(classifiers: Sequence[Any], files: Sequence[Path], batch_sizes: Sequence[int], repeats: int,
                  log: Callable[[str], None] = _log) -> List[Dict[str, Any]]:
    """Backend-alone and end-to-end figures per backend and batch size.

    Within a batch size, every repeat runs each backend alone and then end to end, backend
    after backend, so a noisy neighbour slows all of them alike and their ratios hold.
    """
    rows = []
    tensor_all = classifiers[0].preprocessor.run([str(f) for f in files]).tensor
    for b in batch_sizes:
        n = (len(files) // b) * b or b  # whole batches, so both runs make the same calls
        use = [files[i % len(files)] for i in range(n)]
        tensors = [np.ascontiguousarray(tensor_all[np.arange(i, i + b) % len(files)]) for i in range(0, n, b)]
        samples = OrderedDict()  # type: Dict[str, Dict[str, List[float]]]
        for clf in classifiers:
            clf.batch = b
            clf.backend.run(tensors[0])  # warm-up: first-call graph build / shape resize
            _time_end_to_end(clf, use[:b])
            samples[clf.backend.name] = {"alone": [], "e2e": [], "latency": []}
        for r in range(repeats):
            for clf in classifiers:
                s = samples[clf.backend.name]
                t_alone = _time_backend(clf, tensors)
                s["alone"].append(n / t_alone)
                s["latency"].append(1e3 * t_alone / len(tensors))
                s["e2e"].append(n / _time_end_to_end(clf, use))
                log("  batch %d repeat %d/%d %s: backend %.2f img/s, end-to-end %.2f img/s"
                    % (b, r + 1, repeats, clf.backend.name, s["alone"][-1], s["e2e"][-1]))
        for clf in classifiers:
            s = samples[clf.backend.name]
            row = {
                "backend": clf.backend.name,
                "model": str(clf.backend.model_path),
                "batch": b,
                "images": n,
                "latency_ms": statistics.median(s["latency"]),
                "backend_img_s": statistics.median(s["alone"]),
                "end_to_end_img_s": statistics.median(s["e2e"]),
                "backend_img_s_runs": s["alone"],
                "end_to_end_img_s_runs": s["e2e"],
            }
            # Paired per repeat (the two runs are back to back), then the median: steadier than a
            # ratio of medians when the machine's speed drifts during the benchmark.
            row["e2e_over_backend"] = statistics.median(e / a for e, a in zip(s["e2e"], s["alone"]))
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- report


def format_table(result: Dict[str, Any]) -> str:
    lines = []
    pre = result.get("preprocess")
    if pre:
        lines.append("preprocessing (decode, resize 256, crop 224, normalise; %d files)" % result["files"])
        lines.append("  %-74s %10s %8s" % ("pipeline, 1 thread, per image", "ms/img", "img/s"))
        for key, row in pre["per_image_1_thread"].items():
            lines.append("  %-74s %10.2f %8.1f" % (row["label"], row["ms_per_image"], row["img_s"]))
        for key, by_threads in pre["engine_batch_img_s"].items():
            parts = ", ".join("%s thread%s %.1f img/s" % (t, "" if t == "1" else "s", v) for t, v in by_threads.items())
            lines.append("  %-74s %s" % ("engine batch, " + key.replace("ibnedge_", "") + " mode", parts))
        for label in pre.get("not_available", {}).values():
            lines.append("  %-74s %s" % (label, "not installed here"))
        lines.append("")
    rows = result.get("backends", [])
    if rows:
        lines.append("inference (threads=%s, preprocessing %s)" % (result["threads"], result.get("semantics")))
        lines.append("  %-10s %6s %12s %14s %16s %10s  %s" % (
            "backend", "batch", "latency ms", "backend img/s", "end-to-end img/s", "e2e/backend", "model"))
        lines.append("  (medians over repeats; e2e/backend is the median of each repeat's back-to-back ratio)")
        for r in rows:
            lines.append("  %-10s %6d %12.1f %14.2f %16.2f %9.1f%%  %s" % (
                r["backend"], r["batch"], r["latency_ms"], r["backend_img_s"], r["end_to_end_img_s"],
                100.0 * r["e2e_over_backend"], Path(r["model"]).name))
        ratios = result.get("ratios", [])
        if ratios:
            lines.append("")
            lines.append("  same model, threads and batch, backend img/s relative to onnx (ONNX Runtime), median of repeats:")
            for r in ratios:
                lines.append("    batch %-4d %s" % (r["batch"], ", ".join(
                    "%s %.2fx" % (k, v) for k, v in r["relative_to_onnx"].items())))
    devices = result.get("devices", [])
    if devices:
        lines.append("")
        lines.append("end to end per device count (batch %d, one backend per device; medians, ratio paired per repeat)"
                     % devices[0]["batch"])
        lines.append("  %-10s %8s %16s %12s  %s" % ("backend", "devices", "end-to-end img/s", "vs 1 device", "ids"))
        for r in devices:
            lines.append("  %-10s %8d %16.2f %11.2fx  %s" % (
                r["backend"], r["devices"], r["end_to_end_img_s"], r["relative_to_1_device"],
                ",".join(str(i) for i in r["device_ids"])))
    skipped = result.get("skipped_backends")
    if skipped:
        lines.append("")
        for name, why in skipped.items():
            lines.append("  %s: not measured (%s)" % (name, why))
    return "\n".join(lines)


def _relative_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for b in sorted({r["batch"] for r in rows}):
        at = {r["backend"]: r for r in rows if r["batch"] == b}
        if "onnx" in at and len(at) > 1:
            ref = at["onnx"]["backend_img_s_runs"]
            out.append({"batch": b, "relative_to_onnx": OrderedDict(
                (k, statistics.median(x / y for x, y in zip(v["backend_img_s_runs"], ref)))
                for k, v in at.items() if k != "onnx")})
    return out


def _require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise BenchSetupError("--plot needs matplotlib: pip install matplotlib (the ibnedge[bench] extra)")
    return matplotlib


def plot(result: Dict[str, Any], path: str) -> None:
    _require_matplotlib().use("Agg")
    import matplotlib.pyplot as plt

    rows = result.get("backends", [])
    pre = result.get("preprocess")
    fig, axes = plt.subplots(1, 2 if pre else 1, figsize=(13 if pre else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    batches = sorted({r["batch"] for r in rows})
    names = list(OrderedDict((r["backend"], None) for r in rows))
    width = 0.8 / max(1, 2 * len(names))
    for i, name in enumerate(names):
        for j, (key, label) in enumerate((("backend_img_s", "backend"), ("end_to_end_img_s", "end-to-end"))):
            ys = [next((r[key] for r in rows if r["backend"] == name and r["batch"] == b), 0.0) for b in batches]
            xs = [k + (2 * i + j) * width - 0.4 + width / 2 for k in range(len(batches))]
            ax.bar(xs, ys, width, label="%s %s" % (name, label))
    ax.set_xticks(range(len(batches)))
    ax.set_xticklabels([str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_title("inference, %s threads" % result["threads"])
    ax.legend(fontsize=8)
    if pre:
        ax = axes[0][1]
        items = list(pre["per_image_1_thread"].values())
        ax.barh([r["label"][:48] for r in items], [r["img_s"] for r in items])
        ax.set_xlabel("images / s (1 thread)")
        ax.set_title("preprocessing")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------- entry point


def run_bench(args: Any) -> int:
    """``ibnedge bench`` (argparse namespace from :mod:`ibnedge.cli`)."""
    from ..backends import AUTO_ORDER, BackendError, get_backend_class
    from ..classifier import Classifier

    # Everything that can be checked cheaply is checked before minutes of loading and measuring.
    if args.plot:
        _require_matplotlib()
    for flag, target in (("--json", args.json), ("--plot", args.plot)):
        folder = Path(target).resolve().parent if target else None
        if folder is not None and not folder.is_dir():
            raise BenchSetupError("%s %s: folder %s does not exist" % (flag, target, folder))
    files = bench_files(args.corpus, args.images)
    names = list(args.backend)
    device_ids = list(args.device_id) if isinstance(args.device_id, (list, tuple)) else [args.device_id]
    if "auto" in names:
        names = [n for n in AUTO_ORDER if get_backend_class(n).installed()]
    installed = [n for n in names if get_backend_class(n).installed()]
    candidates, unmade = model_candidates(args.model, installed, args.arch)

    # Load every backend first: a model nothing can run fails before minutes of timing.
    classifiers = []  # type: List[Any]
    skipped = OrderedDict()  # type: Dict[str, str]
    for name in names:
        if not get_backend_class(name).installed():
            skipped[name] = "not installed"
            continue
        clf, reasons = None, []
        for path in candidates.get(name, []):
            try:
                clf = Classifier(model=path, backend=name, device=args.device, device_id=device_ids[0],
                                 threads=args.threads, batch=max(args.batch), preprocess=args.preprocess,
                                 accept_damaged=args.accept_damaged, max_pixels=args.max_pixels)
                break
            except (BackendError, ValueError) as exc:
                reasons.append(str(exc).splitlines()[0])
        if clf is None:
            skipped[name] = "; ".join(reasons) or unmade.get(name) or "no model file it reads beside %s" % args.model
        else:
            classifiers.append(clf)
    if not classifiers:
        raise BenchSetupError("no backend could run the model: " + "; ".join("%s: %s" % kv for kv in skipped.items()))

    result = OrderedDict()  # type: Dict[str, Any]
    result["files"] = len(files)
    result["threads"] = args.threads
    result["repeat"] = args.repeat
    result["python"] = sys.version.split()[0]
    result["semantics"] = classifiers[0].spec.semantics
    if not args.skip_preprocess:
        _log("timing preprocessing on %d files..." % len(files))
        result["preprocess"] = preprocess_table([f.read_bytes() for f in files], args.threads, args.repeat)

    _log("timing %s..." % ", ".join("%s on %s" % (c.backend.name, c.backend.model_path) for c in classifiers))
    try:
        rows = backend_table(classifiers, files, args.batch, args.repeat)
    finally:
        for clf in classifiers:
            clf.close()
    if len(device_ids) > 1:
        result["devices"] = []
        for clf in classifiers:
            def make(ids, clf=clf):
                return Classifier(model=clf.model_path, backend=clf.backend.name, device=args.device, device_id=ids,
                                  threads=args.threads, batch=max(args.batch), preprocess=args.preprocess)

            _log("timing %s on devices %s..." % (clf.backend.name, ",".join(str(i) for i in device_ids)))
            result["devices"] += device_table(make, clf.backend.name, device_ids, files, max(args.batch), args.repeat)
    result["backends"] = rows
    result["ratios"] = _relative_rows(rows)
    result["skipped_backends"] = skipped

    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        _log("wrote %s" % args.json)
    if args.plot:
        plot(result, args.plot)
        _log("wrote %s" % args.plot)
    return 0
