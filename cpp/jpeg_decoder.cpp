#include "jpeg_decoder.h"

#include <jerror.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace ibnedge {
namespace {

// Progressive files with thousands of tiny scans take minutes to decode (a known libjpeg
// denial of service); real encoders write about ten. libjpeg-turbo's own limit
// (TJFLAG_LIMITSCANS, djpeg -maxscans) is 500.
constexpr int kMaxScans = 500;
// Columns decoded on each side of the needed ones, so the fancy (triangle) chroma
// upsampling next to the cut reads the same chroma samples as a full-width decode.
constexpr int kCropMarginPixels = 2;
constexpr int kScanLimitCode = -2;

// Decoded rows are whole 16-byte blocks apart, so each keeps the first one's offset.
size_t decoded_row_stride(size_t row_bytes) { return (row_bytes + 15) / 16 * 16; }

constexpr const char* kDamagedFix =
    "re-fetch the file, or pass --accept-damaged (Python: accept_damaged=True) to accept it as libjpeg fills it in";

// What a libjpeg warning says about the pixels (libjpeg-turbo 2.1, jdhuff.c, jdphuff.c,
// jdarith.c, jdmarker.c, jdatasrc.c): kTruncated or kCorrupt when libjpeg made up part of
// the image, kNone for warnings after which every pixel is still decoded from the data.
ErrorKind damage_of(int msg_code) {
    switch (msg_code) {
        case JWRN_JPEG_EOF:  // the data ran out: libjpeg inserts an EOI, the rest is grey
            return ErrorKind::kTruncated;
        case JWRN_HIT_MARKER:         // a marker inside entropy-coded data: the segment's rest is grey
        case JWRN_HUFF_BAD_CODE:      // a code no Huffman table holds: libjpeg substitutes 0
        case JWRN_ARITH_BAD_CODE:     // the arithmetic decoder lost sync: the segment's rest is grey
        case JWRN_MUST_RESYNC:        // a restart marker missing or out of order: segments skipped or empty
        case JWRN_BOGUS_PROGRESSION:  // scans refine coefficients that were never sent
            return ErrorKind::kCorrupt;
        default:  // extraneous bytes before a marker, unknown JFIF/Adobe/ICC details, odd SOS
                  // parameters of a sequential file: nothing made up
            return ErrorKind::kNone;
    }
}

// The mark of a table slot no DQT/DHT marker of the current item has written: an all-zero
// quantisation table (latched as such, so a scan that uses it shows), and a Huffman table
// whose code counts add up to more than 256, which jpeg_make_d_derived_tbl refuses
// (JERR_BAD_HUFF_TABLE) and get_dht never stores (it refuses such counts itself).
void mark_undefined(JQUANT_TBL* table) {
    std::memset(table->quantval, 0, sizeof(table->quantval));
    table->sent_table = FALSE;
}

bool is_undefined(const JQUANT_TBL& table) {
    for (UINT16 q : table.quantval)
        if (q != 0) return false;
    return true;
}

void mark_undefined(JHUFF_TBL* table) {
    std::memset(table->bits, 0, sizeof(table->bits));
    std::memset(table->huffval, 0, sizeof(table->huffval));
    table->bits[1] = 255;
    table->bits[2] = 255;
    table->sent_table = FALSE;
}

bool is_undefined(const JHUFF_TBL& table) { return table.bits[1] == 255 && table.bits[2] == 255; }

}  // namespace

JpegDecoder::JpegDecoder() {
    std::memset(&cinfo_, 0, sizeof(cinfo_));
    std::memset(&err_, 0, sizeof(err_));
    std::memset(&progress_, 0, sizeof(progress_));
    cinfo_.err = jpeg_std_error(&err_.pub);
    err_.pub.error_exit = &JpegDecoder::on_error;
    err_.pub.emit_message = &JpegDecoder::on_message;
    err_.max_scans = kMaxScans;
    progress_.pub.progress_monitor = &JpegDecoder::on_progress;
}

JpegDecoder::~JpegDecoder() { destroy(); }

