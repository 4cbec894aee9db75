#include "jpeg_decoder.h"

#include <jerror.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "jpeg_probe.h"

namespace ibnedge {
namespace {

// Progressive files with thousands of tiny scans take minutes to decode (a known libjpeg
// denial of service); real encoders write about ten.
constexpr int kMaxScans = 1000;
// Columns decoded on each side of the needed ones, so the fancy (triangle) chroma
// upsampling next to the cut reads the same chroma samples as a full-width decode.
constexpr int kCropMarginPixels = 2;
constexpr int kScanLimitCode = -2;

}  // namespace

JpegDecoder::JpegDecoder(const uint8_t* data, size_t size, bool allow_truncated) : data_(data), size_(size) {
    std::memset(&cinfo_, 0, sizeof(cinfo_));
    std::memset(&err_, 0, sizeof(err_));
    std::memset(&progress_, 0, sizeof(progress_));
    cinfo_.err = jpeg_std_error(&err_.pub);
    err_.pub.error_exit = &JpegDecoder::on_error;
    err_.pub.emit_message = &JpegDecoder::on_message;
    err_.stop_on_truncation = !allow_truncated;
    err_.max_scans = kMaxScans;
    progress_.pub.progress_monitor = &JpegDecoder::on_progress;
}

JpegDecoder::~JpegDecoder() {
    if (created_) jpeg_destroy_decompress(&cinfo_);  // frees everything libjpeg allocated, in any state
}

void JpegDecoder::on_error(j_common_ptr cinfo) {
    ErrorManager* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    err->code = err->pub.msg_code;
    (*err->pub.format_message)(cinfo, err->message);
    std::longjmp(err->jump, 1);
}

void JpegDecoder::on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;  // trace messages
    ErrorManager* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    err->pub.num_warnings++;
    if (err->pub.msg_code == JWRN_JPEG_EOF) {
        // The source ran dry: libjpeg would pad the rest with grey. Stop here unless asked not to.
        err->truncated = true;
        if (err->stop_on_truncation) {
            err->code = JWRN_JPEG_EOF;
            (*err->pub.format_message)(cinfo, err->message);
            std::longjmp(err->jump, 1);
        }
    }
}

void JpegDecoder::on_progress(j_common_ptr cinfo) {
    if (!cinfo->is_decompressor) return;
    ErrorManager* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    const int scans = reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number;
    if (scans > err->max_scans) {
        err->code = kScanLimitCode;
        std::snprintf(err->message, sizeof(err->message), "progressive JPEG with more than %d scans", err->max_scans);
        std::longjmp(err->jump, 1);
    }
}

ItemStatus JpegDecoder::failure() const {
    const std::string detail = err_.message;
    if (err_.truncated)
        return ItemStatus::error(ErrorKind::kTruncated,
                                 "truncated JPEG: the data ends before the image does (libjpeg: " + detail +
                                     "); re-fetch the file, or pass allow_truncated=True to accept it padded with grey");
    switch (err_.code) {
        case JERR_IMAGE_TOO_BIG:
        case JERR_WIDTH_OVERFLOW:
            return ItemStatus::error(ErrorKind::kTooLarge, "JPEG too large for libjpeg: " + detail);
        case JERR_OUT_OF_MEMORY:
            return ItemStatus::error(ErrorKind::kTooLarge, "out of memory decoding the JPEG: " + detail);
        case JERR_CONVERSION_NOTIMPL:
        case JERR_BAD_J_COLORSPACE:
        case JERR_NOT_COMPILED:
        case JERR_ARITH_NOTIMPL:
        case JERR_BAD_PRECISION:
            return ItemStatus::error(ErrorKind::kUnsupported, "unsupported JPEG variant: " + detail);
        case JERR_INPUT_EMPTY:
            return ItemStatus::error(ErrorKind::kEmpty, "empty JPEG data");
        default:
            return ItemStatus::error(ErrorKind::kCorrupt, "corrupt JPEG: " + detail);
    }
}

ItemStatus JpegDecoder::read_header() {
    if (setjmp(err_.jump)) return failure();
    jpeg_create_decompress(&cinfo_);
    created_ = true;
    cinfo_.progress = &progress_.pub;
    jpeg_mem_src(&cinfo_, data_, static_cast<unsigned long>(size_));
    if (jpeg_read_header(&cinfo_, TRUE) != JPEG_HEADER_OK)
        return ItemStatus::error(ErrorKind::kCorrupt, "JPEG holds only tables, no image");
    return ItemStatus{};
}

ItemStatus JpegDecoder::start(int scale_eighths, CmykConvention cmyk) {
    switch (cinfo_.jpeg_color_space) {
        case JCS_GRAYSCALE:
        case JCS_YCbCr:
        case JCS_RGB:
            cinfo_.out_color_space = JCS_EXT_RGBX;
            break;
        case JCS_CMYK:
        case JCS_YCCK:
            cinfo_.out_color_space = JCS_CMYK;  // libjpeg turns YCCK into CMYK; CMYK -> RGB is ours
            cmyk_ = true;
            break;
        default:
            return ItemStatus::error(ErrorKind::kUnsupported,
                                     "unsupported JPEG colour space (libjpeg code " +
                                         std::to_string(int(cinfo_.jpeg_color_space)) + ", " +
                                         std::to_string(cinfo_.num_components) + " components)");
    }
    adobe_ = cinfo_.saw_Adobe_marker;
    cmyk_convention_ = cmyk;
    cinfo_.scale_num = static_cast<unsigned>(scale_eighths);
    cinfo_.scale_denom = 8;
    cinfo_.dct_method = JDCT_ISLOW;  // what Pillow, OpenCV and MindSpore decode with
    cinfo_.do_fancy_upsampling = TRUE;
    if (setjmp(err_.jump)) return failure();
    jpeg_start_decompress(&cinfo_);
    started_ = true;
    if (cinfo_.output_components != 4)
        return ItemStatus::error(ErrorKind::kUnsupported, "unexpected JPEG output layout (" +
                                                              std::to_string(cinfo_.output_components) +
                                                              " components)");
    return ItemStatus{};
}

