"""MindSpore itself (``mindspore.load`` + ``nn.GraphCell``): runs MINDIR files exported by
the same MindSpore (``python -m train.export``). Checkpoints (``.ckpt``, official ``.pth``)
are exported to such a file before a backend is chosen (:mod:`ibnedge.models`)."""
from __future__ import annotations

import numpy as np

from ..cpu_isa import apply_default_cpu_isa_cap
from .base import Backend, BackendError, native_reason, register

_TARGETS = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}
# How MindSpore refuses set_device once this process's device is fixed: chosen before, or
# fixed implicitly by the first kernel (any tensor op, an in-process export) run without one.
_DEVICE_FIXED = ("already", "can not be modified", "runtime has been initialized")


@register
class MindSporeBackend(Backend):
    name = "mindspore"
    runtime_module = "mindspore"
    install_hint = "pip install mindspore (Python 3.9+; the ibnedge[train] extra)"
    suffixes = (".mindir",)
    # MindSpore selects its device once per process (set_device).
    supports_multiple_devices = False

    def load(self) -> "MindSporeBackend":
        if self.device == "cpu":
            # Before MindSpore's first CPU kernel in this process, or oneDNN never sees it:
            # a process that already ran MindSpore on CPU keeps the ISA it started with.
            apply_default_cpu_isa_cap()
        try:
            import mindspore as ms
            from mindspore import nn
        except ImportError as exc:
            raise BackendError("cannot import mindspore (%s): %s" % (exc, self.install_hint))

        _set_device(ms, _TARGETS[self.device], self.device_id, self.threads)
        try:
            graph = ms.load(str(self.model_path))
            self._cell = nn.GraphCell(graph)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise BackendError("MindSpore cannot load %s: %s" % (self.model_path, str(exc).splitlines()[0]))
        self._ms = ms
        # GraphCell accepts any batch size (it recompiles per new shape), whatever the export used.
        self.input_shape = (-1, 3, -1, -1)
        return self

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        return self._cell(self._ms.Tensor(batch)).asnumpy()

    def _release(self) -> None:
        self._cell = None


def _set_device(ms: object, target: str, device_id: int, threads: int) -> None:
    """Select the device and CPU kernel threads across MindSpore 2.x spellings."""
    try:
        if hasattr(ms, "set_device"):  # 2.6+
            ms.set_device(target, device_id)
        else:
            ms.set_context(device_target=target, device_id=device_id)
    except (RuntimeError, ValueError) as exc:
        reason = native_reason(exc, ())
        if not any(words in reason.lower() for words in _DEVICE_FIXED):
            raise BackendError("MindSpore cannot use --device %s: %s" % (target.lower(), reason))
        _check_device_in_use(ms, target, device_id)
    if threads:
        cpu_ctx = getattr(getattr(ms, "device_context", None), "cpu", None)
        op_tuning = getattr(cpu_ctx, "op_tuning", None)
        if op_tuning is not None:
            try:
                op_tuning.threads_num(threads)
            except RuntimeError:
                pass  # already set in this process: the first setting stays
        else:
            ms.set_context(runtime_num_threads=threads)


def _device_name(target: str, device_id: int) -> str:
    """``CPU`` or ``GPU 1``: a MindSpore device as the user chose it (the id matters off CPU)."""
    return target if target == "CPU" else "%s %d" % (target, device_id)


def _check_device_in_use(ms: object, target: str, device_id: int) -> None:
    """After MindSpore refused set_device: fine when the process already runs on the requested
    device, else say which device the process is fixed to and how to choose another."""
    in_use = _device_name(str(ms.get_context("device_target")), int(ms.get_context("device_id")))
    wanted = _device_name(target, device_id)
    if in_use != wanted:
        raise BackendError(
            "MindSpore in this process already runs on %s and cannot switch to %s: choose the device before "
            "running any MindSpore code (mindspore.set_device), or run ibnedge in a fresh process" % (in_use, wanted))
