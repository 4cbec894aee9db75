#include "engine.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "jpeg_decoder.h"
#include "jpeg_probe.h"
#include "orientation.h"
#include "resize_plan.h"
#include "workspace.h"

namespace ibnedge {
namespace {

constexpr int kStripRows = 8;  // rows per jpeg_read_scanlines call

std::string errno_text(int code) { return std::error_code(code, std::generic_category()).message(); }

// Closes a file descriptor on every path out of read_jpeg_file.
struct FileDescriptor {
    int fd;
    ~FileDescriptor() {
        if (fd >= 0) ::close(fd);
    }
};

constexpr size_t kJpegMagicSize = 3;  // FF D8 FF
constexpr const char* kHeaderClaims = "image header claims";

// ``source``: "image header claims" (a file, refused before decoding) or "pixel array of".
ItemStatus too_large(const char* source, int width, int height, uint64_t cap) {
    const uint64_t pixels = uint64_t(width) * uint64_t(height);
    return ItemStatus::error(ErrorKind::kTooLarge,
                             std::string(source) + " " + std::to_string(width) + "x" + std::to_string(height) +
                                 " = " + std::to_string(pixels) + " pixels, over the cap of " + std::to_string(cap) +
                                 "; " + kRaiseMaxPixels);
}

// A JPEG's bytes count towards its item's memory budget (DecodeOptions::memory_budget).
ItemStatus check_input_size(uint64_t size, const DecodeOptions& options) {
    if (size <= options.memory_budget()) return ItemStatus{};
    return ItemStatus::error(ErrorKind::kTooLarge,
                             "JPEG file of " + std::to_string(size) + " bytes, over the per-image memory budget of " +
                                 std::to_string(options.memory_budget()) + " bytes (4 bytes per pixel of max_pixels); " +
                                 kRaiseMaxPixels);
}

// The pixel cap, checked on the frame header before libjpeg allocates anything.
ItemStatus check_frame(const JpegProbe& probe, const DecodeOptions& options) {
    if (probe.has_frame && uint64_t(probe.width) * uint64_t(probe.height) > options.max_pixels)
        return too_large(kHeaderClaims, probe.width, probe.height, options.max_pixels);
    return ItemStatus{};
}

// Reads a file that starts like a JPEG. Its header is probed as soon as it has been read,
// and the size checked, so a header over the pixel cap or a file over the memory budget is
// refused before the rest is read. Any other file is read only up to its first chunk
// (process() then reports kNotJpeg): the caller decodes other formats from the path
// itself, so reading the rest here would read every PNG or BMP twice.
ItemStatus read_jpeg_file(const std::string& path, const DecodeOptions& options, std::vector<uint8_t>* bytes) {
    FileDescriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (file.fd < 0) return ItemStatus::error(ErrorKind::kUnreadable, "cannot open the file: " + errno_text(errno));
    struct stat info;
    if (::fstat(file.fd, &info) != 0)
        return ItemStatus::error(ErrorKind::kUnreadable, "cannot stat the file: " + errno_text(errno));
    if (S_ISDIR(info.st_mode)) return ItemStatus::error(ErrorKind::kUnreadable, "is a directory, not an image file");
    bytes->clear();
    bool magic_checked = false, header_checked = false;
    uint8_t chunk[65536];
    for (;;) {
        const ssize_t n = ::read(file.fd, chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR) continue;
            return ItemStatus::error(ErrorKind::kUnreadable, "cannot read the file: " + errno_text(errno));
        }
        if (n == 0) break;
        bytes->insert(bytes->end(), chunk, chunk + n);
        if (!magic_checked && bytes->size() >= kJpegMagicSize) {
            if (!has_jpeg_magic(bytes->data(), bytes->size())) break;
            magic_checked = true;
            if (S_ISREG(info.st_mode) && info.st_size > 0) {
                ItemStatus status = check_input_size(uint64_t(info.st_size), options);
                if (!status.ok()) return status;
                bytes->reserve(size_t(info.st_size));
            }
        }
        if (magic_checked && !header_checked) {
            const JpegProbe probe = probe_jpeg(bytes->data(), bytes->size());
            header_checked = !probe.needs_more;
            ItemStatus status = check_frame(probe, options);
            if (!status.ok()) return status;
        }
        ItemStatus status = check_input_size(bytes->size(), options);  // a pipe, or a file that grew
        if (!status.ok()) return status;
    }
    return ItemStatus{};
}

// DCT-domain reduction for fast mode: the smallest of 1/8, 1/4, 1/2 (the SIMD and DC-only
// IDCTs) that keeps the short side at least the resize target; else full size.
int fast_scale_eighths(int width, int height, int target) {
    const int short_side = std::min(width, height);
    for (int eighths : {1, 2, 4}) {
        if ((int64_t(short_side) * eighths + 7) / 8 >= target) return eighths;
    }
    return 8;
}

// The source pixels the crop reads; all of them unless restrict_window.
PixelRect source_window(const ResizePlan& plan, bool restrict_window) {
    PixelRect window;
    window.x1 = plan.source_width;
    window.y1 = plan.source_height;
    if (restrict_window) {
        window.x0 = plan.horizontal.source_begin;
        window.x1 = std::max(plan.horizontal.source_end, window.x0 + 1);
        window.y0 = plan.vertical.source_begin;
        window.y1 = std::max(plan.vertical.source_end, window.y0 + 1);
    }
    return window;
}

// Re-bases `plan` (for the whole upright image) onto the window `upright` of it, in place.
void rebase_plan(const PixelRect& upright, ResizePlan* plan) {
    plan->source_width = upright.width();
    plan->source_height = upright.height();
    for (AxisTaps* taps : {&plan->horizontal, &plan->vertical}) {
        const int offset = taps == &plan->horizontal ? upright.x0 : upright.y0;
        for (int& first : taps->first) first -= offset;
        taps->source_begin -= offset;
        taps->source_end -= offset;
    }
}

// An EXIF-rotated or mirrored image: decodes only the stored rectangle holding the upright
// rows and columns the crop reads, then resamples an upright view of it. The window, with
// the input and libjpeg's buffers, must fit the item's memory budget. Re-bases ws.plan onto
// the window (make_resize_plan refills it for the next item).
ItemStatus decode_oriented(Workspace& ws, int orientation, bool restrict_window, uint64_t held_bytes,
                           const DecodeOptions& options, const Normalization& norm, float* out) {
    JpegDecoder& decoder = ws.decoder;
    ResizePlan& plan = ws.plan;
    const int width = decoder.output_width(), height = decoder.output_height();
    const PixelRect upright = source_window(plan, restrict_window);
    const PixelRect stored = stored_rect(upright, orientation, width, height);
    int first_column = 0, columns = width;
    ItemStatus status = decoder.crop_columns(stored.x0, stored.x1, &first_column, &columns);
    if (!status.ok()) return status;
    const size_t row_bytes = size_t(columns) * 4;
    const uint64_t window_bytes = decoded_rows_bytes(row_bytes, stored.height());
    const uint64_t held = held_bytes + decoder.coefficient_bytes();
    if (window_bytes > options.memory_budget() - std::min(held, options.memory_budget()))
        return ItemStatus::error(ErrorKind::kTooLarge,
                                 "EXIF-rotated or mirrored JPEG: its " + std::to_string(stored.width()) + "x" +
                                     std::to_string(stored.height()) + " window needs " + std::to_string(window_bytes) +
                                     " bytes besides the " + std::to_string(held) +
                                     " its data takes, over the per-image memory budget of " +
                                     std::to_string(options.memory_budget()) +
                                     " bytes (4 bytes per pixel of max_pixels); " + kRaiseMaxPixels);
    status = decoder.skip_rows(stored.y0);
    if (!status.ok()) return status;
    std::vector<uint8_t>& window = ws.window;
    std::vector<uint8_t*>& rows = ws.window_rows;
    // Every byte read is decoded first (the view stops short of the rows' padding).
    window.resize(static_cast<size_t>(window_bytes));
    rows.resize(static_cast<size_t>(stored.height()));
    const size_t stride = point_decoded_rows(window.data(), row_bytes, stored.height(), rows.data());
    int got = 0;
    status = decoder.read_rows(rows.data(), stored.height(), &got);
    if (!status.ok()) return status;
    if (got != stored.height()) return ItemStatus::error(ErrorKind::kCorrupt, "JPEG decoder stopped early");
    status = decoder.finish();
    if (!status.ok()) return status;
    PixelView view;
    view.data = rows[0] + size_t(stored.x0 - first_column) * 4;
    view.width = stored.width();
    view.height = stored.height();
    view.channels = 4;
    view.row_stride = ptrdiff_t(stride);
    view.pixel_stride = 4;
    rebase_plan(upright, &plan);
    resample_pixels(oriented_view(view, orientation), plan, norm, ws.resampler, out);
    return ItemStatus{};
}

ItemStatus decode_jpeg(const uint8_t* data, size_t size, const TensorSpec& spec, const DecodeOptions& options,
                       const Normalization& norm, Workspace& ws, float* out) {
    ItemStatus status = check_input_size(size, options);
    if (!status.ok()) return status;
    const JpegProbe probe = probe_jpeg(data, size);
    status = check_frame(probe, options);
    if (!status.ok()) return status;

    JpegDecoder& decoder = ws.decoder;
    const JpegItemScope item(decoder);
    status = decoder.open(data, size, options.accept_damaged, options.memory_budget() - size);
    if (!status.ok()) return status;
    const int width = decoder.image_width(), height = decoder.image_height();
    if (uint64_t(width) * uint64_t(height) > options.max_pixels) return too_large(kHeaderClaims, width, height, options.max_pixels);

    const int orientation = options.exif_orientation ? probe.orientation : 1;
    const bool swap = orientation_swaps_axes(orientation);
    const ResizeGeometry geometry =
        resize_geometry(spec.semantics, swap ? height : width, swap ? width : height, spec);
    const int eighths = spec.semantics == Semantics::kFast ? fast_scale_eighths(width, height, spec.resize) : 8;
    const CmykConvention cmyk =
        spec.semantics == Semantics::kMindSpore ? CmykConvention::kMindSpore : CmykConvention::kPillow;
    status = decoder.start(eighths, cmyk);
    if (!status.ok()) return status;
    const int decoded_width = decoder.output_width(), decoded_height = decoder.output_height();
    const FilterKind kind = filter_for(spec.semantics);

    make_resize_plan(kind, swap ? decoded_height : decoded_width, swap ? decoded_width : decoded_height, geometry,
                     &ws.plan);
    if (orientation != 1) return decode_oriented(ws, orientation, options.restrict_window, size, options, norm, out);

    const ResizePlan& plan = ws.plan;
    Resampler resampler(plan, norm, ws.resampler, out);
    const PixelRect window = source_window(plan, options.restrict_window);
    const int y1 = window.y1;
    int first_column = 0, columns = decoded_width;
    status = decoder.crop_columns(window.x0, window.x1, &first_column, &columns);
    if (!status.ok()) return status;
    status = decoder.skip_rows(window.y0);
    if (!status.ok()) return status;

    const size_t row_bytes = (size_t(columns) + row_padding_pixels(plan)) * 4;
    std::vector<uint8_t>& strip = ws.strip;
    strip.assign(decoded_rows_bytes(row_bytes, kStripRows), 0);
    uint8_t* rows[kStripRows];
    point_decoded_rows(strip.data(), row_bytes, kStripRows, rows);
    while (decoder.next_row() < y1) {
        const int y = decoder.next_row();
        int got = 0;
        status = decoder.read_rows(rows, std::min(kStripRows, y1 - y), &got);
        if (!status.ok()) return status;
        if (got == 0) return ItemStatus::error(ErrorKind::kCorrupt, "JPEG decoder stopped early");
        for (int r = 0; r < got; ++r) resampler.push_row(y + r, rows[r], first_column);
    }
    resampler.finish();
    return decoder.finish();
}

ItemStatus process(const ImageSource& item, const TensorSpec& spec, const DecodeOptions& options,
                   const Normalization& norm, Workspace& ws, float* out) {
    switch (item.type) {
        case ImageSource::Type::kNone:
            return ItemStatus::error(ErrorKind::kSkipped, "skipped");
        case ImageSource::Type::kPixels: {
            const PixelView& p = item.pixels;
            if (p.width < 1 || p.height < 1)
                return ItemStatus::error(ErrorKind::kEmpty, "image array has no pixels");
            if (p.channels < 3)
                return ItemStatus::error(ErrorKind::kUnsupported, "image array needs 3 channels (RGB)");
            if (uint64_t(p.width) * uint64_t(p.height) > options.max_pixels)
                return too_large("pixel array of", p.width, p.height, options.max_pixels);
            const ResizeGeometry geometry = resize_geometry(spec.semantics, p.width, p.height, spec);
            make_resize_plan(filter_for(spec.semantics), p.width, p.height, geometry, &ws.plan);
            resample_pixels(p, ws.plan, norm, ws.resampler, out);
            return ItemStatus{};
        }
        case ImageSource::Type::kEncoded:
        case ImageSource::Type::kPath:
            break;
    }
    const uint8_t* data = item.data;
    size_t size = item.size;
    if (item.type == ImageSource::Type::kPath) {
        ItemStatus status = read_jpeg_file(item.path, options, &ws.file_bytes);
        if (!status.ok()) return status;
        data = ws.file_bytes.data();
        size = ws.file_bytes.size();
    }
    if (size == 0) return ItemStatus::error(ErrorKind::kEmpty, "empty (0 bytes)");
    if (!has_jpeg_magic(data, size)) return ItemStatus::error(ErrorKind::kNotJpeg, "not a JPEG");
    return decode_jpeg(data, size, spec, options, norm, ws, out);
}

}  // namespace