void JpegDecoder::destroy() {
    // Frees everything libjpeg allocated, in any state; never calls the error manager.
    if (created_) jpeg_destroy_decompress(&cinfo_);
    created_ = false;
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
    if (damage_of(err->pub.msg_code) == ErrorKind::kNone) return;
    if (err->accept_damaged) {
        if (err->accepted_damage[0] == '\0') (*err->pub.format_message)(cinfo, err->accepted_damage);
        return;
    }
    err->code = err->pub.msg_code;
    (*err->pub.format_message)(cinfo, err->message);
    std::longjmp(err->jump, 1);
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

ItemStatus JpegDecoder::stalled(const char* call) {
    return ItemStatus::error(ErrorKind::kCorrupt, std::string("JPEG decoder stopped early (") + call + " did less than asked)");
}

ItemStatus JpegDecoder::failure() const {
    const std::string detail = err_.message;
    switch (damage_of(err_.code)) {  // a damage warning stopped the decode (never when accepted)
        case ErrorKind::kTruncated:
            return ItemStatus::error(ErrorKind::kTruncated, "truncated JPEG: the data ends before the image does "
                                                            "(libjpeg: " + detail + "); " + kDamagedFix);
        case ErrorKind::kCorrupt:
            return ItemStatus::error(ErrorKind::kCorrupt, "corrupt JPEG: part of the image data cannot be decoded "
                                                          "(libjpeg: " + detail + "); " + kDamagedFix);
        default:
            break;
    }
    // A real error. Damage let through before it is named too, as the likely cause.
    const std::string after =
        err_.accepted_damage[0] != '\0' ? std::string(" (after damaged data: ") + err_.accepted_damage + ")" : "";
    switch (err_.code) {
        case JERR_IMAGE_TOO_BIG:
        case JERR_WIDTH_OVERFLOW:
            return ItemStatus::error(ErrorKind::kTooLarge, "JPEG too large for libjpeg: " + detail + after);
        case JERR_OUT_OF_MEMORY:
            return ItemStatus::error(ErrorKind::kTooLarge, "out of memory decoding the JPEG: " + detail + after);
        case JERR_NO_BACKING_STORE:  // a whole-image buffer over max_memory_to_use (jmemnobs.c)
            return ItemStatus::error(ErrorKind::kTooLarge,
                                     "this progressive or multi-scan JPEG needs whole-image buffers larger than the " +
                                         std::to_string(memory_limit_) +
                                         " bytes left of the per-image memory budget (4 bytes per pixel of "
                                         "max_pixels); " + kRaiseMaxPixels);
        case kScanLimitCode:
            return ItemStatus::error(ErrorKind::kTooLarge, detail + " (real encoders write about ten; thousands take "
                                                                    "minutes to decode)");
        case JERR_CONVERSION_NOTIMPL:
        case JERR_BAD_J_COLORSPACE:
        case JERR_NOT_COMPILED:
        case JERR_ARITH_NOTIMPL:
        case JERR_BAD_PRECISION:
            return ItemStatus::error(ErrorKind::kUnsupported, "unsupported JPEG variant: " + detail + after);
        case JERR_INPUT_EMPTY:
            return ItemStatus::error(ErrorKind::kEmpty, "empty JPEG data");
        default:
            return ItemStatus::error(ErrorKind::kCorrupt, "corrupt JPEG: " + detail + after);
    }
}

ItemStatus JpegDecoder::open(const uint8_t* data, size_t size, bool accept_damaged, uint64_t memory_limit) {
    close();
    data_ = data;
    size_ = size;
    memory_limit_ = memory_limit;
    err_.accept_damaged = accept_damaged;
    open_ = true;
    return begin_item(true);
}

ItemStatus JpegDecoder::begin_item(bool mark_tables) {
    err_.message[0] = '\0';
    err_.accepted_damage[0] = '\0';
    err_.code = 0;
    err_.pub.num_warnings = 0;
    started_ = multi_scan_ = finished_ = cmyk_ = adobe_ = false;
    header_components_ = 0;
    if (setjmp(err_.jump)) {
        if (creating_) destroy();  // out of memory inside jpeg_create_decompress: not a usable struct
        creating_ = false;
        return failure();
    }
    if (!created_) {
        created_ = creating_ = true;  // jpeg_destroy_decompress is safe on a half-made struct
        jpeg_create_decompress(&cinfo_);
        creating_ = false;
        cinfo_.progress = &progress_.pub;
    }
    // Marked right after the struct is created, the tables take the same place in every
    // reused struct's permanent memory whatever items it has seen (libjpeg's memory limit
    // counts that memory too, so the limit bites the same for every struct).
    tables_marked_ = mark_tables;
    if (mark_tables) mark_tables_undefined();
    // libjpeg reads 0 as "no limit"; its small allocations never consult the limit.
    const uint64_t most = uint64_t(std::numeric_limits<long>::max());
    cinfo_.mem->max_memory_to_use = long(std::max<uint64_t>(1, std::min(memory_limit_, most)));
    jpeg_mem_src(&cinfo_, data_, static_cast<unsigned long>(size_));
    if (jpeg_read_header(&cinfo_, TRUE) != JPEG_HEADER_OK)
        return ItemStatus::error(ErrorKind::kCorrupt, "JPEG holds only tables, no image");
    header_components_ = cinfo_.num_components;
    return ItemStatus{};
}

// Allocates a table for every empty slot (once per struct) and marks every slot undefined.
void JpegDecoder::mark_tables_undefined() {
    j_common_ptr common = reinterpret_cast<j_common_ptr>(&cinfo_);
    for (JQUANT_TBL*& table : cinfo_.quant_tbl_ptrs) {
        if (!table) table = jpeg_alloc_quant_table(common);
        mark_undefined(table);
    }
    for (int i = 0; i < NUM_HUFF_TBLS; ++i) {
        for (JHUFF_TBL** table : {&cinfo_.dc_huff_tbl_ptrs[i], &cinfo_.ac_huff_tbl_ptrs[i]}) {
            if (!*table) *table = jpeg_alloc_huff_table(common);
            mark_undefined(*table);
        }
    }
}

bool JpegDecoder::used_undefined_table() const {
    if (!tables_marked_) return false;
    // Quantisation tables are latched (copied into comp_info) when a component's first scan
    // starts, which for every file is inside jpeg_start_decompress. The header's component
    // count, not num_components: a second SOF marker overwrites that before libjpeg refuses it.
    if (cinfo_.comp_info) {
        for (int c = 0; c < header_components_; ++c) {
            const JQUANT_TBL* latched = cinfo_.comp_info[c].quant_table;
            if (latched && is_undefined(*latched)) return true;
        }
    }
    if (err_.code != JERR_BAD_HUFF_TABLE) return false;
    for (int i = 0; i < NUM_HUFF_TBLS; ++i) {
        if (is_undefined(*cinfo_.dc_huff_tbl_ptrs[i]) || is_undefined(*cinfo_.ac_huff_tbl_ptrs[i])) return true;
    }
    return false;
}

ItemStatus JpegDecoder::start(int scale_eighths, CmykConvention cmyk) {
    cmyk_convention_ = cmyk;
    const ItemStatus status = start_decompress(scale_eighths);
    if (!used_undefined_table()) return status;
    // This image relies on a table it does not define: decode it as a fresh struct would,
    // with empty slots (a struct close() does not keep).
    destroy();
    const ItemStatus header = begin_item(false);
    return header.ok() ? start_decompress(scale_eighths) : header;
}

ItemStatus JpegDecoder::start_decompress(int scale_eighths) {
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
    cinfo_.scale_num = static_cast<unsigned>(scale_eighths);
    cinfo_.scale_denom = 8;
    cinfo_.dct_method = JDCT_ISLOW;  // what Pillow, OpenCV and MindSpore decode with
    cinfo_.do_fancy_upsampling = TRUE;
    if (setjmp(err_.jump)) return failure();
    // FALSE only when a data source suspends, which the memory source never does.
    if (!jpeg_start_decompress(&cinfo_)) return stalled("jpeg_start_decompress");
    started_ = true;
    multi_scan_ = jpeg_has_multiple_scans(&cinfo_);
    if (cinfo_.output_components != 4)
        return ItemStatus::error(ErrorKind::kUnsupported, "unexpected JPEG output layout (" +
                                                              std::to_string(cinfo_.output_components) +
                                                              " components)");
    return ItemStatus{};
}

void JpegDecoder::close() {
    if (!open_) return;
    open_ = false;
    // The struct of an item decoded again on a fresh struct (see start) is not kept: the next
    // item's gets its tables marked right after it is created.
    if (!tables_marked_) destroy();
    if (!created_) return;
    if (setjmp(err_.jump)) {  // jpeg_abort frees pools and never errors; if it ever did, start over
        destroy();
        return;
    }
    jpeg_abort_decompress(&cinfo_);
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
    if (jpeg_skip_scanlines(&cinfo_, static_cast<JDIMENSION>(rows)) != static_cast<JDIMENSION>(rows))
        return stalled("jpeg_skip_scanlines");
    return ItemStatus{};
}

size_t decoded_rows_bytes(size_t row_bytes, int count) {
    // + 16: room to reach the first byte kDecodedRowOffset past a boundary.
    return decoded_row_stride(row_bytes) * size_t(std::max(count, 0)) + 16 + kDecodedRowOffset;
}

size_t point_decoded_rows(uint8_t* buffer, size_t row_bytes, int count, uint8_t** rows) {
    const size_t stride = decoded_row_stride(row_bytes);
    const size_t to_boundary = (16 - uintptr_t(buffer) % 16) % 16;
    uint8_t* first = buffer + to_boundary + kDecodedRowOffset;
    for (int r = 0; r < count; ++r) rows[r] = first + stride * size_t(r);
    return stride;
}

ItemStatus JpegDecoder::read_rows(uint8_t* const* rows, int count, int* got) {
    *got = 0;
    for (int r = 0; r < count; ++r) {
        if (uintptr_t(rows[r]) % 16 == 0)
            throw std::logic_error("decoded row on a 16-byte boundary, which libjpeg-turbo stores past the caches "
                                   "(lay rows out with point_decoded_rows)");
    }
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
    const bool rows_left = cinfo_.output_scanline < cinfo_.output_height;
    if (rows_left && !err_.accept_damaged) scratch_row_.assign(size_t(output_width()) * 4, 0);
    return end_decode(rows_left);
}

ItemStatus JpegDecoder::end_decode(bool rows_left) {
    if (setjmp(err_.jump)) return failure();
    // With damage accepted nothing below the crop can change the verdict; multi-scan files
    // were read up to their EOI by start().
    if (err_.accept_damaged || (rows_left && jpeg_input_complete(&cinfo_))) {
        jpeg_abort_decompress(&cinfo_);
        return ItemStatus{};
    }
    if (rows_left) {
        // Skipping whole iMCU rows only entropy-decodes them. Skipping the last row too would
        // end the decode without reading the data (jpeg_skip_scanlines then marks the input
        // complete), so that row is read.
        const JDIMENSION to_skip = cinfo_.output_height - 1 - cinfo_.output_scanline;
        if (jpeg_skip_scanlines(&cinfo_, to_skip) != to_skip) return stalled("jpeg_skip_scanlines");
        JSAMPROW row = scratch_row_.data();
        while (cinfo_.output_scanline < cinfo_.output_height) {
            if (jpeg_read_scanlines(&cinfo_, &row, 1) == 0) break;  // no suspension with a memory source
        }
    }
    // Reads up to the EOI: damage or a bad marker after the scan shows here.
    if (!jpeg_finish_decompress(&cinfo_)) return stalled("jpeg_finish_decompress");
    return ItemStatus{};
}

uint64_t JpegDecoder::coefficient_bytes() const {
    if (!multi_scan_) return 0;
    uint64_t bytes = 0;
    for (int c = 0; c < cinfo_.num_components; ++c) {
        const jpeg_component_info& comp = cinfo_.comp_info[c];
        auto round_up = [](uint64_t n, uint64_t multiple) { return (n + multiple - 1) / multiple * multiple; };
        // jdcoefct.c: one JBLOCK per block, rows and columns padded to the sampling factors.
        bytes += round_up(comp.width_in_blocks, uint64_t(comp.h_samp_factor)) *
                 round_up(comp.height_in_blocks, uint64_t(comp.v_samp_factor)) * sizeof(JBLOCK);
    }
    return bytes;
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
