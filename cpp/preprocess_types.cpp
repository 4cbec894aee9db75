#include "preprocess_types.h"

#include <cmath>
#include <limits>
#include <stdexcept>

namespace ibnedge {

Semantics parse_semantics(const std::string& name) {
    if (name == "pil") return Semantics::kPil;
    if (name == "mindspore") return Semantics::kMindSpore;
    if (name == "fast") return Semantics::kFast;
    throw std::invalid_argument("unknown resize semantics '" + name + "': choose one of pil, mindspore, fast");
}

const char* semantics_name(Semantics semantics) {
    switch (semantics) {
        case Semantics::kPil: return "pil";
        case Semantics::kMindSpore: return "mindspore";
        case Semantics::kFast: return "fast";
    }
    return "?";
}

void TensorSpec::validate() const {
    // 16384 keeps every intermediate product of the resize tables far from int overflow.
    constexpr int kMaxSide = 16384;
    if (resize < 1 || resize > kMaxSide)
        throw std::invalid_argument("resize must be in 1.." + std::to_string(kMaxSide) + ", got " +
                                    std::to_string(resize));
    if (crop_height < 1 || crop_width < 1 || crop_height > kMaxSide || crop_width > kMaxSide)
        throw std::invalid_argument("crop must be in 1.." + std::to_string(kMaxSide) + " on each side, got " +
                                    std::to_string(crop_height) + "x" + std::to_string(crop_width));
    for (int c = 0; c < 3; ++c) {
        if (!std::isfinite(mean[c]) || !std::isfinite(std[c]) || !(std[c] > 0))
            throw std::invalid_argument("mean must be finite and std finite and > 0 for every channel");
    }
}

uint64_t DecodeOptions::memory_budget() const {
    const uint64_t most = std::numeric_limits<uint64_t>::max() / kBudgetBytesPerPixel;
    return max_pixels > most ? std::numeric_limits<uint64_t>::max() : max_pixels * kBudgetBytesPerPixel;
}

const char* error_kind_name(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::kNone: return "";
        case ErrorKind::kUnreadable: return "unreadable";
        case ErrorKind::kEmpty: return "empty";
        case ErrorKind::kTruncated: return "truncated";
        case ErrorKind::kCorrupt: return "corrupt";
        case ErrorKind::kNotImage: return "not_image";
        case ErrorKind::kTooLarge: return "too_large";
        case ErrorKind::kUnsupported: return "unsupported";
        case ErrorKind::kNotJpeg: return "not_jpeg";
        case ErrorKind::kSkipped: return "skipped";
    }
    return "?";
}

}  // namespace ibnedge
