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

// Reads a whole file that starts like a JPEG. Any other file is read only up to its first
// chunk (process() then reports kNotJpeg): the caller decodes other formats from the path
// itself, so reading the rest here would read every PNG or BMP twice.
ItemStatus read_jpeg_file(const std::string& path, std::vector<uint8_t>* bytes) {
    FileDescriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (file.fd < 0) return ItemStatus::error(ErrorKind::kUnreadable, "cannot open the file: " + errno_text(errno));
    struct stat info;
    if (::fstat(file.fd, &info) != 0)
        return ItemStatus::error(ErrorKind::kUnreadable, "cannot stat the file: " + errno_text(errno));
    if (S_ISDIR(info.st_mode)) return ItemStatus::error(ErrorKind::kUnreadable, "is a directory, not an image file");
    bytes->clear();
    bool magic_checked = false;
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
            if (S_ISREG(info.st_mode) && info.st_size > 0) bytes->reserve(size_t(info.st_size));
        }
    }
    return ItemStatus{};
}

// ``source``: "image header claims" (a file, refused before decoding) or "pixel array of".
ItemStatus too_large(const char* source, int width, int height, uint64_t cap) {
    const uint64_t pixels = uint64_t(width) * uint64_t(height);
    return ItemStatus::error(ErrorKind::kTooLarge,
                             std::string(source) + " " + std::to_string(width) + "x" + std::to_string(height) +
                                 " = " + std::to_string(pixels) + " pixels, over the cap of " + std::to_string(cap) +
                                 "; raise max_pixels if the image is genuine");
}

constexpr const char* kHeaderClaims = "image header claims";

// DCT-domain reduction for fast mode: the smallest of 1/8, 1/4, 1/2 (the SIMD and DC-only
// IDCTs) that keeps the short side at least the resize target; else full size.
int fast_scale_eighths(int width, int height, int target) {
    const int short_side = std::min(width, height);
    for (int eighths : {1, 2, 4}) {
        if ((int64_t(short_side) * eighths + 7) / 8 >= target) return eighths;
    }
    return 8;
}