ItemStatus JpegDecoder::crop_columns(int x0, int x1, int* first_column, int* width) {
    const int full = output_width();
    int left = std::max(x0 - kCropMarginPixels, 0);
    int right = std::min(x1 + kCropMarginPixels, full);
    if (left == 0 && right == full) {
        *first_column = 0;
        *width = full;
        return ItemStatus{};
    }
    JDIMENSION xoffset = static_cast<JDIMENSION>(left);
    JDIMENSION cropped = static_cast<JDIMENSION>(right - left);
    if (setjmp(err_.jump)) return failure();
    jpeg_crop_scanline(&cinfo_, &xoffset, &cropped);
    *first_column = int(xoffset);
    *width = int(cropped);
    return ItemStatus{};
}

ItemStatus JpegDecoder::skip_rows(int rows) {
    if (rows <= 0) return ItemStatus{};
    if (setjmp(err_.jump)) return failure();
    jpeg_skip_scanlines(&cinfo_, static_cast<JDIMENSION>(rows));
    return ItemStatus{};
}

ItemStatus JpegDecoder::read_rows(uint8_t* const* rows, int count, int* got) {
    *got = 0;
    if (setjmp(err_.jump)) return failure();
    int done = 0;
    while (done < count && cinfo_.output_scanline < cinfo_.output_height) {
        const JDIMENSION n = jpeg_read_scanlines(&cinfo_, const_cast<JSAMPARRAY>(rows + done),
                                                 static_cast<JDIMENSION>(count - done));
        if (n == 0) break;  // suspension cannot happen with a memory source; be safe anyway
        done += int(n);
    }
    *got = done;
    if (cmyk_) convert_cmyk(rows, done);
    return ItemStatus{};
}

void JpegDecoder::convert_cmyk(uint8_t* const* rows, int count) const {
    const int width = output_width();
    for (int r = 0; r < count; ++r) {
        uint8_t* p = rows[r];
        for (int x = 0; x < width; ++x, p += 4) {
            const int c = p[0], m = p[1], y = p[2], k = p[3];
            if (cmyk_convention_ == CmykConvention::kPillow) {
                // Pillow unpacks "CMYK;I" (inverted), then cmyk2rgb with MULDIV255.
                auto channel = [k](int stored) {
                    int tmp = (255 - stored) * k + 128;
                    int v = k - (((tmp >> 8) + tmp) >> 8);
                    return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v));
                };
                p[0] = channel(c);
                p[1] = channel(m);
                p[2] = channel(y);
            } else if (adobe_) {
                p[0] = uint8_t(k * c / 255);
                p[1] = uint8_t(k * m / 255);
                p[2] = uint8_t(k * y / 255);
            } else {
                p[0] = uint8_t((255 - c) * (255 - k) / 255);
                p[1] = uint8_t((255 - m) * (255 - k) / 255);
                p[2] = uint8_t((255 - y) * (255 - k) / 255);
            }
            p[3] = 255;
        }
    }
}

ItemStatus JpegDecoder::finish() {
    if (!started_ || finished_) return ItemStatus{};
    finished_ = true;
    if (setjmp(err_.jump)) return failure();
    if (cinfo_.output_scanline >= cinfo_.output_height) {
        jpeg_finish_decompress(&cinfo_);  // reads up to EOI: a truncated tail warns here
        return ItemStatus{};
    }
    // Stopped early: the rows below the crop are never entropy-decoded. The file is
    // complete when libjpeg already met the EOI (multi-scan files are read whole up front)
    // or an EOI marker lies in the bytes it has not consumed.
    // (The entropy decoder may already have read the EOI marker: it then waits in unread_marker.)
    const bool complete = jpeg_input_complete(&cinfo_) || cinfo_.unread_marker == JPEG_EOI ||
                          contains_eoi(cinfo_.src->next_input_byte, cinfo_.src->bytes_in_buffer);
    jpeg_abort_decompress(&cinfo_);
    if (!complete && err_.stop_on_truncation) {
        return ItemStatus::error(ErrorKind::kTruncated,
                                 "truncated JPEG: the data ends before the end-of-image marker; re-fetch the file, "
                                 "or pass allow_truncated=True to accept it");
    }
    return ItemStatus{};
}

#define IBNEDGE_STRINGIFY_VALUE(x) #x
#define IBNEDGE_STRINGIFY(x) IBNEDGE_STRINGIFY_VALUE(x)

JpegLibraryInfo jpeg_library_info() {
    JpegLibraryInfo info;
    info.api_version = JPEG_LIB_VERSION;
#ifdef LIBJPEG_TURBO_VERSION
    info.turbo_version = IBNEDGE_STRINGIFY(LIBJPEG_TURBO_VERSION);  // jconfig.h: an unquoted 2.1.5
#endif
    return info;
}

}  // namespace ibnedge
