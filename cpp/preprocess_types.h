// The vocabulary shared by the engine's parts: what to produce (TensorSpec), how to
// decode (DecodeOptions) and how an item failed (ItemStatus). Plain C++17, no Python.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace ibnedge {

// How an image is resized; each reproduces a reference library exactly
// (shared/notes/preprocessing.md).
enum class Semantics {
    kPil,        // torchvision Resize + CenterCrop on PIL: antialiased bilinear, round() crop offsets
    kMindSpore,  // mindspore.dataset.vision Resize + CenterCrop: OpenCV INTER_LINEAR, floor offsets
    kFast,       // DCT-domain reduction in the JPEG decoder, then antialiased bilinear
};

// Parses "pil" / "mindspore" / "fast"; throws std::invalid_argument naming the valid ones.
Semantics parse_semantics(const std::string& name);
const char* semantics_name(Semantics semantics);

// The output of one item: (3, crop_height, crop_width) float32, CHW, RGB,
// value = (pixel / 255 - mean) / std.
struct TensorSpec {
    int resize = 256;  // shorter side after resizing
    int crop_height = 224;
    int crop_width = 224;
    std::array<double, 3> mean{{0.485, 0.456, 0.406}};
    std::array<double, 3> std{{0.229, 0.224, 0.225}};
    Semantics semantics = Semantics::kPil;

    // Throws std::invalid_argument when a field is out of range.
    void validate() const;
    size_t item_floats() const { return size_t(3) * size_t(crop_height) * size_t(crop_width); }
};

struct DecodeOptions {
    bool exif_orientation = false;  // apply the JPEG's EXIF orientation (training pipelines ignore it)
    // Accept damaged JPEGs: data that ends early, and entropy-coded data libjpeg cannot
    // decode and fills in (with grey, or with zeros for a bad code). Off: such a file is
    // refused (kTruncated / kCorrupt), whatever the crop window and semantics.
    bool accept_damaged = false;
    uint64_t max_pixels = 178956970;  // Pillow's decompression-bomb limit; checked from the header
    // Decode only the rows and MCU columns the crop needs (always on in production; a
    // switch so tests can prove it changes nothing).
    bool restrict_window = true;

    // Bytes one item may hold while it is decoded: the JPEG file read into memory,
    // libjpeg's buffers (whole-image coefficient arrays of progressive files) and the
    // decoded window of an EXIF-rotated image, together. One RGBX frame at the pixel cap.
    static constexpr uint64_t kBudgetBytesPerPixel = 4;
    uint64_t memory_budget() const;
};
// The fix every too_large message names (the Python keyword and the CLI flag).
inline constexpr const char* kRaiseMaxPixels = "raise max_pixels (ibnedge --max-pixels N) if the image is genuine";

// Why an item produced no tensor. The names (error_kind_name) are the Python contract.
enum class ErrorKind {
    kNone = 0,
    kUnreadable,   // the path cannot be opened or read
    kEmpty,        // zero bytes
    kTruncated,    // the JPEG data ends early
    kCorrupt,      // the decoder rejected the data
    kNotImage,     // not an image format at all
    kTooLarge,     // more pixels than the cap (checked before allocating)
    kUnsupported,  // an image, but a colour space / layout the engine does not handle
    kNotJpeg,      // internal: a file that is an image but not a JPEG; the caller decodes it
    kSkipped,      // internal: the caller marked the item as already failed
};

const char* error_kind_name(ErrorKind kind);

struct ItemStatus {
    ErrorKind kind = ErrorKind::kNone;
    std::string message;

    bool ok() const { return kind == ErrorKind::kNone; }
    static ItemStatus error(ErrorKind kind, std::string message) { return ItemStatus{kind, std::move(message)}; }
};

}  // namespace ibnedge
