// libFuzzer target (tests/fuzz.sh): arbitrary bytes through the engine's per-item entry point
// (probe, pixel cap, libjpeg decode with the crop window, resize + crop + normalise) in every
// semantics, with small output sizes so each input runs fast. Crashes, leaks and sanitizer
// reports are what libFuzzer looks for; the checks below catch silent misbehaviour: a failed
// item must be zero-filled, a decoded one must hold pixel values, and a workspace that has
// seen other inputs (the one kept across the whole run, and a fresh one on its second pass
// over this input) must give exactly what a fresh workspace gives.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "engine.h"
#include "preprocess_types.h"
#include "resize_kernel.h"
#include "workspace.h"

using namespace ibnedge;

namespace {

struct Variant {
    int resize, crop_h, crop_w;
};
// The second pads (crop larger than the resized image); the third is a 1-row strip.
const Variant kVariants[] = {{32, 24, 24}, {17, 20, 9}, {64, 1, 64}};
const Semantics kModes[] = {Semantics::kPil, Semantics::kMindSpore, Semantics::kFast};

Workspace& kept_workspace() {  // the fuzzer's own, across every input of the run
    static Workspace workspace;
    return workspace;
}

bool same(const ItemStatus& a, const std::vector<float>& out_a, const ItemStatus& b, const std::vector<float>& out_b) {
    return a.kind == b.kind && a.message == b.message &&
           std::memcmp(out_a.data(), out_b.data(), out_a.size() * sizeof(float)) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // Options from the input's length, so the bytes themselves stay a plain image file.
    const Variant& v = kVariants[size % 3];
    DecodeOptions options;
    options.exif_orientation = (size / 3) % 2 == 1;
    options.accept_damaged = (size / 6) % 2 == 1;
    options.max_pixels = uint64_t(1) << 24;  // 16 Mpixel: bounded memory per input
    for (Semantics mode : kModes) {
        TensorSpec spec;
        spec.semantics = mode;
        spec.resize = v.resize;
        spec.crop_height = v.crop_h;
        spec.crop_width = v.crop_w;
        spec.mean = {{0.0, 0.0, 0.0}};
        spec.std = {{1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0}};
        Normalization norm(spec);
        const ImageSource item = ImageSource::encoded(data, size);
        std::unique_ptr<Workspace> fresh(new Workspace);
        std::vector<float> out(spec.item_floats(), -1.0f);
        const ItemStatus status = preprocess_item(item, spec, options, norm, *fresh, out.data());
        std::vector<float> again(spec.item_floats(), -1.0f);
        const ItemStatus second = preprocess_item(item, spec, options, norm, *fresh, again.data());
        std::vector<float> kept(spec.item_floats(), -1.0f);
        const ItemStatus third = preprocess_item(item, spec, options, norm, kept_workspace(), kept.data());
        if (!same(status, out, second, again) || !same(status, out, third, kept)) std::abort();
        for (float value : out) {
            if (!status.ok() && value != 0.0f) std::abort();  // failed rows must be zero-filled
            if (status.ok() && !(value >= -0.5f && value <= 255.5f)) std::abort();  // unwritten or garbage
        }
        // Every user-facing failure explains itself (kNotJpeg is internal: Python decodes those).
        if (!status.ok() && status.kind != ErrorKind::kNotJpeg && status.message.empty()) std::abort();
    }
    return 0;
}
