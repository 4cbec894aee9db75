# Type stub of the compiled engine (cpp/bindings.cpp). Use ibnedge.preprocess.Preprocessor;
# this private module's API may change.
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__version__: str
# The largest side of a pixel array (and of a resized image) the engine handles: 2**30.
MAX_IMAGE_SIDE: int

class Engine:
    """A persistent thread pool that preprocesses batches (threads: total parallelism, 0 = one per CPU)."""

    def __init__(self, threads: int = 0) -> None: ...
    @property
    def threads(self) -> int: ...
    def run(
        self,
        items: List[Any],
        types: str,
        out: np.ndarray,
        *,
        semantics: str,
        resize: int,
        crop: Tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        exif_orientation: bool = False,
        accept_damaged: bool = False,
        max_pixels: int = ...,  # ibnedge.formats.PILLOW_MAX_PIXELS
        restrict_window: bool = True,
    ) -> List[Optional[Tuple[str, str]]]:
        """Fill ``out`` (N, 3, crop_h, crop_w) float32; one letter per item in ``types``:
        b = encoded bytes-like, p = path (str or bytes), a = (H, W, 3|4) uint8 array,
        n = skip (zero row). Returns None or (kind, message) per item; kinds include the
        internal "not_jpeg" (an encoded item that is not a JPEG) and "skipped"."""

def simd_path() -> str:
    """The vector instruction set the resize kernel uses on this CPU: "avx2", "neon" or "scalar"."""
    ...

def jpeg_library() -> Dict[str, Any]:
    """The libjpeg the engine was built against: api_version (JPEG_LIB_VERSION, e.g. 62),
    turbo_version (LIBJPEG_TURBO_VERSION, e.g. "2.1.5"; "" if not libjpeg-turbo) and
    partial_decode (jpeg_crop_scanline / jpeg_skip_scanlines: always True, the build needs them)."""
    ...
