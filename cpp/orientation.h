// EXIF orientation as a view: the 8 orientations are flips and transposes, which a pixel
// view expresses with signed strides, so the decoded image is never copied to rotate it.
#pragma once

#include "resize_kernel.h"

namespace ibnedge {

// True for the orientations (5..8) that swap width and height.
bool orientation_swaps_axes(int orientation);

// The upright image of `stored` (as Pillow's ImageOps.exif_transpose makes it).
PixelView oriented_view(const PixelView& stored, int orientation);

}  // namespace ibnedge
