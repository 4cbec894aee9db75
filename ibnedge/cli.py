"""The ``ibnedge`` command: ``infer``, ``bench``, ``convert``, ``doctor``.

Parses and validates flags, calls the library (:class:`ibnedge.Classifier`,
:func:`ibnedge.convert.convert_to_lite`, :mod:`ibnedge.bench.app`), nothing else.
Exit status: 0 when the run completed (bad input files are rows, not failures), 2 for
bad flags and user errors (one line on stderr naming the fix; see :mod:`ibnedge.errors`),
1 with a traceback for anything else (a bug), 130 on Ctrl-C; ``doctor`` exits 1 when this
box cannot run the model. ``--debug`` or ``IBNEDGE_DEBUG=1`` adds the traceback to a user error.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import OrderedDict
from typing import List, Optional, Sequence

from . import choices, cpu_isa
from .errors import EXIT_USER_ERROR, UserError, add_debug_flag, is_user_error, one_line, run_reporting

EXIT_OK = 0
EXIT_SETUP = EXIT_USER_ERROR
EXIT_INTERRUPTED = 130


class SetupError(UserError):
    """Raised by the command functions for one-line, exit-2 failures of their own."""


class _Parser(argparse.ArgumentParser):
    """argparse with ONE line per usage error (the usage is one --help away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_SETUP, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError("expected %s, got %r" % (what, text))
        return value

    return parse


_positive = _int_at_least(1, "a positive integer")
_non_negative = _int_at_least(0, "an integer >= 0")


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated positive integers like 1,8,32, got %r" % text)
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected comma-separated positive integers like 1,8,32, got %r" % text)
    return values


def _device_ids(text: str) -> List[int]:
    """``--device-id 0`` or ``0,1,2,3`` (one backend per device)."""
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        ids = []
    if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError("expected a device index or distinct indices like 0,1,2,3, got %r" % text)
    return ids


def _name_list(allowed: Sequence[str]):
    def parse(text: str) -> List[str]:
        names = list(OrderedDict.fromkeys(v.strip() for v in text.split(",") if v.strip()))  # once each
        bad = [n for n in names if n not in allowed]
        if not names or bad:
            raise argparse.ArgumentTypeError(
                "unknown %r: give a comma-separated list of %s" % (",".join(bad) or text, ", ".join(allowed))
            )
        return names

    return parse


def _add_model_flags(p: argparse.ArgumentParser, multi_backend: bool = False) -> None:
    g = p.add_argument_group("model and runtime")
    g.add_argument(
        "--model",
        metavar="FILE",
        help="a .mindir, .onnx or .ms model; official .pth weights (made into an ONNX or Lite model once, without "
        "PyTorch or MindSpore); or a MindSpore .ckpt (exported once, needs MindSpore); default: the official "
        "resnet50_ibn_a ImageNet weights, downloaded and made into a model once (mirror: $IBNEDGE_WEIGHTS_URL)",
    )
    g.add_argument("--arch", metavar="NAME",
                   help="architecture of .pth/.ckpt weights, e.g. resnet50_ibn_a (default: read from the file)")
    if multi_backend:
        g.add_argument(
            "--backend", type=_name_list(choices.BACKEND_CHOICES), default=[choices.AUTO], metavar="LIST",
            help="comma-separated backends to measure (%s; auto = every installed one that loads the model); "
            "default: auto" % ", ".join(choices.BACKENDS),
        )
    else:
        g.add_argument(
            "--backend", choices=choices.BACKEND_CHOICES, default=choices.AUTO,
            help="inference runtime; auto = %s, the first installed that loads the model" % ", then ".join(choices.BACKENDS),
        )
    g.add_argument("--device", choices=choices.DEVICES, default="cpu",
                   help="device to run on (default: cpu); for the mindspore backend, " + cpu_isa.HELP)
    g.add_argument(
        "--device-id", type=_device_ids, default=[0], metavar="N[,N...]",
        help="device index, or several (0,1,2,3: one backend per chip, batches dealt to whichever is free; "
        "default: 0); with ASCEND_RT_VISIBLE_DEVICES set, an index into the chips it lists",
    )
    g.add_argument(
        "--threads", type=_non_negative, default=0, metavar="N",
        help="CPU threads for the backend and the preprocessing engine (default: 0 = their defaults)",
    )
    g.add_argument(
        "--preprocess", choices=choices.SEMANTICS, default=None,
        help="resize semantics (default: what the model's metadata says): pil = torchvision/PIL, "
        "mindspore = mindspore.dataset ops, fast = DCT-domain reduction (throughput)",
    )


def _add_decode_flags(p: argparse.ArgumentParser) -> None:
    from .formats import PILLOW_MAX_PIXELS

    g = p.add_argument_group("image decoding")
    g.add_argument(
        "--accept-damaged", action="store_true",
        help="classify truncated and corrupt JPEGs as libjpeg fills them in (grey where it cannot decode) "
        "instead of reporting them as errors",
    )
    g.add_argument(
        "--max-pixels", type=_positive, default=PILLOW_MAX_PIXELS, metavar="N",
        help="refuse images whose header claims more pixels; each image may also hold at most 4 bytes per pixel "
        "of N while it is decoded (default: %d, Pillow's limit)" % PILLOW_MAX_PIXELS,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ibnedge",
        description="IBN-Net image classification on MindSpore Lite, MindSpore or ONNX Runtime.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version="ibnedge " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "infer",
        help="classify image files and directories",
        description="Classify every file under PATH... (directories recursively). Every file yields exactly one "
        "row: its top-k classes, or the reason it could not be classified. Exit status 0 past bad files.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or directories")
    _add_model_flags(p)
    p.add_argument("--batch", type=_positive, default=8, metavar="N", help="images per backend call (default: 8)")
    p.add_argument("--topk", type=_positive, default=5, metavar="K", help="classes per image (default: 5)")
    p.add_argument(
        "--output", metavar="FILE",
        help="write rows to FILE (.jsonl or .csv by suffix; replaced unless --resume); default: a table on stdout"
    )
    p.add_argument(
        "--resume", action="store_true", help="skip files already in --output and append the rest (after a kill)"
    )
    p.add_argument(
        "--skip-non-images", action="store_true",
        help="inside directories, skip files whose content is not an image instead of reporting them",
    )
    p.add_argument("--exif-orientation", action="store_true", help="apply EXIF orientation (default: ignore, as training does)")
    _add_decode_flags(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary on stderr")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser(
        "bench",
        help="measure preprocessing, backends and the end-to-end pipeline",
        description="Measure on one corpus: preprocessing img/s (native engine modes vs OpenCV, Pillow, MindSpore "
        "vision ops), backend latency and img/s per batch size, end-to-end pipelined img/s. Prints one table.",
    )
    _add_model_flags(p, multi_backend=True)
    _add_decode_flags(p)
    p.add_argument("--corpus", metavar="DIR", help="images to use (default: an ImageNet-like set built from scikit-image photographs)")
    p.add_argument("--batch", type=_int_list, default=[1, 8, 32], metavar="LIST", help="batch sizes (default: 1,8,32)")
    p.add_argument("--images", type=_positive, default=64, metavar="N", help="images per measurement (default: 64)")
    p.add_argument("--repeat", type=_positive, default=3, metavar="N", help="repetitions; medians are reported (default: 3)")
    p.add_argument("--skip-preprocess", action="store_true", help="skip the preprocessing comparison")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="also draw a throughput chart (needs matplotlib)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "convert",
        help="convert an ONNX or MINDIR model to a MindSpore Lite MINDIR",
        description="Convert MODEL (.onnx, or .mindir from a compatible MindSpore) with MindSpore Lite's converter; "
        "MODEL's metadata (embedded in an ONNX file, or the JSON beside it) is written beside the output.",
    )
    p.add_argument("model", metavar="MODEL", help=".onnx or .mindir file")
    p.add_argument("--to", choices=("lite",), required=True, help="target format (lite: Lite MINDIR)")
    p.add_argument("--output", "-o", metavar="FILE", help="output .mindir (default: MODEL's stem + _lite.mindir)")
    p.add_argument(
        "--optimize", choices=choices.OPTIMIZE_LEVELS, default=None,
        help="general: fused for CPU/GPU; ascend_oriented: for Ascend (= --device ascend); none: portable "
        "(default: general, or ascend_oriented for --device ascend)",
    )
    p.add_argument("--fp16", action="store_true", help="store float32 weights as float16 (CPU)")
    from .ascend_config import DEFAULT_PRECISION, DEFAULT_SOC

    p.add_argument(
        "--device", choices=choices.CONVERT_DEVICES, default="cpu",
        help="the runtime device the model is for (default: cpu); ascend writes the chip's converter "
        "configuration beside the output (OUTPUT.ascend.ini) and converts with it",
    )
    p.add_argument(
        "--batch", type=_int_list, metavar="LIST",
        help="static batch sizes (needed for ascend: the 310 has no dynamic shapes): one (8) or profiles "
        "(1,8,32); at run time each call gets the smallest that holds it. On cpu each size is a model file",
    )
    p.add_argument("--soc", choices=list(choices.SOCS), default=None,
                   help="the Ascend chip the model is for (default: %s)" % DEFAULT_SOC)
    p.add_argument(
        "--precision", choices=choices.precisions("ascend"), default=None,
        help="Ascend precision (default: %s = fp16 convolutions and BatchNorm, InstanceNorm and the head in "
        "fp32; fp16 = the converter's default, InstanceNorm overflows)" % DEFAULT_PRECISION,
    )
    p.add_argument(
        "--config-only", action="store_true",
        help="ascend: write the configuration and print the converter_lite command for the box (exit 2)",
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "doctor",
        help="check this box: Python, engine, runtimes, Ascend toolkit and chips, a model",
        description="Check what this box needs to run a model: Python, the native engine (SIMD path, "
        "libjpeg-turbo), each runtime and its device plugins, the Ascend toolkit, driver and chips, and with "
        "--model the model's metadata, batch profiles and which backends load it. One line per problem with "
        "its fix; exit 0 when the box can run the model (or, without --model, its device), 1 otherwise.",
    )
    p.add_argument("--model", metavar="FILE", help="a model to check (its metadata, profiles, which backends load it)")
    p.add_argument("--device", choices=choices.DEVICES, default=None,
                   help="the device to check for (default: the model's, else cpu)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=cmd_doctor)
    for command_parser in sub.choices.values():
        add_debug_flag(command_parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_reporting(lambda: args.func(args), "ibnedge %s: error: " % args.command, args.debug)
    except KeyboardInterrupt:
        sys.stderr.write("\nibnedge: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `ibnedge infer dir | head` (no file name: not a user error)
        return EXIT_OK


def _make_classifier(args: argparse.Namespace, backend: str, batch: int):
    from .classifier import Classifier

    return Classifier(
        model=args.model, backend=backend, device=args.device, device_id=args.device_id, threads=args.threads,
        batch=batch, preprocess=args.preprocess, arch=args.arch,
        exif_orientation=getattr(args, "exif_orientation", False), accept_damaged=args.accept_damaged,
        max_pixels=args.max_pixels,
        progress=None if not getattr(args, "quiet", False) else False,
    )


def cmd_infer(args: argparse.Namespace) -> int:
    from .files import PathKeys, count_input_files, iter_input_files
    from .results import Progress, load_done, open_writer, output_format

    if args.resume and not args.output:
        raise SetupError("--resume needs --output FILE (.jsonl or .csv): it reads what that file already holds")
    # Read-only checks of --output before the model loads (which may mean a download and an
    # export); the file is opened, and so truncated, only after the model has loaded: a
    # setup failure must not destroy earlier results.
    if args.output:
        output_format(args.output)
    done = load_done(args.output, args.topk) if args.resume else set()
    clf = _make_classifier(args, args.backend, args.batch)
    try:
        writer = open_writer(args.output, args.topk, resume=args.resume)
    except BaseException:
        clf.close()
        raise

    progress = Progress(enabled=None if not args.quiet else False)
    skipped = [0]

    keys = PathKeys()

    def pending():
        for item in iter_input_files(args.paths, skip_non_images=args.skip_non_images):
            if done and keys(item.path) in done:
                skipped[0] += 1
                continue
            yield item

    if progress.enabled:
        # Counting walks the tree a second time, cheaply, so the bar can show an ETA.
        def count() -> None:
            progress.total = count_input_files(args.paths, args.skip_non_images) - len(done)

        threading.Thread(target=count, name="ibnedge-count", daemon=True).start()

    rows = errors = 0
    start = time.monotonic()
    try:
        with writer:
            for prediction in clf.predict_iter(pending(), topk=args.topk):
                writer.write(prediction.to_dict())
                rows += 1
                errors += 0 if prediction.ok else 1
                progress.update()
    except Exception as exc:
        if not is_user_error(exc):
            raise
        # A backend or output failure mid-run: the rows written so far stay, so --resume continues.
        hint = "; rerun with --resume to continue" if args.output else ""
        raise SetupError("%s (after %d rows%s)" % (one_line(exc), rows, hint)) from exc
    finally:
        progress.close()
        clf.close()
    elapsed = time.monotonic() - start
    if not args.quiet:
        good = rows - errors
        sys.stderr.write(
            "ibnedge: %d files, %d errors%s, %.1f img/s (%.1f s, backend %s, %s preprocessing)\n"
            % (rows, errors, ", %d already done" % skipped[0] if args.resume else "",
               good / elapsed if elapsed > 0 else 0.0, elapsed, clf.backend.name, clf.spec.semantics)
        )
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import FinishOnBox, convert_to_lite

    try:
        out = convert_to_lite(args.model, args.output, optimize=args.optimize, fp16=args.fp16, device=args.device,
                              batch_sizes=args.batch, soc=args.soc, precision=args.precision,
                              config_only=args.config_only)
    except FinishOnBox as exc:  # the configuration is written; the conversion needs the Ascend toolkit
        sys.stderr.write("ibnedge convert: %s\n" % one_line(exc))
        return EXIT_SETUP
    sys.stderr.write("ibnedge: wrote %s\n" % out)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import diagnose, format_report

    report = diagnose(model=args.model, device=args.device)
    if args.json:
        import json

        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return EXIT_OK if report.ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.app import run_bench

    return run_bench(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
