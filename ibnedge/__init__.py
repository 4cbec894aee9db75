"""ibnedge: IBN-Net inference on MindSpore Lite with a native JPEG-to-tensor engine."""
from __future__ import annotations

__version__ = "0.1.0"
