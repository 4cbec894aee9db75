// libjpeg-turbo (libjpeg API) decoder of one in-memory JPEG, row by row, into RGBX.
//
// Every libjpeg call runs inside a short member function that calls setjmp first and owns
// no C++ object with a destructor, so the error manager's longjmp never skips a
// destructor; the decompress struct itself is owned (and destroyed) by this RAII object.
//
// Damage policy: libjpeg only warns when the data ends early or when it cannot decode
// the entropy-coded data, and fills in what it could not decode (grey, or zeros for a bad
// code). Unless damage is accepted, the first such warning stops the decode (kTruncated
// when the data ends early, kCorrupt otherwise), and a decode that stops early because
// the crop needs no more rows still reads the rest of the data, so the verdict is the
// full decode's whatever the crop window and semantics.
#pragma once

#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <jpeglib.h>

#include "preprocess_types.h"

namespace ibnedge {

// The libjpeg this engine was compiled against (its headers): jpeglib's JPEG_LIB_VERSION
// (62, 70, 80: the libjpeg API level) and libjpeg-turbo's version ("2.1.5"; empty for a
// libjpeg that is not turbo). The partial-decode API (jpeg_crop_scanline,
// jpeg_skip_scanlines) is always there: the build refuses a libjpeg without it.
struct JpegLibraryInfo {
    int api_version = 0;
    std::string turbo_version;
};
JpegLibraryInfo jpeg_library_info();

// How CMYK/YCCK pixels become RGB (both read Adobe's inverted storage).
enum class CmykConvention {
    kPillow,     // Pillow "CMYK;I" + convert("RGB"): R = K - round((255 - C) * K / 255)
    kMindSpore,  // MindSpore JpegReadScanlines: R = C * K / 255 (Adobe), else (255 - C) * (255 - K) / 255
};

class JpegDecoder {
public:
    // `data` must outlive the decoder. accept_damaged: see the damage policy above.
    // memory_limit: the bytes libjpeg may allocate; whole-image buffers (progressive and
    // other multi-scan files) beyond it fail with kTooLarge instead of being allocated.
    JpegDecoder(const uint8_t* data, size_t size, bool accept_damaged, uint64_t memory_limit);
    ~JpegDecoder();
    JpegDecoder(const JpegDecoder&) = delete;
    JpegDecoder& operator=(const JpegDecoder&) = delete;

    ItemStatus read_header();
    int image_width() const { return int(cinfo_.image_width); }
    int image_height() const { return int(cinfo_.image_height); }

    // Starts decompression at scale_eighths/8 of the full size (libjpeg's DCT scaling),
    // RGBX output (grayscale expanded, CMYK converted by `cmyk`).
    ItemStatus start(int scale_eighths, CmykConvention cmyk);
    int output_width() const { return int(cinfo_.output_width); }
    int output_height() const { return int(cinfo_.output_height); }
    // Bytes of the whole-image coefficient buffers libjpeg holds (0 for single-scan files).
    uint64_t coefficient_bytes() const;

    // Decode only columns covering [x0, x1) (widened to iMCU boundaries, plus a margin so the
    // fancy chroma upsampling at the cut sees the same neighbours as a full decode).
    // Returns the first decoded column and the decoded width. Call before reading rows.
    ItemStatus crop_columns(int x0, int x1, int* first_column, int* width);
    ItemStatus skip_rows(int rows);
    // Reads up to `count` rows into rows[0..count), each output_width() * 4 bytes (RGBX).
    ItemStatus read_rows(uint8_t* const* rows, int count, int* got);
    // Ends the decode. Unless damage is accepted, rows left unread are entropy-decoded
    // (without the IDCT for whole iMCU rows) and the data is read up to its end-of-image
    // marker, so that damage below the crop is found as a full decode finds it.
    ItemStatus finish();

    int next_row() const { return int(cinfo_.output_scanline); }

private:
    struct ErrorManager {
        jpeg_error_mgr pub;  // first: libjpeg hands out a jpeg_error_mgr*
        std::jmp_buf jump;
        char message[JMSG_LENGTH_MAX];
        int code;  // msg_code of the error (or damage warning) that stopped the decode
        bool accept_damaged;
        char accepted_damage[JMSG_LENGTH_MAX];  // the first damage warning let through, or ""
        int max_scans;
    };
    struct ScanLimit {
        jpeg_progress_mgr pub;
    };
    static void on_error(j_common_ptr cinfo);
    static void on_message(j_common_ptr cinfo, int level);
    static void on_progress(j_common_ptr cinfo);

    ItemStatus failure() const;
    ItemStatus end_decode(bool rows_left);
    void convert_cmyk(uint8_t* const* rows, int count) const;

    const uint8_t* data_;
    size_t size_;
    uint64_t memory_limit_;
    jpeg_decompress_struct cinfo_;
    ErrorManager err_;
    ScanLimit progress_;
    std::vector<uint8_t> scratch_row_;  // the last row, which finish() reads to complete the data
    bool created_ = false;
    bool started_ = false;
    bool multi_scan_ = false;  // libjpeg holds whole-image coefficient buffers
    bool finished_ = false;
    bool cmyk_ = false;
    bool adobe_ = false;
    CmykConvention cmyk_convention_ = CmykConvention::kPillow;
};

}  // namespace ibnedge
