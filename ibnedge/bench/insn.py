"""Executed-instruction counts of the engine per image, aarch64 and x86, vector and scalar
kernels, every semantics, beside libjpeg-turbo's own full decode (``djpeg``) of the same
files: the repeatable speed measure for a CPU we do not have (QEMU user-mode emulation and
a TCG plugin that counts instructions; counts, not Cortex-A55 cycles).

    python -m ibnedge.bench.insn [--images 16] [--phone 2] [--json FILE]

Needs a source checkout (it cross-builds through ``tests/arm64.sh setup``, which installs
the cross toolchain and qemu-user and caches an arm64 sysroot with djpeg) and the plugin
source ``shared/tools/qemu-insn-count/insncount.c`` (found above the checkout, or
``$IBNEDGE_INSNCOUNT_SRC``), built into the cross cache.

Per image = (count of the batch run twice - count of it run once) / images, one engine
thread (``tensor_dump --threads 1 --repeat N``): start-up, file lists and the engine's
construction cancel out. djpeg decodes one file per process: its per-image figure is its
count on the file minus its count on an 8x8 JPEG (start-up and linking). x86 runs under
``qemu-x86_64 -cpu max`` (AVX2); "scalar" is ``IBNEDGE_SIMD=off`` (the engine's portable
kernel, libjpeg-turbo's SIMD unchanged). ``--x86-driver``/``--aarch64-driver`` count other
builds of ``tensor_dump`` (e.g. an older commit's, for before/after).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ibnedge.metadata import SEMANTICS

REPO = Path(__file__).resolve().parents[2]
PLUGIN_SOURCE = Path("shared") / "tools" / "qemu-insn-count" / "insncount.c"
ARCHS = ("aarch64", "x86")
KERNELS = ("vector", "scalar")


def cross_cache() -> Path:
    """Where tests/arm64.sh keeps the arm64 sysroot (and this module its plugin build)."""
    return Path(os.environ.get("IBNEDGE_CROSS_CACHE") or Path.home() / ".cache" / "ibnedge-cross")


def _plugin_source() -> Path:
    configured = os.environ.get("IBNEDGE_INSNCOUNT_SRC")
    candidates = [Path(configured)] if configured else [p / PLUGIN_SOURCE for p in REPO.parents]
    for path in candidates:
        if path.is_file():
            return path
    raise SystemExit("insncount.c not found (looked for %s above %s); set IBNEDGE_INSNCOUNT_SRC" % (PLUGIN_SOURCE, REPO))


def build_plugin() -> Path:
    source = _plugin_source()
    out = cross_cache() / "insncount" / "libinsncount.so"
    if not out.exists() or out.stat().st_mtime < source.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(out), str(source), "-lpthread"], check=True)
    return out


class Counter:
    """Runs guest programs under qemu with the counting plugin and returns their totals."""

    def __init__(self, plugin: Path, workdir: Path) -> None:
        sysroot = cross_cache() / "sysroot"
        libs = [sysroot / "usr/lib/aarch64-linux-gnu", sysroot / "lib/aarch64-linux-gnu",
                Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/aarch64-linux-gnu/lib")]
        self.plugin = plugin
        self.workdir = workdir
        self.sysroot = sysroot
        self.library_path = ":".join(str(p) for p in libs)
        self.runs = 0

    def count(self, arch: str, argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> int:
        self.runs += 1
        out = self.workdir / ("count-%d.txt" % self.runs)
        qemu = ["qemu-x86_64", "-cpu", "max"] if arch == "x86" else ["qemu-aarch64", "-E", "LD_LIBRARY_PATH=" + self.library_path]
        for key, value in (env or {}).items():
            qemu += ["-E", "%s=%s" % (key, value)]
        qemu += ["-plugin", "%s,out=%s" % (self.plugin, out)]
        subprocess.run(qemu + list(argv), check=True, stdout=subprocess.DEVNULL)
        first = out.read_text().split("\n", 1)[0].split()
        if len(first) != 2 or first[0] != "total":
            raise RuntimeError("unexpected plugin output in %s: %r" % (out, first))
        return int(first[1])

    def engine_per_image(self, arch: str, driver: Path, kernel: str, semantics: str, files: List[Path]) -> float:
        listing = self.workdir / ("list-%d.txt" % self.runs)
        listing.write_text("".join("%s\n" % f for f in files))
        env = {"IBNEDGE_SIMD": "off"} if kernel == "scalar" else {}
        totals = [self.count(arch, [str(driver), "--threads", "1", "--semantics", semantics, "--repeat", str(r),
                                    str(listing)], env) for r in (1, 2)]
        return (totals[1] - totals[0]) / len(files)

    def djpeg_per_image(self, arch: str, files: List[Path], tiny: Path) -> float:
        djpeg = str(self.sysroot / "usr/bin/djpeg") if arch == "aarch64" else "/usr/bin/djpeg"
        fixed = self.count(arch, [djpeg, "-outfile", "/dev/null", str(tiny)])
        return sum(self.count(arch, [djpeg, "-outfile", "/dev/null", str(f)]) - fixed for f in files) / len(files)


def measure(counter: Counter, drivers: Dict[str, Path], corpora: Dict[str, List[Path]], tiny: Path) -> Dict[str, object]:
    results = OrderedDict()  # type: Dict[str, object]
    for corpus_name, files in corpora.items():
        row = OrderedDict()  # type: Dict[str, object]
        for arch in ARCHS:
            row["%s djpeg" % arch] = counter.djpeg_per_image(arch, files, tiny)
            for kernel in KERNELS:
                for semantics in SEMANTICS:
                    row["%s %s %s" % (arch, kernel, semantics)] = counter.engine_per_image(
                        arch, drivers[arch], kernel, semantics, files)
            print("  %s: %s done" % (corpus_name, arch), file=sys.stderr)
        results[corpus_name] = row
    return results


def table(results: Dict[str, Dict[str, float]]) -> str:
    lines = ["| corpus | arch | kernel | semantics | M instructions / image | x djpeg | aarch64 / x86 |",
             "|---|---|---|---|---|---|---|"]
    for corpus_name, row in results.items():
        for arch in ARCHS:
            djpeg = row["%s djpeg" % arch]
            lines.append("| %s | %s | (djpeg) | full decode | %.2f | 1.00 | %s |" % (
                corpus_name, arch, djpeg / 1e6,
                "%.2f" % (djpeg / row["x86 djpeg"]) if arch == "aarch64" else ""))
            for kernel in KERNELS:
                for semantics in SEMANTICS:
                    value = row["%s %s %s" % (arch, kernel, semantics)]
                    cross = value / row["x86 %s %s" % (kernel, semantics)]
                    lines.append("| %s | %s | %s | %s | %.2f | %.2f | %s |" % (
                        corpus_name, arch, kernel, semantics, value / 1e6, value / djpeg,
                        "%.2f" % cross if arch == "aarch64" else ""))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ibnedge.bench.insn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="ImageNet-like files (default 16)")
    parser.add_argument("--phone", type=int, default=2, help="12-megapixel phone-like files (default 2; 0: none)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--x86-driver", type=Path, help="an x86 tensor_dump to count instead of the fresh build")
    parser.add_argument("--aarch64-driver", type=Path, help="an aarch64 tensor_dump to count instead of the fresh build")
    parser.add_argument("--no-setup", action="store_true", help="skip `tests/arm64.sh setup` (already built)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.phone < 0:
        parser.error("--images must be >= 1 and --phone >= 0")
    script = REPO / "tests" / "arm64.sh"
    if not script.is_file():
        raise SystemExit("python -m ibnedge.bench.insn needs a source checkout (tests/arm64.sh); %s has none" % REPO)
    if not args.no_setup:
        env = dict(os.environ, PYTHON=sys.executable, ARM64_PYTHON="0")
        subprocess.run(["bash", str(script), "setup"], check=True, cwd=str(REPO), env=env)
    build = Path(os.environ.get("ARM64_BUILD") or REPO / "build" / "arm64")
    drivers = {"x86": args.x86_driver or build / "x86" / "tensor_dump",
               "aarch64": args.aarch64_driver or build / "aarch64" / "tensor_dump"}

    from ibnedge import corpus

    root = corpus.default_cache_dir()
    corpora = OrderedDict([("imagenet-like", corpus.imagenet_like(root)[:args.images])])
    if args.phone:
        corpora["phone-like 12 MP"] = corpus.phone_like(root)[:args.phone]
    with tempfile.TemporaryDirectory(prefix="ibnedge-insn-") as tmp:
        tiny = Path(tmp) / "tiny.jpg"
        tiny.write_bytes(corpus.encode_jpeg(corpus.photo(8, 8), quality=90))
        counter = Counter(build_plugin(), Path(tmp))
        results = measure(counter, drivers, corpora, tiny)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"drivers": {k: str(v) for k, v in drivers.items()}, "results": results},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
