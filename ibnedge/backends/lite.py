"""MindSpore Lite (``mindspore_lite``): the edge runtime, CPU / GPU / Ascend."""
from __future__ import annotations

import os
from typing import Any, List

import numpy as np

from .base import Backend, BackendError, captured_native_stderr, dims_from_shape, native_reason, register


@register
class LiteBackend(Backend):
    name = "lite"
    runtime_module = "mindspore_lite"
    install_hint = "pip install mindspore-lite (PyPI has 2.0.0 for CPython 3.7; newer wheels come from mindspore.cn)"
    # .mindir: cloud-side MINDIR (what `ibnedge convert --to lite` writes); .ms: device-side format.
    suffixes = (".mindir", ".ms")

    def load(self) -> "LiteBackend":
        # Lite logs every graph-optimisation warning at level 2; keep the user's terminal for
        # results unless they asked for the logs (GLOG_v is read when the library loads).
        os.environ.setdefault("GLOG_v", "3")
        try:
            import mindspore_lite as mslite
        except ImportError as exc:
            raise BackendError("cannot import mindspore_lite (%s): %s" % (exc, self.install_hint))

        context = mslite.Context()
        context.target = [self.device]
        if self.threads:
            context.cpu.thread_num = self.threads
        if self.device == "gpu":
            context.gpu.device_id = self.device_id
        elif self.device == "ascend":
            context.ascend.device_id = self.device_id

        model_type = mslite.ModelType.MINDIR_LITE if self.model_path.suffix.lower() == ".ms" else mslite.ModelType.MINDIR
        model = mslite.Model()
        try:
            with captured_native_stderr() as log:
                model.build_from_file(str(self.model_path), model_type, context)
        except RuntimeError as exc:
            reason = native_reason(exc, log)
            if self.device != "cpu" and ("DLSoOpen" in reason or "plugin" in reason):
                hint = (
                    "this MindSpore Lite build cannot use --device %s (its %s plugin does not load): install the "
                    "Lite package for that device from mindspore.cn, or use --device cpu" % (self.device, self.device)
                )
            else:
                hint = (
                    "a MINDIR written by MindSpore itself must be converted first: export ONNX and run "
                    "`ibnedge convert MODEL.onnx --to lite`"
                )
            raise BackendError("MindSpore Lite cannot load %s (%s); %s" % (self.model_path, reason, hint))
        self._model = model
        self._inputs = model.get_inputs()  # type: List[Any]
        if len(self._inputs) != 1:
            raise BackendError("%s has %d inputs; ibnedge expects one NCHW image input" % (self.model_path, len(self._inputs)))
        self.input_shape = dims_from_shape(self._inputs[0].shape)
        # The shape the input tensor currently has; a dynamic dimension must be resized
        # to a concrete size before the first predict (it reads -1 or 0 until then).
        self._bound_shape = list(self._inputs[0].shape)
        return self

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        shape = list(batch.shape)
        if shape != self._bound_shape:
            try:
                self._model.resize(self._inputs, [shape])
            except RuntimeError as exc:
                raise BackendError("MindSpore Lite cannot resize %s to %s: %s" % (self.model_path, shape, exc))
            # resize() leaves the old Tensor handles with stale sizes; fetch fresh ones.
            self._inputs = self._model.get_inputs()
            self._bound_shape = shape
        self._inputs[0].set_data_from_numpy(batch)
        outputs = self._model.predict(self._inputs)
        return outputs[0].get_data_to_numpy()

    def close(self) -> None:
        self._inputs = []
        self._model = None
