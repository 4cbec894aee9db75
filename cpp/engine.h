// Batch orchestration: one item per task on a persistent thread pool, one status per
// item. A failing item gets a zero-filled output and an error kind; it never touches the
// other items.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "preprocess_types.h"
#include "resize_kernel.h"
#include "thread_pool.h"

namespace ibnedge {

// One input of a batch. Memory it points to must stay valid and unchanged during run().
struct ImageSource {
    enum class Type {
        kNone,     // already failed upstream: zero-filled, status kSkipped
        kEncoded,  // encoded bytes (JPEG decoded here; anything else reports kNotJpeg)
        kPath,     // a file the engine reads itself (same rules as kEncoded)
        kPixels,   // decoded HWC uint8 RGB(X) pixels
    };
    Type type = Type::kNone;
    const uint8_t* data = nullptr;
    size_t size = 0;
    std::string path;
    PixelView pixels;

    static ImageSource encoded(const uint8_t* data, size_t size);
    static ImageSource file(std::string path);
    static ImageSource decoded(const PixelView& pixels);
};

struct Workspace;

// Preprocesses one item on the calling thread into `out` (3 x crop_height x crop_width
// floats, zero-filled on failure), in `workspace` (workspace.h; the result never depends on
// what it did before). Never throws for bad image data.
ItemStatus preprocess_item(const ImageSource& item, const TensorSpec& spec, const DecodeOptions& options,
                           const Normalization& norm, Workspace& workspace, float* out);

class Engine {
public:
    // threads: total parallelism of a run (the calling thread counts as one);
    // 0 means one per hardware thread.
    explicit Engine(int threads);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;
    int threads() const { return threads_; }

    // Fills out[i * spec.item_floats() ...] for every item; statuses[i] says how each went.
    // Safe to call from several threads at once (each call waits for its own items), and
    // in a child forked from the process that made the engine.
    void run(const std::vector<ImageSource>& items, const TensorSpec& spec, const DecodeOptions& options, float* out,
             std::vector<ItemStatus>* statuses);

private:
    // The pool, started again on first use in a forked child (fork copies no workers).
    ThreadPool* pool();

    int threads_;
    // Owned; threads_ - 1 workers, null when single-threaded. Replaced (never under a lock:
    // a child can be forked while another thread holds any lock) only in a forked child.
    std::atomic<ThreadPool*> pool_{nullptr};
    // The workspace of the thread that calls run(), reused by one run() at a time
    // (caller_busy_); concurrent runs make their own.
    std::unique_ptr<Workspace> caller_workspace_;
    std::atomic<bool> caller_busy_{false};
};

}  // namespace ibnedge
