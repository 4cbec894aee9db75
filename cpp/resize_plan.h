// Geometry of resize + centre crop for each semantics, and the separable filter tables
// for the crop's output pixels only: the crop is computed with the filter of the full
// resize, so the full resized image is never built.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "preprocess_types.h"

namespace ibnedge {

// The largest side of a source or resized image: the tables index both with int, and 2**30
// leaves room for the crop offsets around them. A JPEG (65535 at most) resized to 16384 stays
// under it; only pixel arrays can go over.
constexpr int kMaxImageSide = 1 << 30;
// The largest shrink (source pixels per output pixel on one axis) of the antialiasing filter,
// whose taps per output span twice that: above the largest JPEG side at resize 1, so only
// pixel arrays can go over.
constexpr int kMaxAntialiasShrink = 1 << 16;

// A resize the tables cannot represent; what() names the sizes and what to change. The
// engine reports it as ErrorKind::kTooLarge.
class ResizeTooLarge : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The resized image (never materialised) and where the crop sits in it.
struct ResizeGeometry {
    int resized_width = 0;
    int resized_height = 0;
    int crop_left = 0;  // negative when the crop is wider than the resized image (zero padding)
    int crop_top = 0;
    int crop_width = 0;
    int crop_height = 0;
};

// Resized size and crop offsets of a width x height image under `spec.semantics`:
//   pil/fast: short -> resize, long -> int(resize * long / short); offsets round-half-even,
//             a larger crop padded with the smaller half first (torchvision Resize + CenterCrop).
//   mindspore: long -> floor(float32(long) / short * resize); offsets floor((size - crop) / 2),
//             a larger crop padded with the larger half first (pad // 2 + pad % 2).
// Throws ResizeTooLarge when a side of the image or of the resized image is over kMaxImageSide.
ResizeGeometry resize_geometry(Semantics semantics, int width, int height, const TensorSpec& spec);

enum class FilterKind {
    kAntialiasBilinear,  // Pillow ImagingResample BILINEAR: 22-bit weights, uint8 after each pass
    kOpenCvLinear,       // OpenCV INTER_LINEAR on uint8: 11-bit weights, int rows, SIMD rounding
};

// One axis of the separable filter, for the crop's outputs only.
struct AxisTaps {
    static constexpr int kWeightBits22 = 22;
    static constexpr int kWeightBits11 = 11;

    int outputs = 0;
    int stride = 0;               // weights per output in `weights` (a multiple of 4, zero padded)
    std::vector<int> first;       // first source index of each output
    std::vector<int> count;       // taps of each output; 0: outside the resized image (zero padding)
    std::vector<int32_t> weights;  // outputs x stride fixed-point weights
    int source_begin = 0;         // source indices any output reads: [source_begin, source_end)
    int source_end = 0;
    int max_count = 0;

    int last(int i) const { return first[i] + count[i] - 1; }
};

struct ResizePlan {
    FilterKind kind = FilterKind::kAntialiasBilinear;
    int source_width = 0;   // the image the filter reads (DCT-scaled in fast mode)
    int source_height = 0;
    AxisTaps horizontal;
    AxisTaps vertical;
};

// Fills `plan` (reusing the memory of its tables) with the filter tables mapping a
// source_width x source_height image onto the resized size of `geometry`, restricted to
// its crop. In fast mode the source is the DCT-reduced image while `geometry` comes from
// the original size. Throws ResizeTooLarge when the antialiasing filter would shrink an
// axis by more than kMaxAntialiasShrink.
void make_resize_plan(FilterKind kind, int source_width, int source_height, const ResizeGeometry& geometry,
                      ResizePlan* plan);

FilterKind filter_for(Semantics semantics);

}  // namespace ibnedge
