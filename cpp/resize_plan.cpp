#include "resize_plan.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

namespace ibnedge {
namespace {

// torchvision CenterCrop: int(round((size - crop) / 2.0)) with Python's round-half-even;
// a crop larger than the image is zero padded by (crop - size) // 2 before cropping.
int round_half_even_origin(int size, int crop) {
    if (crop > size) return -((crop - size) / 2);
    const int diff = size - crop;
    int half = diff / 2;
    if ((diff & 1) && (half & 1)) ++half;  // x.5 rounds to the even neighbour
    return half;
}

// MindSpore CenterCrop (center_crop_op.cc): (size - crop) / 2 in integers; a larger crop is
// zero padded first with pad / 2 + pad % 2 before the image (the larger half when odd).
int floor_origin(int size, int crop) {
    if (crop > size) return -((crop - size + 1) / 2);
    return (size - crop) / 2;
}

std::string size_text(int64_t width, int64_t height) { return std::to_string(width) + "x" + std::to_string(height); }

// The long side after resizing the short one to `target`, in int64 (it can pass INT_MAX):
//   torchvision: int(target * long / short), Python's correctly rounded true division (both
//                operands are exact doubles, below 2**53);
//   MindSpore (resize_op.cc): floor(float(long) / short * target) in float32.
int64_t resized_long_side(Semantics semantics, int short_side, int long_side, int target) {
    if (semantics == Semantics::kMindSpore)
        return int64_t(std::floor(float(long_side) / float(short_side) * float(target)));
    return int64_t(double(int64_t(target) * long_side) / double(short_side));
}

void check_shrink(const char* axis, int in_size, int out_size) {
    if (int64_t(in_size) <= int64_t(out_size) * kMaxAntialiasShrink) return;
    throw ResizeTooLarge("shrinking " + std::to_string(in_size) + " " + axis + " to " + std::to_string(out_size) +
                         " is over the antialiasing filter's limit of " + std::to_string(kMaxAntialiasShrink) +
                         " source pixels per output pixel; raise resize or shrink the image first");
}

int round_up4(int n) { return (n + 3) & ~3; }

double pillow_bilinear(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

void finish_axis(AxisTaps* axis) {
    int begin = INT_MAX, end = INT_MIN, max_count = 0;
    for (int i = 0; i < axis->outputs; ++i) {
        if (axis->count[i] == 0) continue;
        begin = std::min(begin, axis->first[i]);
        end = std::max(end, axis->first[i] + axis->count[i]);
        max_count = std::max(max_count, axis->count[i]);
    }
    if (begin == INT_MAX) begin = end = 0;  // every output is padding
    axis->source_begin = begin;
    axis->source_end = end;
    axis->max_count = max_count;
}

// `axis` reset to `outputs` outputs with room for `stride` taps each, all zero (padding),
// reusing its vectors' memory.
void reset_axis(AxisTaps* axis, int outputs, int stride) {
    axis->outputs = outputs;
    axis->stride = stride;
    axis->first.assign(size_t(outputs), 0);
    axis->count.assign(size_t(outputs), 0);
    axis->weights.assign(size_t(outputs) * size_t(stride), 0);
}

// Port of Pillow's precompute_coeffs + normalize_coeffs_8bpc (libImaging/Resample.c) for
// the outputs [out_origin, out_origin + outputs) of an in_size -> out_size resize, same
// double arithmetic in the same order, so the fixed-point weights are bit-identical.
// The taps of every output come first, so the table's stride is that of the taps outputs
// really have (Pillow's bound is up to one tap more; the vector passes run every output
// over `stride` taps); each weight is then computed twice (for the sum, then to normalise),
// the same double expression both times, instead of being kept in a buffer.
void antialias_axis(int in_size, int out_size, int out_origin, int outputs, AxisTaps* axis) {
    const double scale = double(float(in_size) - 0.0f) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = 1.0 * filterscale;  // the bilinear filter's support is 1
    const int max_taps = int(std::ceil(support)) * 2 + 1;
    const double ss = 1.0 / filterscale;
    auto center_of = [scale](int xx) { return 0.0 + (xx + 0.5) * scale; };

    reset_axis(axis, outputs, 0);
    for (int i = 0; i < outputs; ++i) {
        const int xx = out_origin + i;
        if (xx < 0 || xx >= out_size) continue;  // zero padding outside the resized image
        const double center = center_of(xx);
        int xmin = int(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = int(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        xmax = std::min(xmax, max_taps);
        axis->first[size_t(i)] = xmin;
        axis->count[size_t(i)] = std::max(xmax, 0);
    }
    finish_axis(axis);
    axis->stride = round_up4(std::max(axis->max_count, 1));
    axis->weights.assign(size_t(outputs) * size_t(axis->stride), 0);
    for (int i = 0; i < outputs; ++i) {
        const int taps = axis->count[size_t(i)];
        if (taps == 0) continue;
        const double center = center_of(out_origin + i);
        const int xmin = axis->first[size_t(i)];
        auto weight = [&](int x) { return pillow_bilinear((x + xmin - center + 0.5) * ss); };
        double ww = 0.0;
        for (int x = 0; x < taps; ++x) ww += weight(x);
        int32_t* out = &axis->weights[size_t(i) * size_t(axis->stride)];
        for (int x = 0; x < taps; ++x) {
            double k = weight(x);
            if (ww != 0.0) k /= ww;
            const double scaled = k * (1 << AxisTaps::kWeightBits22);
            out[x] = k < 0 ? int(-0.5 + scaled) : int(0.5 + scaled);
        }
    }
}

// OpenCV resize (imgproc/src/resize.cpp, INTER_LINEAR, 8U): scale = 1 / (dst / src);
// fx = float((d + 0.5) * scale - 0.5); sx = floor(fx); weights saturate_cast<short>
// ((1 - fx) * 2048) and (fx * 2048) with round-half-even.
struct CvTap {
    int sx;
    int32_t w0, w1;
};

CvTap opencv_tap(int d, double scale) {
    float f = float((d + 0.5) * scale - 0.5);
    int s = int(f);
    s -= (float(s) > f);  // cvFloor
    f -= float(s);
    CvTap tap;
    tap.sx = s;
    tap.w0 = int32_t(std::lrintf((1.0f - f) * float(1 << AxisTaps::kWeightBits11)));
    tap.w1 = int32_t(std::lrintf(f * float(1 << AxisTaps::kWeightBits11)));
    return tap;
}

// Columns: out of range taps are clamped to the border with weights (2048, 0), i.e. one tap.
void opencv_horizontal(int in_size, int out_size, int out_origin, int outputs, AxisTaps* taps) {
    const double scale = 1.0 / (double(out_size) / in_size);
    reset_axis(taps, outputs, 4);
    AxisTaps& axis = *taps;
    for (int i = 0; i < outputs; ++i) {
        const int d = out_origin + i;
        if (d < 0 || d >= out_size) continue;
        CvTap tap = opencv_tap(d, scale);
        int32_t* w = &axis.weights[size_t(i) * axis.stride];
        if (tap.sx < 0 || tap.sx + 1 >= in_size) {
            axis.first[i] = tap.sx < 0 ? 0 : in_size - 1;
            axis.count[i] = 1;
            w[0] = 1 << AxisTaps::kWeightBits11;
        } else {
            axis.first[i] = tap.sx;
            axis.count[i] = 2;
            w[0] = tap.w0;
            w[1] = tap.w1;
        }
    }
    finish_axis(&axis);
}

// Rows: both source rows are clamped into the image but keep their unclamped weights
// (resizeGeneric_Invoker); count 1 means both taps read the same row.
void opencv_vertical(int in_size, int out_size, int out_origin, int outputs, AxisTaps* taps) {
    const double scale = 1.0 / (double(out_size) / in_size);
    reset_axis(taps, outputs, 4);
    AxisTaps& axis = *taps;
    for (int i = 0; i < outputs; ++i) {
        const int d = out_origin + i;
        if (d < 0 || d >= out_size) continue;
        CvTap tap = opencv_tap(d, scale);
        const int r0 = std::min(std::max(tap.sx, 0), in_size - 1);
        const int r1 = std::min(std::max(tap.sx + 1, 0), in_size - 1);
        axis.first[i] = r0;
        axis.count[i] = r1 - r0 + 1;
        int32_t* w = &axis.weights[size_t(i) * axis.stride];
        w[0] = tap.w0;
        w[1] = tap.w1;
    }
    finish_axis(&axis);
}

}  // namespace

FilterKind filter_for(Semantics semantics) {
    return semantics == Semantics::kMindSpore ? FilterKind::kOpenCvLinear : FilterKind::kAntialiasBilinear;
}

ResizeGeometry resize_geometry(Semantics semantics, int width, int height, const TensorSpec& spec) {
    if (width < 1 || height < 1) throw std::invalid_argument("image size must be positive");
    if (width > kMaxImageSide || height > kMaxImageSide)
        throw ResizeTooLarge("a " + size_text(width, height) + " image: sides over " + std::to_string(kMaxImageSide) +
                             " pixels are not supported; crop or shrink it first");
    const int target = spec.resize;
    // Both libraries keep the width as the short side of a square.
    const bool portrait = width <= height;
    const int short_side = portrait ? width : height, long_side = portrait ? height : width;
    const int64_t resized_long = resized_long_side(semantics, short_side, long_side, target);
    const int64_t resized_width = portrait ? target : resized_long;
    const int64_t resized_height = portrait ? resized_long : target;
    if (resized_long > kMaxImageSide)
        throw ResizeTooLarge("resizing " + size_text(width, height) + " to a short side of " + std::to_string(target) +
                             " gives " + size_text(resized_width, resized_height) + ", over the limit of " +
                             std::to_string(kMaxImageSide) +
                             " pixels per side; lower resize or crop the image to a less extreme aspect ratio");
    ResizeGeometry g;
    g.resized_width = int(resized_width);
    g.resized_height = int(resized_height);
    g.crop_width = spec.crop_width;
    g.crop_height = spec.crop_height;
    if (semantics == Semantics::kMindSpore) {
        g.crop_left = floor_origin(g.resized_width, g.crop_width);
        g.crop_top = floor_origin(g.resized_height, g.crop_height);
    } else {
        g.crop_left = round_half_even_origin(g.resized_width, g.crop_width);
        g.crop_top = round_half_even_origin(g.resized_height, g.crop_height);
    }
    return g;
}

void make_resize_plan(FilterKind kind, int source_width, int source_height, const ResizeGeometry& g, ResizePlan* plan) {
    if (source_width < 1 || source_height < 1) throw std::invalid_argument("source size must be positive");
    plan->kind = kind;
    plan->source_width = source_width;
    plan->source_height = source_height;
    if (kind == FilterKind::kAntialiasBilinear) {
        check_shrink("columns", source_width, g.resized_width);
        check_shrink("rows", source_height, g.resized_height);
        antialias_axis(source_width, g.resized_width, g.crop_left, g.crop_width, &plan->horizontal);
        antialias_axis(source_height, g.resized_height, g.crop_top, g.crop_height, &plan->vertical);
    } else {
        opencv_horizontal(source_width, g.resized_width, g.crop_left, g.crop_width, &plan->horizontal);
        opencv_vertical(source_height, g.resized_height, g.crop_top, g.crop_height, &plan->vertical);
    }
}

}  // namespace ibnedge
