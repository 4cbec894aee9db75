// A bounds-checked walk over a JPEG's marker segments before libjpeg sees it: the frame
// size (checked against the pixel cap before anything is allocated) and the EXIF
// orientation. Never reads past `size`.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ibnedge {

struct JpegProbe {
    bool has_frame = false;  // a start-of-frame marker was found before the first scan
    int width = 0;
    int height = 0;
    int components = 0;
    bool progressive = false;
    int orientation = 1;  // EXIF orientation 1..8; 1 when absent or invalid
    bool needs_more = false;  // the data ended inside the header, before the frame
};

// True when the data starts like a JPEG (FF D8 FF).
bool has_jpeg_magic(const uint8_t* data, size_t size);

JpegProbe probe_jpeg(const uint8_t* data, size_t size);

// The orientation tag (0x0112) of an APP1 "Exif" payload, or 1.
int exif_orientation(const uint8_t* payload, size_t size);

}  // namespace ibnedge