ImageSource ImageSource::encoded(const uint8_t* data, size_t size) {
    ImageSource s;
    s.type = Type::kEncoded;
    s.data = data;
    s.size = size;
    return s;
}

ImageSource ImageSource::file(std::string path) {
    ImageSource s;
    s.type = Type::kPath;
    s.path = std::move(path);
    return s;
}

ImageSource ImageSource::decoded(const PixelView& pixels) {
    ImageSource s;
    s.type = Type::kPixels;
    s.pixels = pixels;
    return s;
}

ItemStatus preprocess_item(const ImageSource& item, const TensorSpec& spec, const DecodeOptions& options,
                           const Normalization& norm, Workspace& workspace, float* out) {
    ItemStatus status;
    try {
        status = process(item, spec, options, norm, workspace, out);
    } catch (const ResizeTooLarge& e) {
        status = ItemStatus::error(ErrorKind::kTooLarge, e.what());
    } catch (const std::bad_alloc&) {
        status = ItemStatus::error(ErrorKind::kTooLarge, "out of memory while preprocessing the image");
    } catch (const std::exception& e) {
        status = ItemStatus::error(ErrorKind::kCorrupt, std::string("internal error: ") + e.what());
    }
    workspace.trim();
    if (!status.ok()) std::fill(out, out + spec.item_floats(), 0.0f);
    return status;
}

