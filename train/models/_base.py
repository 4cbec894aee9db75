"""The contract every model of the zoo shares (timm's ``forward_features``/``forward_head``)."""
from __future__ import annotations

import mindspore.nn as nn


class ImageClassifier(nn.Cell):
    """Backbone + global pooling (``forward_features``) + linear head (``forward_head``).

    Subclasses build the backbone, set ``num_features``, implement ``forward_features`` and
    ``forward_head`` (graph mode compiles attribute access by name, so each names its own head),
    and call ``reset_classifier(num_classes)`` at the end of ``__init__``. ``head_name`` is the
    head's attribute, named like the official PyTorch module (``fc`` or ``classifier``) so the
    converter's key mapping stays a pure renaming of leaves.
    """

    head_name = "fc"

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 0
        self.num_classes = 0

    def reset_classifier(self, num_classes: int) -> None:
        """New head for ``num_classes`` outputs (0: no classifier, ``construct`` returns the embedding)."""
        if num_classes < 0:
            raise ValueError("num_classes must be >= 0, got %d" % num_classes)
        self.num_classes = num_classes
        setattr(self, self.head_name, nn.Dense(self.num_features, num_classes) if num_classes > 0 else nn.Identity())

    def construct(self, x):
        return self.forward_head(self.forward_features(x))
