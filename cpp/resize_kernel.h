// The fused resize + crop + normalise + HWC->CHW kernel. Source rows arrive one at a
// time, top to bottom (straight from the JPEG decoder); each is filtered horizontally into
// a small ring of crop-wide rows, and every output row is finished (vertical pass,
// normalisation, planar store) as soon as its last source row has arrived.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "preprocess_types.h"
#include "resize_plan.h"

namespace ibnedge {

// Pixel value -> normalised float per channel: v * scale + bias with
// scale = 1 / (255 std), bias = -mean / std (float multiply, then float add: the same in
// the vector and scalar paths; mean 0, std 1/255 gives the pixel values exactly).
struct Normalization {
    explicit Normalization(const TensorSpec& spec);
    float scale[3];
    float bias[3];
};

// The vector instruction set the kernel's passes use: AVX2 where the x86 CPU has it, NEON on
// every aarch64 CPU (part of the base architecture), else none. IBNEDGE_SIMD=off in the
// environment forces the portable passes (read once per process: the same CPU-feature flag
// for every Resampler), so tests can compare them byte for byte with the vector ones.
enum class KernelSimd { kNone, kAvx2, kNeon };
KernelSimd kernel_simd();
const char* kernel_simd_name(KernelSimd simd);

// Source rows are RGBX (4 bytes per pixel, X ignored). The vector loops read past the last
// column the filter uses (those pixels get zero weights): row buffers must keep this many
// pixels after column_end() readable.
int row_padding_pixels(const ResizePlan& plan);

// A decoded image in memory: HWC uint8 with 3 (RGB) or 4 (RGBX/RGBA, 4th ignored) channels.
struct PixelView {
    const uint8_t* data = nullptr;
    int width = 0;
    int height = 0;
    int channels = 3;
    ptrdiff_t row_stride = 0;    // bytes between rows (may be negative)
    ptrdiff_t pixel_stride = 0;  // bytes between pixels of a row (may be negative)
};

// The memory a Resampler works in, kept by its owner (a Workspace) from item to item so
// that resampling an image allocates nothing once the buffers have grown to fit: the ring of
// horizontally filtered rows and the per-plan tables the vector passes read.
struct ResamplerScratch {
    std::vector<uint8_t> ring;
    std::vector<uint8_t> wanted;
    std::vector<int> relative_first;   // horizontal taps' first column relative to x_origin
    std::vector<int16_t> split_weights;  // horizontal antialias weights, split for AVX2 or NEON
    std::vector<int32_t> vertical_pairs;  // AVX2 layout of the vertical antialias weights
    std::vector<int16_t> pair_weights;    // (w0, w1) per output of the OpenCV horizontal pass, AVX2 or NEON layout
    std::vector<uint8_t> row_out;         // one finished uint8 RGBX output row
    std::vector<const uint8_t*> row_pointers;  // the ring rows of one output row's taps
    std::vector<uint8_t> source_row;      // resample_pixels: one RGBX row of the pixel array
};

class Resampler {
public:
    // `plan`, `norm` and `scratch` must outlive the resampler (which fills `scratch` for
    // `plan`; one resampler at a time per scratch); `out` receives 3 x crop_height x
    // crop_width floats.
    Resampler(const ResizePlan& plan, const Normalization& norm, ResamplerScratch& scratch, float* out);

    // The source rows and columns the filter reads.
    int row_begin() const { return plan_.vertical.source_begin; }
    int row_end() const { return plan_.vertical.source_end; }
    int column_begin() const { return plan_.horizontal.source_begin; }
    int column_end() const { return plan_.horizontal.source_end; }
    // Rows inside [row_begin, row_end) no output reads (2-tap filters shrinking an image).
    bool wants_row(int y) const;

    // Source row y (increasing between calls) as RGBX pixels of columns x_origin, x_origin+1,
    // ...; it must cover [column_begin, column_end) plus row_padding_pixels() readable pixels.
    void push_row(int y, const uint8_t* rgbx, int x_origin);
    // Emits the output rows still pending (zero padding below the image). Call once, after
    // the last row.
    void finish();

private:
    void set_column_origin(int x_origin);
    void filter_antialias_row(const uint8_t* rgbx, uint8_t* dst) const;
    void filter_opencv_row(const uint8_t* rgbx, int16_t* dst) const;
    void emit_ready_rows(int last_pushed);
    void emit_row(int j);
    void store_row(int j, const uint8_t* rgbx);

    const ResizePlan& plan_;
    const Normalization& norm_;
    ResamplerScratch& s_;
    float* out_;
    KernelSimd simd_;
    int ring_rows_;
    size_t ring_stride_;  // bytes per ring row
    int x_origin_;
    int next_output_;
    int last_row_;
};

// Resamples a decoded image (all of it in memory) through `plan`.
void resample_pixels(const PixelView& pixels, const ResizePlan& plan, const Normalization& norm,
                     ResamplerScratch& scratch, float* out);

}  // namespace ibnedge