Engine::Engine(int threads) : caller_workspace_(new Workspace) {
    if (threads < 0) throw std::invalid_argument("threads must be >= 0 (0 = one per core), got " + std::to_string(threads));
    if (threads == 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
    threads_ = threads;
    if (threads_ > 1) pool_.store(new ThreadPool(threads_ - 1));
}

Engine::~Engine() {
    delete pool_.load();  // in a forked child, a pool of the parent's lets its state go untouched
    // A run of the parent's that held the caller workspace when this child was forked left
    // it mid-item (libjpeg's memory lists perhaps mid-update): let it go untouched too.
    if (caller_busy_.load()) caller_workspace_.release();
}

ThreadPool* Engine::pool() {
    for (;;) {
        ThreadPool* current = pool_.load();
        if (!current || current->started_in_this_process()) return current;
        // A forked child (fork copies no workers): a pool of its own, installed without a
        // lock (the child may have been forked while another thread held one). The old pool
        // is left as it is: another thread of this child may still be reading it here.
        std::unique_ptr<ThreadPool> fresh(new ThreadPool(threads_ - 1));
        if (pool_.compare_exchange_strong(current, fresh.get())) return fresh.release();
    }
}

namespace {

// The caller workspace for one run(), or a spare one while another run() (on another
// thread, or in the parent at the moment this child was forked) holds it.
class CallerWorkspace {
public:
    CallerWorkspace(std::atomic<bool>& busy, Workspace& shared) : busy_(busy) {
        bool expected = false;
        held_ = busy_.compare_exchange_strong(expected, true);
        if (!held_) spare_.reset(new Workspace);
        workspace_ = held_ ? &shared : spare_.get();
    }
    ~CallerWorkspace() {
        if (held_) busy_.store(false);
    }
    CallerWorkspace(const CallerWorkspace&) = delete;
    CallerWorkspace& operator=(const CallerWorkspace&) = delete;
    Workspace& get() { return *workspace_; }

private:
    std::atomic<bool>& busy_;
    bool held_ = false;
    std::unique_ptr<Workspace> spare_;
    Workspace* workspace_ = nullptr;
};

// The shared state of one run(): helpers that start after the batch is over see `next`
// past the end and leave without touching anything else.
struct Batch {
    const std::vector<ImageSource>* items;
    const TensorSpec* spec;
    const DecodeOptions* options;
    const Normalization* norm;
    float* out;
    std::vector<ItemStatus>* statuses;
    size_t count = 0;
    std::atomic<size_t> next{0};
    std::mutex mutex;
    std::condition_variable all_done;
    size_t done = 0;

    void drain(Workspace& workspace) {
        for (;;) {
            const size_t i = next.fetch_add(1);
            if (i >= count) return;
            (*statuses)[i] =
                preprocess_item((*items)[i], *spec, *options, *norm, workspace, out + i * spec->item_floats());
            std::lock_guard<std::mutex> lock(mutex);
            if (++done == count) all_done.notify_all();
        }
    }
};

}  // namespace

void Engine::run(const std::vector<ImageSource>& items, const TensorSpec& spec, const DecodeOptions& options,
                 float* out, std::vector<ItemStatus>* statuses) {
    spec.validate();
    statuses->assign(items.size(), ItemStatus{});
    const Normalization norm(spec);
    const size_t count = items.size();
    CallerWorkspace caller(caller_busy_, *caller_workspace_);
    ThreadPool* pool = count > 1 ? this->pool() : nullptr;
    if (!pool) {
        for (size_t i = 0; i < count; ++i)
            (*statuses)[i] = preprocess_item(items[i], spec, options, norm, caller.get(), out + i * spec.item_floats());
        return;
    }
    auto batch = std::make_shared<Batch>();
    batch->items = &items;
    batch->spec = &spec;
    batch->options = &options;
    batch->norm = &norm;
    batch->out = out;
    batch->statuses = statuses;
    batch->count = count;
    const size_t helpers = std::min(size_t(threads_ - 1), count - 1);
    for (size_t h = 0; h < helpers; ++h) pool->submit([batch](Workspace& workspace) { batch->drain(workspace); });
    batch->drain(caller.get());
    std::unique_lock<std::mutex> lock(batch->mutex);
    batch->all_done.wait(lock, [&] { return batch->done == batch->count; });
}

}  // namespace ibnedge
