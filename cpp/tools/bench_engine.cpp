// Engine speed without Python: per-image medians of the engine (each semantics) beside
// libjpeg-turbo's own full and DCT-scaled decodes of the same in-memory files (the floor),
// and whole-batch throughput at several thread counts. For machines where only a C++
// toolchain is at hand, and for thread scaling free of interpreter overhead.
//
// Usage: bench_engine [--repeats N] [--threads 1,2] FILE...   (JPEG files, read into memory first)
//
// Timing is round-robin as in the Python benchmark (ibnedge/bench/preprocess.py): per file
// and repeat the pipelines run in a shuffled order (seeded), each timed call after an
// untimed call of the same pipeline on the previous file, so that no pipeline is timed
// just after one that warmed or flushed the caches it needs.
#include <algorithm>
#include <chrono>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <jpeglib.h>

#include "engine.h"
#include "preprocess_types.h"
#include "workspace.h"

using namespace ibnedge;

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct JumpError {
    jpeg_error_mgr pub;
    std::jmp_buf jump;
};

void jump_on_error(j_common_ptr cinfo) { std::longjmp(reinterpret_cast<JumpError*>(cinfo->err)->jump, 1); }

// The floor is deliberately not the engine's JpegDecoder: it is libjpeg-turbo as a plain
// user drives it (RGB output, as simplejpeg, the Python benchmark's floor, does), so that
// the engine is measured against an independent baseline.
//
// libjpeg-turbo decoding the whole file to RGB (what simplejpeg does), no
// resize; with min_short_side > 0 at the smallest DCT scale M/8 that keeps the short side
// at least that long (simplejpeg's min_height = min_width rule). `image` is caller-owned
// so no C++ object lives across the setjmp.
bool decode_floor(const std::vector<uint8_t>& file, int min_short_side, std::vector<uint8_t>* image) {
    jpeg_decompress_struct cinfo;
    JumpError err;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jump_on_error;
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, file.data(), (unsigned long)file.size());
    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {  // tables only, no image
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    cinfo.out_color_space = JCS_EXT_RGB;
    cinfo.scale_num = 8;
    cinfo.scale_denom = 8;
    const unsigned short_side = std::min(cinfo.image_width, cinfo.image_height);
    for (unsigned m = 1; min_short_side > 0 && m < 8; ++m) {
        if ((short_side * m + 7) / 8 >= unsigned(min_short_side)) {
            cinfo.scale_num = m;
            break;
        }
    }
    jpeg_calc_output_dimensions(&cinfo);
    size_t stride = size_t(cinfo.output_width) * 3;
    if (image->size() < stride * cinfo.output_height) image->resize(stride * cinfo.output_height);
    // Each call does less than asked only when a data source suspends (never the memory
    // source's); a short one ends the decode as a failure rather than looping forever.
    bool whole = jpeg_start_decompress(&cinfo);
    while (whole && cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = image->data() + stride * cinfo.output_scanline;
        whole = jpeg_read_scanlines(&cinfo, &row, 1) == 1;
    }
    whole = whole && jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return whole;
}

std::vector<int> parse_list(const std::string& s) {
    std::vector<int> out;
    std::stringstream ss(s);
    std::string part;
    while (std::getline(ss, part, ',')) out.push_back(std::atoi(part.c_str()));
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    int repeats = 5;
    std::vector<int> thread_counts{1, 2};
    std::vector<std::string> paths;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--repeats" && i + 1 < argc) {
            repeats = std::max(1, std::atoi(argv[++i]));
        } else if (a == "--threads" && i + 1 < argc) {
            thread_counts = parse_list(argv[++i]);
        } else {
            paths.push_back(a);
        }
    }
    if (paths.empty()) {
        std::cerr << "usage: bench_engine [--repeats N] [--threads 1,2] FILE...\n";
        return 2;
    }
    std::vector<std::vector<uint8_t>> files;
    for (auto& p : paths) {
        std::ifstream f(p, std::ios::binary);
        if (!f.is_open()) {
            std::cerr << "bench_engine: cannot read " << p << "\n";
            return 2;
        }
        files.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    const size_t n = files.size();
    TensorSpec base;
    std::vector<ImageSource> items;
    for (auto& f : files) items.push_back(ImageSource::encoded(f.data(), f.size()));

    // Per-image medians, round-robin over files and pipelines (see the top), one thread.
    const char* names[] = {"floor_full", "floor_scaled", "ibnedge_pil", "ibnedge_mindspore", "ibnedge_fast"};
    const Semantics modes[] = {Semantics::kPil, Semantics::kMindSpore, Semantics::kFast};
    std::vector<std::vector<std::vector<double>>> samples(5, std::vector<std::vector<double>>(n));
    std::vector<uint8_t> image;
    std::vector<float> out(base.item_floats());
    std::vector<TensorSpec> specs(3, base);
    std::vector<Normalization> norms;
    for (int m = 0; m < 3; ++m) {
        specs[m].semantics = modes[m];
        norms.emplace_back(specs[m]);
    }
    DecodeOptions options;
    Workspace workspace;  // reused from item to item, as an engine thread does
    auto run_pipeline = [&](int k, size_t i) {
        if (k == 0) return decode_floor(files[i], 0, &image);
        if (k == 1) return decode_floor(files[i], base.resize, &image);
        return preprocess_item(items[i], specs[k - 2], options, norms[k - 2], workspace, out.data()).ok();
    };
    std::vector<int> order(5);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937 shuffler(12);  // the same order in every run
    for (int r = 0; r < repeats; ++r) {
        for (size_t i = 0; i < n; ++i) {
            std::shuffle(order.begin(), order.end(), shuffler);
            for (int k : order) {
                run_pipeline(k, (i + n - 1) % n);  // untimed: the pipeline warm, as in a loop over images
                auto t0 = Clock::now();
                const bool ok = run_pipeline(k, i);
                const double s = seconds_since(t0);
                if (!ok) {
                    std::cerr << "bench_engine: " << names[k] << " failed on " << paths[i] << "\n";
                    return 1;
                }
                samples[k][i].push_back(s);
            }
        }
    }
    std::printf("%zu files, per-image median ms, 1 thread:\n", n);
    double medians[5];
    for (int k = 0; k < 5; ++k) {
        std::vector<double> per_file;
        for (auto& s : samples[k]) per_file.push_back(median(s));
        medians[k] = 1e3 * median(per_file);
    }
    for (int k = 0; k < 5; ++k)
        std::printf("  %-20s %9.3f   x full decode %.2f   x scaled decode %.2f\n", names[k], medians[k],
                    medians[k] / medians[0], medians[k] / medians[1]);

    // Whole batches on the engine's pool.
    std::printf("batch ms per image by threads:\n");
    std::vector<float> batch_out(n * base.item_floats());
    for (int m = 0; m < 3; ++m) {
        std::printf("  %-20s", names[m + 2]);
        double one = 0;
        for (int t : thread_counts) {
            Engine engine(t);
            std::vector<ItemStatus> statuses;
            std::vector<double> times;
            for (int r = 0; r <= repeats; ++r) {
                auto t0 = Clock::now();
                engine.run(items, specs[m], options, batch_out.data(), &statuses);
                if (r > 0) times.push_back(seconds_since(t0) / double(n));
            }
            double ms = 1e3 * median(times);
            if (t == thread_counts.front()) one = ms;
            std::printf("   %d: %8.3f (x%.2f)", t, ms, one / ms);
        }
        std::printf("\n");
    }
    return 0;
}
