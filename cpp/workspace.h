// What one thread reuses from item to item, so that an item allocates nothing of the
// engine's own once the buffers have grown to fit (libjpeg still allocates its per-image
// memory): the decompress struct, the file and row buffers, the resize tables and the
// resampler's rows. A pool worker owns one for its whole life; the engine keeps one for the
// threads that call run() (engine.h). Never used by two threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "jpeg_decoder.h"
#include "resize_kernel.h"
#include "resize_plan.h"

namespace ibnedge {

struct Workspace {
    JpegDecoder decoder;
    std::vector<uint8_t> file_bytes;       // a file read from its path
    std::vector<uint8_t> strip;            // decoded rows on their way to the resampler
    std::vector<uint8_t> window;           // the decoded window of an EXIF-rotated image
    std::vector<uint8_t*> window_rows;
    ResizePlan plan;
    ResamplerScratch resampler;

    // A buffer that grew past this for one item is freed after it, so that a rare big image
    // (a 12 MP EXIF-rotated window is 48 MB, a phone JPEG file 3-6 MB) does not stay
    // allocated in every worker of an edge box; ImageNet-size files and every row buffer of
    // the usual crops stay under it. Allocating a big buffer again costs little beside
    // decoding the image that needs it.
    static constexpr size_t kKeptBytes = size_t(4) << 20;
    // Frees the buffers over kKeptBytes (called after each item).
    void trim();
};

}  // namespace ibnedge
