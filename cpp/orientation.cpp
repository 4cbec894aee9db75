#include "orientation.h"

namespace ibnedge {

bool orientation_swaps_axes(int orientation) { return orientation >= 5 && orientation <= 8; }

PixelView oriented_view(const PixelView& stored, int orientation) {
    const ptrdiff_t rs = stored.row_stride;
    const ptrdiff_t ps = stored.pixel_stride;
    const ptrdiff_t last_row = rs * (stored.height - 1);
    const ptrdiff_t last_col = ps * (stored.width - 1);
    PixelView v = stored;
    if (orientation_swaps_axes(orientation)) {
        v.width = stored.height;
        v.height = stored.width;
    }
    // upright pixel (x, y) = stored.data + y * v.row_stride + x * v.pixel_stride
    switch (orientation) {
        case 2:  // mirrored left-right
            v.data = stored.data + last_col;
            v.pixel_stride = -ps;
            break;
        case 3:  // rotated 180
            v.data = stored.data + last_row + last_col;
            v.pixel_stride = -ps;
            v.row_stride = -rs;
            break;
        case 4:  // mirrored top-bottom
            v.data = stored.data + last_row;
            v.row_stride = -rs;
            break;
        case 5:  // transposed: upright (x, y) = stored (y, x)
            v.pixel_stride = rs;
            v.row_stride = ps;
            break;
        case 6:  // needs 90 degrees clockwise: upright (x, y) = stored (y, H - 1 - x)
            v.data = stored.data + last_row;
            v.pixel_stride = -rs;
            v.row_stride = ps;
            break;
        case 7:  // transverse: upright (x, y) = stored (W - 1 - y, H - 1 - x)
            v.data = stored.data + last_row + last_col;
            v.pixel_stride = -rs;
            v.row_stride = -ps;
            break;
        case 8:  // needs 90 degrees counter-clockwise: upright (x, y) = stored (W - 1 - y, x)
            v.data = stored.data + last_col;
            v.pixel_stride = rs;
            v.row_stride = -ps;
            break;
        default:
            break;
    }
    return v;
}

}  // namespace ibnedge
