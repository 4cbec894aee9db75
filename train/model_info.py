"""How a checkpoint says what its weights are: the model record (``ibnedge.metadata.ModelMetadata``)
as a string entry appended to the ``.ckpt``.

``INFO_KEY`` holds the record's JSON, the same text an exported model carries. Checkpoints
written before the record was shared stored an older description under
``LEGACY_INFO_KEY`` (``arch``, ``num_classes``, ``class_names``, ``image_size``, ``resize``,
``mean``, ``std``, ``semantics``, ``source``); :func:`read_entry` reads both.

Its own module because both ``train.checkpoint`` (which reads checkpoints, converting an
official ``.pth`` through ``train.convert``) and ``train.convert`` (which writes ``.ckpt``
files that say what they hold) need it, and neither may import the other both ways.
"""
from __future__ import annotations

import json
from typing import Dict, Optional

from ibnedge.metadata import IMAGENET_MEAN, IMAGENET_STD, ONNX_METADATA_KEY, MetadataError, ModelMetadata

# The appended checkpoint entry holding ``ModelMetadata.to_json()``: the key an ONNX file
# stores the same JSON under.
INFO_KEY = ONNX_METADATA_KEY
LEGACY_INFO_KEY = "ibnedge_info"
# The older description's semantics told its origin exactly: only train.convert wrote
# "pil" (converted official weights) and only the training loop wrote "mindspore".
_LEGACY_ORIGIN = {"pil": "official", "mindspore": "trained"}


def checkpoint_entry(meta: ModelMetadata) -> Dict[str, str]:
    """The ``append_dict`` entry that stores ``meta`` in a checkpoint."""
    return {INFO_KEY: meta.to_json()}


def read_entry(name: str, value: str, where: str) -> Optional[ModelMetadata]:
    """The record in checkpoint entry ``name`` (``value`` its string), or None when ``name``
    is no record; ``where`` names the checkpoint in errors."""
    if name == INFO_KEY:
        return ModelMetadata.from_json(value, "%s (entry %s)" % (where, INFO_KEY))
    if name == LEGACY_INFO_KEY:
        return _from_legacy(value, "%s (entry %s)" % (where, LEGACY_INFO_KEY))
    return None


def _from_legacy(text: str, where: str) -> ModelMetadata:
    try:
        d = json.loads(text)
        semantics = str(d.get("semantics", "mindspore"))
        size = int(d.get("image_size", 224))
        meta = ModelMetadata.describe(
            str(d["arch"]), int(d["num_classes"]), origin=_LEGACY_ORIGIN.get(semantics, "trained"),
            source=str(d.get("source", "")), crop=size, resize=int(d.get("resize", 256)),
            class_names=d.get("class_names"), mean=tuple(d.get("mean", IMAGENET_MEAN)),
            std=tuple(d.get("std", IMAGENET_STD)),
        )
        return meta.with_input(semantics=semantics)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MetadataError("%s: invalid model record (%s); convert or train the checkpoint again" % (where, exc))
