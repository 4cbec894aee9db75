// libjpeg-turbo (libjpeg API) decoder of in-memory JPEGs, row by row, into RGBX: one
// decompress struct, created on the first item and reused for every later one (each item
// ends with jpeg_abort_decompress, which frees libjpeg's per-image memory and keeps the
// struct), destroyed with the decoder.
//
// Every libjpeg call runs inside a short member function that calls setjmp first and owns
// no C++ object with a destructor, so the error manager's longjmp never skips a
// destructor; the decompress struct itself is owned (and destroyed) by this RAII object.
//
// Reuse gives each item exactly what a fresh struct gives it. libjpeg keeps quantisation
// and Huffman tables across images (JPEG's abbreviated datastreams): a file lacking a
// table would be decoded with the previous item's. So before each item every table slot
// is set to a marked "undefined" table; a file's DQT/DHT markers overwrite theirs in
// place. An image that uses a slot still marked undefined (libjpeg latches the marked
// quantisation table, or refuses the marked Huffman table as impossible) is decoded again
// on a freshly created struct, where the slot is empty as libjpeg expects: an error for a
// missing quantisation table, the standard tables for missing Huffman ones (Motion-JPEG).
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

// Row buffers for JpegDecoder::read_rows. libjpeg-turbo's x86 SIMD colour conversion stores
// a row with non-temporal (cache-bypassing) stores when the row starts on a 16-byte (SSE2)
// or 32-byte (AVX2) boundary (simd/x86_64/jdcolext-*.asm), and a heap buffer of rows a
// multiple of 16 bytes apart always starts them there. The engine reads each row right
// back, which then comes from memory: mindspore semantics took 7% longer per ImageNet-size
// image (benchmark medians), 12% where the heap had put the strip on a 32-byte boundary
// (one engine instance in two, by what was allocated before it). So decoded rows
// start kDecodedRowOffset bytes past a 16-byte boundary, whole 16-byte blocks apart.
constexpr size_t kDecodedRowOffset = 8;
// The bytes a buffer needs for `count` rows of `row_bytes` laid out so.
size_t decoded_rows_bytes(size_t row_bytes, int count);
// Points rows[0..count) at such rows of `row_bytes` in `buffer` (of decoded_rows_bytes
// bytes); returns their stride.
size_t point_decoded_rows(uint8_t* buffer, size_t row_bytes, int count, uint8_t** rows);

class JpegDecoder {
public:
    JpegDecoder();
    ~JpegDecoder();
    JpegDecoder(const JpegDecoder&) = delete;
    JpegDecoder& operator=(const JpegDecoder&) = delete;

    // Begins an item and reads its header. `data` must stay valid until close().
    // accept_damaged: see the damage policy above. memory_limit: the bytes libjpeg may
    // allocate; whole-image buffers (progressive and other multi-scan files) beyond it fail
    // with kTooLarge instead of being allocated.
    ItemStatus open(const uint8_t* data, size_t size, bool accept_damaged, uint64_t memory_limit);
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
    // Reads up to `count` rows into rows[0..count), each output_width() * 4 bytes (RGBX),
    // laid out by point_decoded_rows (a row on a 16-byte boundary is a logic_error).
    ItemStatus read_rows(uint8_t* const* rows, int count, int* got);
    // Ends the decode. Unless damage is accepted, rows left unread are entropy-decoded
    // (without the IDCT for whole iMCU rows) and the data is read up to its end-of-image
    // marker, so that damage below the crop is found as a full decode finds it.
    ItemStatus finish();
    // Ends the item, whatever state it is in (after an error too): libjpeg's per-image
    // memory is freed, the struct kept for the next open(). Idempotent.
    void close();

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
    // A libjpeg call that returned less than asked (suspension, which the memory source never
    // does; checked all the same).
    static ItemStatus stalled(const char* call);
    ItemStatus begin_item(bool mark_tables);  // creates the struct if needed, reads the header
    ItemStatus start_decompress(int scale_eighths);
    ItemStatus end_decode(bool rows_left);
    void destroy();
    void mark_tables_undefined();
    bool used_undefined_table() const;
    void convert_cmyk(uint8_t* const* rows, int count) const;

    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
    uint64_t memory_limit_ = 0;
    int header_components_ = 0;  // the frame's components (comp_info entries) as the header gave them
    jpeg_decompress_struct cinfo_;
    ErrorManager err_;
    ScanLimit progress_;
    std::vector<uint8_t> scratch_row_;  // the last row, which finish() reads to complete the data
    bool created_ = false;
    bool creating_ = false;       // inside jpeg_create_decompress
    bool tables_marked_ = false;  // this item's table slots started out marked undefined
    bool open_ = false;           // an item is open: close() has work to do
    bool started_ = false;
    bool multi_scan_ = false;  // libjpeg holds whole-image coefficient buffers
    bool finished_ = false;
    bool cmyk_ = false;
    bool adobe_ = false;
    CmykConvention cmyk_convention_ = CmykConvention::kPillow;
};

// Closes the decoder's item on every path out of the scope that opened it.
class JpegItemScope {
public:
    explicit JpegItemScope(JpegDecoder& decoder) : decoder_(decoder) {}
    ~JpegItemScope() { decoder_.close(); }
    JpegItemScope(const JpegItemScope&) = delete;
    JpegItemScope& operator=(const JpegItemScope&) = delete;

private:
    JpegDecoder& decoder_;
};

}  // namespace ibnedge
