#include "orientation.h"

#include <algorithm>

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

namespace {

// The stored pixel (column, row) shown at upright (x, y); the cases of oriented_view.
void stored_pixel(int orientation, int width, int height, int x, int y, int* column, int* row) {
    switch (orientation) {
        case 2: *column = width - 1 - x; *row = y; break;
        case 3: *column = width - 1 - x; *row = height - 1 - y; break;
        case 4: *column = x; *row = height - 1 - y; break;
        case 5: *column = y; *row = x; break;
        case 6: *column = y; *row = height - 1 - x; break;
        case 7: *column = width - 1 - y; *row = height - 1 - x; break;
        case 8: *column = width - 1 - y; *row = x; break;
        default: *column = x; *row = y; break;
    }
}

}  // namespace

PixelRect stored_rect(const PixelRect& upright, int orientation, int width, int height) {
    int c0, r0, c1, r1;  // the stored pixels of two opposite corners
    stored_pixel(orientation, width, height, upright.x0, upright.y0, &c0, &r0);
    stored_pixel(orientation, width, height, upright.x1 - 1, upright.y1 - 1, &c1, &r1);
    PixelRect r;
    r.x0 = std::min(c0, c1);
    r.x1 = std::max(c0, c1) + 1;
    r.y0 = std::min(r0, r1);
    r.y1 = std::max(r0, r1) + 1;
    return r;
}

}  // namespace ibnedge
