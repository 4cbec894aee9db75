// Tensor dump (tests/arm64.sh, ibnedge.bench.insn): runs the engine's batch API over a list
// of files in each semantics and writes what it produced, so that builds for different
// architectures and vector paths can be compared byte for byte (cmp), and so that an
// instruction counter can measure a whole batch.
//
// Usage: tensor_dump [--semantics pil,mindspore,fast] [--threads 1,2] [--repeat N] LIST [OUT_DIR]
//   LIST: one path per line. For each semantics, OUT_DIR/<semantics>.f32 gets the batch's
//   float32 tensors (ImageNet mean/std, 256 -> 224) and OUT_DIR/<semantics>.status one line
//   per item ("ok" or "<error kind>: <message>"). Every thread count must give the same bytes
//   as the first (checked here). --repeat runs each batch N times (for counting instructions:
//   the difference between two repeat counts is the per-batch cost without start-up).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "engine.h"
#include "preprocess_types.h"
#include "resize_kernel.h"

using namespace ibnedge;

namespace {

std::vector<std::string> split_commas(const std::string& text) {
    std::vector<std::string> parts;
    std::stringstream in(text);
    std::string part;
    while (std::getline(in, part, ',')) parts.push_back(part);
    return parts;
}

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "tensor_dump: " << why
              << "\nusage: tensor_dump [--semantics pil,mindspore,fast] [--threads 1,2] [--repeat N] LIST [OUT_DIR]\n";
    std::exit(2);
}

std::vector<std::string> read_list(const std::string& path) {
    std::ifstream list(path);
    if (!list) usage("cannot open list " + path);
    std::vector<std::string> paths;
    std::string line;
    while (std::getline(list, line))
        if (!line.empty()) paths.push_back(line);
    if (paths.empty()) usage("empty list " + path);
    return paths;
}

bool write_file(const std::string& path, const void* data, size_t size) {
    std::ofstream out(path, std::ios::binary);
    out.write(static_cast<const char*>(data), std::streamsize(size));
    return bool(out);
}

std::string status_lines(const std::vector<ItemStatus>& statuses) {
    std::string text;
    for (const ItemStatus& st : statuses)
        text += st.ok() ? std::string("ok\n") : std::string(error_kind_name(st.kind)) + ": " + st.message + "\n";
    return text;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> semantics = {"pil", "mindspore", "fast"};
    std::vector<int> threads = {1, 2};
    int repeat = 1;
    std::vector<std::string> positional;
    for (int a = 1; a < argc; ++a) {
        const std::string arg = argv[a];
        if ((arg == "--semantics" || arg == "--threads" || arg == "--repeat") && a + 1 < argc) {
            const std::string value = argv[++a];
            if (arg == "--semantics") semantics = split_commas(value);
            if (arg == "--threads") {
                threads.clear();
                for (const std::string& t : split_commas(value)) threads.push_back(std::atoi(t.c_str()));
            }
            if (arg == "--repeat") repeat = std::atoi(value.c_str());
        } else if (!arg.empty() && arg[0] == '-') {
            usage("unknown option " + arg);
        } else {
            positional.push_back(arg);
        }
    }
    if (positional.empty() || positional.size() > 2) usage("expected LIST [OUT_DIR]");
    if (repeat < 1 || threads.empty()) usage("--repeat and --threads need positive counts");
    for (int t : threads)
        if (t < 1) usage("--threads needs positive counts");

    std::vector<ImageSource> items;
    for (const std::string& path : read_list(positional[0])) items.push_back(ImageSource::file(path));
    std::cout << "tensor_dump: " << items.size() << " files, kernel " << kernel_simd_name(kernel_simd()) << "\n";

    int mismatches = 0;
    for (const std::string& name : semantics) {
        TensorSpec spec;
        try {
            spec.semantics = parse_semantics(name);
        } catch (const std::invalid_argument& e) {
            usage(e.what());
        }
        std::vector<float> first;
        std::vector<ItemStatus> first_statuses;
        for (int t : threads) {
            Engine engine(t);
            std::vector<float> out(items.size() * spec.item_floats());
            std::vector<ItemStatus> statuses;
            for (int r = 0; r < repeat; ++r) engine.run(items, spec, DecodeOptions(), out.data(), &statuses);
            if (first.empty()) {
                first.swap(out);
                first_statuses = statuses;
            } else if (std::memcmp(first.data(), out.data(), first.size() * sizeof(float)) != 0 ||
                       status_lines(statuses) != status_lines(first_statuses)) {
                std::cerr << "tensor_dump: MISMATCH: " << name << " at " << t << " threads differs from " << threads[0]
                          << " threads\n";
                ++mismatches;
            }
        }
        size_t ok = 0;
        for (const ItemStatus& st : first_statuses) ok += st.ok();
        std::cout << name << ": " << ok << "/" << items.size() << " ok\n";
        if (positional.size() == 2) {
            const std::string stem = positional[1] + "/" + name;
            const std::string text = status_lines(first_statuses);
            if (!write_file(stem + ".f32", first.data(), first.size() * sizeof(float)) ||
                !write_file(stem + ".status", text.data(), text.size())) {
                std::cerr << "tensor_dump: cannot write " << stem << ".*\n";
                return 2;
            }
        }
    }
    return mismatches ? 1 : 0;
}
