"""MindSpore Lite (``mindspore_lite``): the edge runtime, CPU / GPU / Ascend.

Batch sizes: a converted model is either dynamic (any batch; the input is resized to each
new size), static (one size, never resized: the Ascend 310 refuses dynamic shapes), or
built with batch profiles (``ibnedge convert --batch 1,8,32``). Profiles live either in one
Ascend model (resized to a listed size only) or, on CPU, in one static file per size listed
in the model's metadata (``deployment.profile_files``); :meth:`Backend.run` feeds each call
the smallest listed size that holds it.

The Python API changed between Lite 2.0 and 2.3+ (see :func:`api_features`); this module
uses only what 2.0 has, and feature-detects the rest.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..metadata import load_for_model
from .base import Backend, BackendError, captured_native_stderr, dims_from_shape, native_reason, register


def api_features(mslite: Any) -> Dict[str, Any]:
    """What this ``mindspore_lite`` offers, by inspection rather than by version number
    (vendor builds of one version differ): the keys README's version matrix describes."""
    build = inspect.signature(mslite.Model.build_from_file).parameters
    converter = getattr(mslite, "Converter", None)
    convert = inspect.signature(converter.convert).parameters if converter is not None else {}
    ascend = type(mslite.Context().ascend)
    return {
        "version": str(getattr(mslite, "__version__", "unknown")),
        "build_config_path": "config_path" in build,  # a runtime config file (2.0 has it)
        "build_config_dict": "config_dict" in build,  # the same as a dict (not in 2.0)
        "encrypted_models": "dec_key" in build,  # dec_key / dec_mode (not in 2.0)
        "ascend_provider": hasattr(ascend, "provider"),  # "" (ACL) or "ge" (not in 2.0)
        "ascend_rank_id": hasattr(ascend, "rank_id"),  # (not in 2.0)
        "converter": converter is not None,
        "converter_config_file": "config_file" in convert,
    }


class _LoadedModel(object):
    """One ``mindspore_lite.Model`` and its input tensor handles."""

    def __init__(self, path: Path, model: Any) -> None:
        self.path = path
        self.model = model
        self.inputs = model.get_inputs()  # type: List[Any]
        if len(self.inputs) != 1:
            raise BackendError("%s has %d inputs; ibnedge expects one NCHW image input" % (path, len(self.inputs)))
        self.shape = dims_from_shape(self.inputs[0].shape)
        # A static model is never resized; a dynamic one (or an Ascend model with batch
        # profiles) is resized whenever the batch changes: its dynamic dimension reads -1
        # or 0 until then, and resize() leaves the old tensor handles stale.
        self.resizable = self.shape[0] < 1
        self.bound = list(self.inputs[0].shape)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        shape = list(batch.shape)
        if shape != self.bound:
            if not self.resizable:
                raise BackendError("%s takes batches of %s, not %s" % (self.path, self.bound, shape))
            try:
                self.model.resize(self.inputs, [shape])
            except RuntimeError as exc:
                raise BackendError("MindSpore Lite cannot resize %s to %s: %s" % (self.path, shape, exc))
            self.inputs = self.model.get_inputs()
            self.bound = shape
        self.inputs[0].set_data_from_numpy(batch)
        # The array can share memory with the model's output tensor, which the next predict
        # overwrites: copy it, so results of earlier calls stay as they were.
        return np.array(self.model.predict(self.inputs)[0].get_data_to_numpy(), copy=True)


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
        self._mslite = mslite
        try:
            meta = load_for_model(self.model_path)
        except ValueError as exc:
            raise BackendError(str(exc))
        deployment = meta.deployment if meta is not None else None

        primary = self._build(self.model_path)
        self.input_shape = primary.shape
        self._by_batch = {}  # type: Dict[int, _LoadedModel]
        self._primary = primary
        if deployment is not None and deployment.batch_profiles:
            self._add_profile_files(deployment.batch_profiles, deployment.profile_files)
            self.batch_profiles = deployment.batch_profiles
        return self

    def _add_profile_files(self, profiles: Any, files: Dict[int, str]) -> None:
        """Load the file of each profile that has its own (Lite on CPU: one static file per
        batch size) and check the model's own input against the profiles left to it."""
        for size, name in sorted(files.items()):
            loaded = self._build(self.model_path.parent / name)
            if loaded.shape[0] != size or loaded.shape[1:] != self.input_shape[1:]:
                raise BackendError(
                    "%s should take batches of %s but takes %s: convert %s again"
                    % (loaded.path, [size] + list(self.input_shape[1:]), list(loaded.shape), self.model_path)
                )
            self._by_batch[size] = loaded
        own = [s for s in profiles if s not in files]
        if not self._primary.resizable and own != [self._primary.shape[0]]:
            raise BackendError(
                "%s takes batch %d but its metadata lists batch profiles %s with files for %s: convert it again"
                % (self.model_path, self._primary.shape[0], list(profiles), sorted(files))
            )

    def _build(self, path: Path) -> _LoadedModel:
        mslite = self._mslite
        if not path.is_file():
            raise BackendError("%s is missing (listed in %s's metadata): convert the model again" % (path, self.model_path))
        context = mslite.Context()
        context.target = [self.device]
        if self.threads:
            context.cpu.thread_num = self.threads
        if self.device == "gpu":
            context.gpu.device_id = self.device_id
        elif self.device == "ascend":
            context.ascend.device_id = self.device_id

        model_type = mslite.ModelType.MINDIR_LITE if path.suffix.lower() == ".ms" else mslite.ModelType.MINDIR
        model = mslite.Model()
        try:
            with captured_native_stderr() as log:
                model.build_from_file(str(path), model_type, context)
        except RuntimeError as exc:
            raise BackendError("MindSpore Lite cannot load %s (%s); %s" % (path, native_reason(exc, log), self._hint(exc, log)))
        return _LoadedModel(path, model)

    def _hint(self, exc: BaseException, log: List[str]) -> str:
        reason = native_reason(exc, log)
        if "Dynamic shape is not supported" in reason or "dynamic shape" in " ".join(log).lower():
            return (
                "this chip needs static shapes: convert with `ibnedge convert MODEL.onnx --to lite --device %s "
                "--batch 1,8` (see `ibnedge doctor`)" % self.device
            )
        if self.device != "cpu" and ("DLSoOpen" in reason or "plugin" in reason):
            return (
                "this MindSpore Lite build cannot use --device %s (its %s plugin does not load): install the "
                "Lite package for that device from mindspore.cn, or use --device cpu (`ibnedge doctor` says "
                "which plugins load)" % (self.device, self.device)
            )
        return (
            "a MINDIR written by MindSpore itself must be converted first: export ONNX and run "
            "`ibnedge convert MODEL.onnx --to lite`"
        )

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        return self._by_batch.get(batch.shape[0], self._primary).predict(batch)

    def _release(self) -> None:
        self._by_batch = {}
        self._primary = None  # type: Optional[_LoadedModel]
