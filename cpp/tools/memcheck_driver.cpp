// Memory-check driver (tests/memcheck.sh): runs the engine's batch API over the good and bad
// corpora under ASan + UBSan + LSan, in every semantics, at several thread counts, from paths
// and from bytes, plus decoded-pixel inputs with odd strides and several concurrent callers.
// The sanitizers catch invalid accesses and leaks; this program checks what they cannot:
// each item's outcome is the expected one, failed rows are zero, and the result does not
// depend on thread count, input form, or the decode window.
//
// Usage: memcheck_driver LIST   where each LIST line is "ok|error|any<TAB>path".
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>

#include "engine.h"
#include "preprocess_types.h"

using namespace ibnedge;

namespace {

struct Entry {
    std::string expect;  // ok, error or any
    std::string path;
    std::vector<uint8_t> bytes;
    bool readable = false;
};

int g_failures = 0;

void failure(const std::string& what) {
    ++g_failures;
    std::cerr << "memcheck_driver: MISMATCH: " << what << "\n";
}

std::vector<Entry> read_list(const char* list_path) {
    std::ifstream list(list_path);
    if (!list) {
        std::cerr << "memcheck_driver: cannot open list " << list_path << "\n";
        std::exit(2);
    }
    std::vector<Entry> entries;
    std::string line;
    while (std::getline(list, line)) {
        size_t tab = line.find('\t');
        if (line.empty() || tab == std::string::npos) continue;
        Entry e;
        e.expect = line.substr(0, tab);
        e.path = line.substr(tab + 1);
        struct stat st;
        std::ifstream f;
        if (::stat(e.path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) f.open(e.path, std::ios::binary);
        if (f.is_open()) {
            e.bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
            e.readable = !f.bad();
        }
        entries.push_back(std::move(e));
    }
    return entries;
}

TensorSpec pixel_spec(Semantics semantics, int resize, int crop_h, int crop_w) {
    TensorSpec spec;
    spec.semantics = semantics;
    spec.resize = resize;
    spec.crop_height = crop_h;
    spec.crop_width = crop_w;
    spec.mean = {{0.0, 0.0, 0.0}};
    spec.std = {{1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0}};
    spec.validate();
    return spec;
}

struct Batch {
    std::vector<float> out;
    std::vector<ItemStatus> statuses;
};

Batch run(Engine& engine, const std::vector<ImageSource>& items, const TensorSpec& spec, const DecodeOptions& options) {
    Batch b;
    b.out.assign(items.size() * spec.item_floats(), -1.0f);  // poison: every float must be written
    engine.run(items, spec, options, b.out.data(), &b.statuses);
    if (b.statuses.size() != items.size()) failure("statuses size != items size");
    return b;
}

bool row_equal(const Batch& a, const Batch& b, size_t i, size_t n) {
    return std::memcmp(a.out.data() + i * n, b.out.data() + i * n, n * sizeof(float)) == 0;
}

void check_rows(const std::string& label, const Batch& b, size_t n) {
    for (size_t i = 0; i < b.statuses.size(); ++i) {
        const float* row = b.out.data() + i * n;
        if (!b.statuses[i].ok()) {
            bool internal = b.statuses[i].kind == ErrorKind::kNotJpeg || b.statuses[i].kind == ErrorKind::kSkipped;
            if (!internal && b.statuses[i].message.empty()) failure(label + ": item " + std::to_string(i) + " failed without a message");
            if (std::any_of(row, row + n, [](float v) { return v != 0.0f; }))
                failure(label + ": failed item " + std::to_string(i) + " is not zero-filled");
        } else if (std::any_of(row, row + n, [](float v) { return !std::isfinite(v) || v < -0.5f || v > 255.5f; })) {
            failure(label + ": item " + std::to_string(i) + " has values outside 0..255 (unwritten or garbage)");
        }
    }
}

// Decoded-pixel inputs: deterministic gradients of awkward shapes, with RGB and RGBX
// layouts and flipped (negative) strides.
struct PixelImage {
    std::vector<uint8_t> data;
    PixelView view;
};

std::vector<PixelImage> make_pixel_images() {
    const int sizes[][3] = {{1, 1, 3}, {7, 5, 4}, {500, 375, 3}, {375, 500, 4}, {2000, 3, 3}, {3, 900, 3}, {257, 255, 4}};
    std::vector<PixelImage> images;
    for (auto& s : sizes) {
        for (int flip = 0; flip < 2; ++flip) {
            PixelImage img;
            int w = s[0], h = s[1], c = s[2];
            img.data.resize(size_t(w) * h * c);
            for (int y = 0; y < h; ++y)
                for (int x = 0; x < w; ++x)
                    for (int k = 0; k < c; ++k)
                        img.data[(size_t(y) * w + x) * c + k] = uint8_t((x * 7 + y * 13 + k * 80 + ((x ^ y) & 31)) & 255);
            PixelView v;
            v.width = w;
            v.height = h;
            v.channels = c;
            v.pixel_stride = c;
            v.row_stride = ptrdiff_t(w) * c;
            v.data = img.data.data();
            if (flip) {  // bottom-up rows, right-to-left pixels
                v.data = img.data.data() + (size_t(h) * w - 1) * c;
                v.row_stride = -v.row_stride;
                v.pixel_stride = -v.pixel_stride;
            }
            img.view = v;
            images.push_back(std::move(img));
        }
    }
    return images;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: memcheck_driver LIST (lines: ok|error|any<TAB>path)\n";
        return 2;
    }
    std::vector<Entry> entries = read_list(argv[1]);
    if (entries.empty()) {
        std::cerr << "memcheck_driver: empty list\n";
        return 2;
    }
    std::vector<ImageSource> as_paths, as_bytes;
    std::vector<size_t> byte_index;  // entry index of each as_bytes item
    for (size_t i = 0; i < entries.size(); ++i) {
        as_paths.push_back(ImageSource::file(entries[i].path));
        if (entries[i].readable) {
            as_bytes.push_back(ImageSource::encoded(entries[i].bytes.data(), entries[i].bytes.size()));
            byte_index.push_back(i);
        }
    }
    std::vector<PixelImage> pixel_images = make_pixel_images();
    std::vector<ImageSource> as_pixels;
    for (auto& img : pixel_images) as_pixels.push_back(ImageSource::decoded(img.view));
    as_pixels.push_back(ImageSource());  // kNone: already failed upstream

    const Semantics modes[] = {Semantics::kPil, Semantics::kMindSpore, Semantics::kFast};
    const int specs[][3] = {{256, 224, 224}, {100, 128, 90}};  // resize, crop h, crop w (the second pads)
    size_t total_items = 0;
    for (Semantics mode : modes) {
        for (auto& s : specs) {
            TensorSpec spec = pixel_spec(mode, s[0], s[1], s[2]);
            const size_t n = spec.item_floats();
            std::string tag = std::string(semantics_name(mode)) + " resize " + std::to_string(s[0]);
            DecodeOptions options;

            Engine single(1);
            Batch reference = run(single, as_paths, spec, options);
            check_rows(tag + " paths", reference, n);
            std::map<std::string, int> kinds;
            for (size_t i = 0; i < entries.size(); ++i) {
                const ItemStatus& st = reference.statuses[i];
                kinds[st.ok() ? "ok" : error_kind_name(st.kind)]++;
                const std::string& expect = entries[i].expect;
                if ((expect == "ok" && !st.ok()) || (expect == "error" && st.ok()))
                    failure(tag + ": " + entries[i].path + " expected " + expect + ", got " +
                            (st.ok() ? std::string("ok") : std::string(error_kind_name(st.kind)) + ": " + st.message));
            }
            total_items += entries.size();
            std::cout << tag << ":";
            for (auto& kv : kinds) std::cout << " " << kv.first << "=" << kv.second;
            std::cout << "\n";

            for (int threads : {2, 4}) {
                Engine engine(threads);
                Batch b = run(engine, as_paths, spec, options);
                check_rows(tag + " threads", b, n);
                for (size_t i = 0; i < entries.size(); ++i) {
                    if (b.statuses[i].kind != reference.statuses[i].kind || !row_equal(b, reference, i, n))
                        failure(tag + ": threads=" + std::to_string(threads) + " differs on " + entries[i].path);
                }
            }

            Engine pair(2);
            Batch bytes = run(pair, as_bytes, spec, options);
            check_rows(tag + " bytes", bytes, n);
            for (size_t j = 0; j < as_bytes.size(); ++j) {
                size_t i = byte_index[j];
                bool same = bytes.statuses[j].kind == reference.statuses[i].kind &&
                            std::memcmp(bytes.out.data() + j * n, reference.out.data() + i * n, n * sizeof(float)) == 0;
                if (!same) failure(tag + ": bytes input differs from path input on " + entries[i].path);
            }

            DecodeOptions whole = options;
            whole.restrict_window = false;  // decode every row and column: must change nothing
            Batch full = run(pair, as_paths, spec, whole);
            for (size_t i = 0; i < entries.size(); ++i) {
                if (full.statuses[i].ok() != reference.statuses[i].ok() ||
                    (reference.statuses[i].ok() && !row_equal(full, reference, i, n)))
                    failure(tag + ": restrict_window=false differs on " + entries[i].path);
            }

            DecodeOptions other = options;  // the other decode paths, checked for memory errors only
            other.exif_orientation = true;
            other.accept_damaged = true;
            check_rows(tag + " exif+accept_damaged", run(pair, as_paths, spec, other), n);
            other.max_pixels = 100000;  // the 500x375 photos now exceed the cap
            Batch capped = run(pair, as_paths, spec, other);
            check_rows(tag + " capped", capped, n);
            if (std::none_of(capped.statuses.begin(), capped.statuses.end(),
                             [](const ItemStatus& st) { return st.kind == ErrorKind::kTooLarge; }))
                failure(tag + ": a 100000-pixel cap refused nothing");

            Batch pixels_single = run(single, as_pixels, spec, options);
            check_rows(tag + " pixels", pixels_single, n);
            Batch pixels_pair = run(pair, as_pixels, spec, options);
            for (size_t i = 0; i < as_pixels.size(); ++i) {
                if (pixels_pair.statuses[i].kind != pixels_single.statuses[i].kind || !row_equal(pixels_pair, pixels_single, i, n))
                    failure(tag + ": pixel item " + std::to_string(i) + " differs between 1 and 2 threads");
                bool should_fail = i + 1 == as_pixels.size();
                if (pixels_single.statuses[i].ok() == should_fail)
                    failure(tag + ": pixel item " + std::to_string(i) + " unexpected status " +
                            error_kind_name(pixels_single.statuses[i].kind) + " " + pixels_single.statuses[i].message);
            }
        }
    }

    // One engine, four callers at once (what several Python threads do).
    {
        TensorSpec spec = pixel_spec(Semantics::kFast, 256, 224, 224);
        const size_t n = spec.item_floats();
        Engine shared(2);
        Engine single(1);
        Batch reference = run(single, as_paths, spec, DecodeOptions());
        std::vector<Batch> results(4);
        std::vector<std::thread> callers;
        for (int k = 0; k < 4; ++k)
            callers.emplace_back([&, k] { results[k] = run(shared, as_paths, spec, DecodeOptions()); });
        for (auto& t : callers) t.join();
        for (int k = 0; k < 4; ++k)
            for (size_t i = 0; i < entries.size(); ++i)
                if (results[k].statuses[i].kind != reference.statuses[i].kind || !row_equal(results[k], reference, i, n))
                    failure("concurrent caller " + std::to_string(k) + " differs on " + entries[i].path);
    }

    if (g_failures) {
        std::cerr << "memcheck_driver: " << g_failures << " mismatches\n";
        return 1;
    }
    std::cout << "memcheck_driver: " << entries.size() << " files x " << total_items / entries.size()
              << " configurations: every outcome as expected\n";
    return 0;
}
