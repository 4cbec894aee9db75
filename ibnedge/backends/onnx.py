"""ONNX Runtime: the baseline most users would pick on x86/ARM boxes without Ascend."""
from __future__ import annotations

import numpy as np

from .base import Backend, BackendError, dims_from_shape, register

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "ascend": "CANNExecutionProvider",
}


@register
class OnnxBackend(Backend):
    name = "onnx"
    runtime_module = "onnxruntime"
    install_hint = "pip install onnxruntime (or the ibnedge[onnx] extra)"
    suffixes = (".onnx",)

    def load(self) -> "OnnxBackend":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("cannot import onnxruntime (%s): %s" % (exc, self.install_hint))

        provider = _PROVIDERS[self.device]
        if provider not in ort.get_available_providers():
            raise BackendError(
                "this onnxruntime build has no %s for --device %s (available: %s); install onnxruntime-gpu / "
                "onnxruntime-cann or use --device cpu" % (provider, self.device, ", ".join(ort.get_available_providers()))
            )
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        providers = [provider] if provider == "CPUExecutionProvider" else [(provider, {"device_id": self.device_id}), "CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception classes per failure kind
            raise BackendError("ONNX Runtime cannot load %s: %s" % (self.model_path, str(exc).splitlines()[0]))
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise BackendError("%s has %d inputs; ibnedge expects one NCHW image input" % (self.model_path, len(inputs)))
        self._input_name = inputs[0].name
        self.input_shape = dims_from_shape(inputs[0].shape)
        return self

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: batch})[0]

    def _release(self) -> None:
        self._session = None
