// EXIF orientation as a view: the 8 orientations are flips and transposes, which a pixel
// view expresses with signed strides, so the decoded image is never copied to rotate it.
#pragma once

#include "resize_kernel.h"

namespace ibnedge {

// True for the orientations (5..8) that swap width and height.
bool orientation_swaps_axes(int orientation);

// The upright image of `stored` (as Pillow's ImageOps.exif_transpose makes it).
PixelView oriented_view(const PixelView& stored, int orientation);

// A rectangle of pixels: columns [x0, x1), rows [y0, y1).
struct PixelRect {
    int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
    int width() const { return x1 - x0; }
    int height() const { return y1 - y0; }
};

// The rectangle of the stored (width x height) image that holds `upright`, a rectangle of
// its upright view: what to decode when only that part of the upright image is needed.
PixelRect stored_rect(const PixelRect& upright, int orientation, int width, int height);

}  // namespace ibnedge
