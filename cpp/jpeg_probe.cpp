#include "jpeg_probe.h"

#include <cstring>

namespace ibnedge {
namespace {

unsigned read_u16(const uint8_t* p, bool big_endian) {
    return big_endian ? (unsigned(p[0]) << 8) | p[1] : (unsigned(p[1]) << 8) | p[0];
}

uint32_t read_u32(const uint8_t* p, bool big_endian) {
    return big_endian ? (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]
                      : (uint32_t(p[3]) << 24) | (uint32_t(p[2]) << 16) | (uint32_t(p[1]) << 8) | p[0];
}

bool is_start_of_frame(uint8_t marker) {
    // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
    return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

}  // namespace

bool has_jpeg_magic(const uint8_t* data, size_t size) {
    return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

int exif_orientation(const uint8_t* payload, size_t size) {
    if (size < 6 + 8 || std::memcmp(payload, "Exif\0\0", 6) != 0) return 1;
    const uint8_t* tiff = payload + 6;
    const size_t tiff_size = size - 6;
    bool big_endian;
    if (tiff[0] == 'I' && tiff[1] == 'I') {
        big_endian = false;
    } else if (tiff[0] == 'M' && tiff[1] == 'M') {
        big_endian = true;
    } else {
        return 1;
    }
    if (read_u16(tiff + 2, big_endian) != 42) return 1;
    const uint32_t ifd = read_u32(tiff + 4, big_endian);
    if (ifd > tiff_size || tiff_size - ifd < 2) return 1;
    const unsigned entries = read_u16(tiff + ifd, big_endian);
    for (unsigned e = 0; e < entries; ++e) {
        const size_t at = size_t(ifd) + 2 + size_t(e) * 12;
        if (at + 12 > tiff_size) return 1;
        const uint8_t* entry = tiff + at;
        if (read_u16(entry, big_endian) != 0x0112) continue;
        const unsigned type = read_u16(entry + 2, big_endian);
        const uint32_t count = read_u32(entry + 4, big_endian);
        if (type != 3 || count != 1) return 1;  // SHORT, one value, stored in the entry itself
        const unsigned value = read_u16(entry + 8, big_endian);
        return value >= 1 && value <= 8 ? int(value) : 1;
    }
    return 1;
}

JpegProbe probe_jpeg(const uint8_t* data, size_t size) {
    JpegProbe probe;
    if (!has_jpeg_magic(data, size)) return probe;
    size_t pos = 2;
    bool orientation_seen = false;
    for (;;) {
        if (pos + 1 >= size) {
            probe.needs_more = true;
            return probe;
        }
        if (data[pos] != 0xFF) return probe;  // not at a marker: leave the diagnosis to libjpeg
        while (pos < size && data[pos] == 0xFF) ++pos;  // fill bytes
        if (pos >= size) {
            probe.needs_more = true;
            return probe;
        }
        const uint8_t marker = data[pos++];
        if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // no length
        if (marker == 0xD9 || marker == 0xDA) return probe;  // end of image / first scan
        if (pos + 2 > size) {
            probe.needs_more = true;
            return probe;
        }
        const size_t length = (size_t(data[pos]) << 8) | data[pos + 1];
        if (length < 2) return probe;
        if (pos + length > size) {
            probe.needs_more = true;
            return probe;
        }
        const uint8_t* body = data + pos + 2;
        const size_t body_size = length - 2;
        if (is_start_of_frame(marker)) {
            if (body_size >= 6) {
                probe.has_frame = true;
                probe.height = int((unsigned(body[1]) << 8) | body[2]);
                probe.width = int((unsigned(body[3]) << 8) | body[4]);
                probe.components = body[5];
                probe.progressive = marker == 0xC2 || marker == 0xC6 || marker == 0xCA || marker == 0xCE;
            }
            return probe;  // APP1 comes before the frame in every JFIF/EXIF file
        }
        if (marker == 0xE1 && !orientation_seen && body_size >= 6 && std::memcmp(body, "Exif\0\0", 6) == 0) {
            probe.orientation = exif_orientation(body, body_size);
            orientation_seen = true;
        }
        pos += length;
    }
}

}  // namespace ibnedge
