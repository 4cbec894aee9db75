"""oneDNN's CPU instruction-set cap for MindSpore on CPU: AVX2 on x86-64 unless the user chose.

MindSpore 2.10 runs its CPU kernels through oneDNN, whose AVX-512 code paths are
pathologically slow for these networks. Measured (graph mode, medians of interleaved
rounds): a resnet18 training step at 112 px, batch 16, took 34x longer than with
``ONEDNN_MAX_CPU_ISA=AVX2`` on a Xeon with AVX-512 and AMX (19.9 s against 0.58 s), and
34-45x longer on an AMD EPYC with AVX-512 (two runs on a shared machine, 30-73x per round),
where GraphCell inference of an exported resnet18 at 224 px took 79x (batch 1) and 64x
(batch 8) longer. Capping at ``AVX512_CORE`` or ``AVX512_CORE_BF16`` did not help
(0.95-1.2x). So ``train`` on CPU and ibnedge's ``mindspore`` backend on ``--device cpu`` set
``ONEDNN_MAX_CPU_ISA=AVX2`` unless ``ONEDNN_MAX_CPU_ISA`` or its older spelling
``DNNL_MAX_CPU_ISA`` is already set (to any value; ``ALL`` lifts the cap). Other
architectures are left alone (the names are x86's).

oneDNN reads the variable once, when the process creates its first oneDNN kernel (checked
with ``ONEDNN_VERBOSE=1``, which prints the ISA in use): setting it after ``import mindspore``
and the device choice still works; after MindSpore has run a CPU kernel it changes nothing.
"""
from __future__ import annotations

import os
import platform
from typing import Optional

ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # oneDNN honours the first one set
DEFAULT_CPU_ISA_CAP = "AVX2"
_X86_64 = ("x86_64", "amd64")

HELP = ("on CPU, %s defaults to %s on x86-64 (oneDNN's AVX-512 kernels make MindSpore many times slower; "
        "set it to choose, ALL for no cap)" % (ISA_VARIABLES[0], DEFAULT_CPU_ISA_CAP))


def cpu_isa_cap() -> Optional[str]:
    """The cap this process's environment gives oneDNN, or None (it uses all the CPU has)."""
    for name in ISA_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


def apply_default_cpu_isa_cap() -> Optional[str]:
    """Set ``ONEDNN_MAX_CPU_ISA=AVX2`` on x86-64 unless either variable is set; the cap in force.

    Call it for device CPU before MindSpore runs its first CPU kernel in this process.
    """
    if platform.machine().lower() in _X86_64 and not any(name in os.environ for name in ISA_VARIABLES):
        os.environ[ISA_VARIABLES[0]] = DEFAULT_CPU_ISA_CAP
    return cpu_isa_cap()
