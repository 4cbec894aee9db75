"""What a checkpoint's weights are (``ModelInfo``) and the entry that stores it (``INFO_KEY``).

Its own module because both ``train.checkpoint`` (which reads checkpoints, converting an
official ``.pth`` through ``train.convert``) and ``train.convert`` (which writes ``.ckpt``
files that say what they hold) need it, and neither may import the other both ways.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

from ibnedge.metadata import IMAGENET_MEAN, IMAGENET_STD

# The appended checkpoint entry holding ``ModelInfo.to_json()``.
INFO_KEY = "ibnedge_info"


@dataclass
class ModelInfo:
    """What a checkpoint's weights are: enough to rebuild, evaluate and export the model."""

    arch: str
    num_classes: int
    class_names: Optional[List[str]] = None
    image_size: int = 224
    resize: int = 256
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    # "mindspore" for models trained here (mindspore.dataset Decode/Resize/CenterCrop),
    # "pil" for converted official weights (torchvision/PIL evaluation).
    semantics: str = "mindspore"
    source: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return json.dumps(d, ensure_ascii=False)

    @classmethod
    def of_converted(cls, arch: str, num_classes: int, source: str) -> "ModelInfo":
        """Official PyTorch weights: ImageNet statistics and torchvision/PIL preprocessing."""
        return cls(arch=arch, num_classes=num_classes, semantics="pil", source=source)

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        d = json.loads(text)
        known = set(cls.__dataclass_fields__)
        d = {k: v for k, v in d.items() if k in known}
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)