ItemStatus decode_jpeg(const uint8_t* data, size_t size, const TensorSpec& spec, const DecodeOptions& options,
                       const Normalization& norm, float* out) {
    const JpegProbe probe = probe_jpeg(data, size);
    if (probe.has_frame && uint64_t(probe.width) * uint64_t(probe.height) > options.max_pixels)
        return too_large(kHeaderClaims, probe.width, probe.height, options.max_pixels);

    JpegDecoder decoder(data, size, options.allow_truncated);
    ItemStatus status = decoder.read_header();
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

    if (orientation != 1) {
        // Rotated or mirrored: decode the whole image, then resample an upright view of it.
        const size_t stride = size_t(decoded_width) * 4;  // resample_pixels copies rows into padded ones
        std::vector<uint8_t> image(stride * size_t(decoded_height));
        std::vector<uint8_t*> rows(static_cast<size_t>(decoded_height));
        for (int y = 0; y < decoded_height; ++y) rows[size_t(y)] = &image[stride * size_t(y)];
        int got = 0;
        status = decoder.read_rows(rows.data(), decoded_height, &got);
        if (!status.ok()) return status;
        if (got != decoded_height) return ItemStatus::error(ErrorKind::kCorrupt, "JPEG decoder stopped early");
        status = decoder.finish();
        if (!status.ok()) return status;
        PixelView stored;
        stored.data = image.data();
        stored.width = decoded_width;
        stored.height = decoded_height;
        stored.channels = 4;
        stored.row_stride = ptrdiff_t(stride);
        stored.pixel_stride = 4;
        const PixelView upright = oriented_view(stored, orientation);
        const ResizePlan plan = make_resize_plan(kind, upright.width, upright.height, geometry);
        resample_pixels(upright, plan, norm, out);
        return ItemStatus{};
    }

    const ResizePlan plan = make_resize_plan(kind, decoded_width, decoded_height, geometry);
    Resampler resampler(plan, norm, out);
    int x0 = 0, x1 = decoded_width, y0 = 0, y1 = decoded_height;
    if (options.restrict_window) {
        x0 = resampler.column_begin();
        x1 = std::max(resampler.column_end(), x0 + 1);
        y0 = resampler.row_begin();
        y1 = std::max(resampler.row_end(), y0 + 1);
    }
    int first_column = 0, columns = decoded_width;
    status = decoder.crop_columns(x0, x1, &first_column, &columns);
    if (!status.ok()) return status;
    status = decoder.skip_rows(y0);
    if (!status.ok()) return status;

    const size_t stride = (size_t(columns) + row_padding_pixels(plan)) * 4;
    std::vector<uint8_t> strip(stride * kStripRows, 0);
    uint8_t* rows[kStripRows];
    for (int r = 0; r < kStripRows; ++r) rows[r] = &strip[stride * size_t(r)];
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
                   const Normalization& norm, float* out) {
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
            const ResizePlan plan = make_resize_plan(filter_for(spec.semantics), p.width, p.height, geometry);
            resample_pixels(p, plan, norm, out);
            return ItemStatus{};
        }
        case ImageSource::Type::kEncoded:
        case ImageSource::Type::kPath:
            break;
    }
    std::vector<uint8_t> file_bytes;
    const uint8_t* data = item.data;
    size_t size = item.size;
    if (item.type == ImageSource::Type::kPath) {
        ItemStatus status = read_jpeg_file(item.path, &file_bytes);
        if (!status.ok()) return status;
        data = file_bytes.data();
        size = file_bytes.size();
    }
    if (size == 0) return ItemStatus::error(ErrorKind::kEmpty, "empty (0 bytes)");
    if (!has_jpeg_magic(data, size)) return ItemStatus::error(ErrorKind::kNotJpeg, "not a JPEG");
    return decode_jpeg(data, size, spec, options, norm, out);
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
                           const Normalization& norm, float* out) {
    ItemStatus status;
    try {
        status = process(item, spec, options, norm, out);
    } catch (const ResizeTooLarge& e) {
        status = ItemStatus::error(ErrorKind::kTooLarge, e.what());
    } catch (const std::bad_alloc&) {
        status = ItemStatus::error(ErrorKind::kTooLarge, "out of memory while preprocessing the image");
    } catch (const std::exception& e) {
        status = ItemStatus::error(ErrorKind::kCorrupt, std::string("internal error: ") + e.what());
    }
    if (!status.ok()) std::fill(out, out + spec.item_floats(), 0.0f);
    return status;
}

Engine::Engine(int threads) {
    if (threads < 0) throw std::invalid_argument("threads must be >= 0 (0 = one per core), got " + std::to_string(threads));
    if (threads == 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
    threads_ = threads;
    if (threads_ > 1) pool_.reset(new ThreadPool(threads_ - 1));
}

ThreadPool* Engine::pool() {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    // Only a forked child ever replaces the pool, and no run of that process can hold the
    // old one: every run takes it from here.
    if (pool_ && !pool_->started_in_this_process()) pool_.reset(new ThreadPool(threads_ - 1));
    return pool_.get();
}

namespace {

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

    void drain() {
        for (;;) {
            const size_t i = next.fetch_add(1);
            if (i >= count) return;
            (*statuses)[i] = preprocess_item((*items)[i], *spec, *options, *norm, out + i * spec->item_floats());
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
    ThreadPool* pool = count > 1 ? this->pool() : nullptr;
    if (!pool) {
        for (size_t i = 0; i < count; ++i)
            (*statuses)[i] = preprocess_item(items[i], spec, options, norm, out + i * spec.item_floats());
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
    for (size_t h = 0; h < helpers; ++h) pool->submit([batch] { batch->drain(); });
    batch->drain();
    std::unique_lock<std::mutex> lock(batch->mutex);
    batch->all_done.wait(lock, [&] { return batch->done == batch->count; });
}

}  // namespace ibnedge
