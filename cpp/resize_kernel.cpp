#include "resize_kernel.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define IBNEDGE_X86 1
#else
#define IBNEDGE_X86 0
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define IBNEDGE_NEON 1  // part of the base architecture: no run-time check
#else
#define IBNEDGE_NEON 0
#endif

namespace ibnedge {
namespace {

constexpr int kBits22 = AxisTaps::kWeightBits22;

inline uint8_t clip8_22(int32_t acc) {
    // Pillow's clip8: the sum carries 22 fractional bits and the rounding bias.
    if (acc <= 0) return 0;
    if (acc >= (256 << kBits22)) return 255;
    return uint8_t(acc >> kBits22);
}

// OpenCV's VResizeLinearVec_32s8u (the SIMD path every pixel of MindSpore's resize takes):
// ((((S0 >> 4) * b0) >> 16) + (((S1 >> 4) * b1) >> 16) + 2) >> 2, saturated. The horizontal
// sums S (255 * 2048 at most: weights are non-negative, at most 2048 each) are only ever
// used as S >> 4 (at most 32655), so the ring keeps them as int16 rows: half the memory, and
// the products are int16 x int16 high halves (mulhi), 16 lanes per AVX2 step.
inline int16_t opencv_horizontal_sum(int32_t sum) { return int16_t(sum >> 4); }

// s0, s1: the two source rows' S >> 4.
inline uint8_t opencv_vertical_pixel(int32_t s0, int32_t s1, int32_t b0, int32_t b1) {
    int32_t v = ((s0 * b0) >> 16) + ((s1 * b1) >> 16);
    v = (v + 2) >> 2;
    return uint8_t(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// ---------------------------------------------------------------- portable passes

void horizontal_antialias_scalar(const uint8_t* src, const AxisTaps& taps, const int* first, uint8_t* dst) {
    for (int i = 0; i < taps.outputs; ++i) {
        const uint8_t* p = src + size_t(first[i]) * 4;
        const int32_t* w = &taps.weights[size_t(i) * taps.stride];
        int32_t r = 1 << (kBits22 - 1), g = r, b = r;
        for (int t = 0; t < taps.count[i]; ++t) {
            r += p[4 * t + 0] * w[t];
            g += p[4 * t + 1] * w[t];
            b += p[4 * t + 2] * w[t];
        }
        dst[4 * i + 0] = clip8_22(r);
        dst[4 * i + 1] = clip8_22(g);
        dst[4 * i + 2] = clip8_22(b);
        dst[4 * i + 3] = 0;
    }
}

// Columns [begin, n) of one output row (begin > 0: the tail after a SIMD loop).
void vertical_antialias_scalar(const uint8_t* const* rows, const int32_t* w, int taps, int begin, int n,
                               uint8_t* out) {
    for (int i = begin; i < n; ++i) {
        int32_t acc = 1 << (kBits22 - 1);
        for (int t = 0; t < taps; ++t) acc += rows[t][i] * w[t];
        out[i] = clip8_22(acc);
    }
}

// Outputs [begin, taps.outputs) (begin > 0: the tail after a SIMD loop).
void horizontal_opencv_scalar(const uint8_t* src, const AxisTaps& taps, const int* first, int begin, int16_t* dst) {
    for (int i = begin; i < taps.outputs; ++i) {
        const uint8_t* p = src + size_t(first[i]) * 4;
        const int32_t* w = &taps.weights[size_t(i) * taps.stride];
        if (taps.count[i] == 2) {
            for (int c = 0; c < 4; ++c) dst[4 * i + c] = opencv_horizontal_sum(p[c] * w[0] + p[4 + c] * w[1]);
        } else {
            for (int c = 0; c < 4; ++c) dst[4 * i + c] = opencv_horizontal_sum(p[c] * w[0]);
        }
    }
}

void vertical_opencv_scalar(const int16_t* s0, const int16_t* s1, int32_t b0, int32_t b1, int n, uint8_t* out) {
    for (int i = 0; i < n; ++i) out[i] = opencv_vertical_pixel(s0[i], s1[i], b0, b1);
}

// The vector passes of both instruction sets take OpenCV's two horizontal weights of each
// output as one int16 pair (w0, w1), so one 32-bit lane multiplies both taps (madd on x86,
// a lane of vmull/vmlal on NEON). A one-tap output has w1 == 0: its second pixel (inside
// row_padding_pixels) adds nothing. The pairs are laid out as the pass reads them: outputs
// in groups of `group`, each group's in the order `order`, each pair `repeat` times; a last
// group of fewer outputs is left to the scalar tail.
void opencv_weight_pairs(const AxisTaps& h, const int* order, int group, int repeat, std::vector<int16_t>* out) {
    std::vector<int16_t>& pairs = *out;
    const int groups = h.outputs / group;
    pairs.assign(size_t(groups) * size_t(group) * size_t(repeat) * 2, 0);
    int16_t* pair = pairs.data();
    for (int g = 0; g < groups; ++g)
        for (int k = 0; k < group; ++k) {
            const int32_t* w = &h.weights[size_t(g * group + order[k]) * size_t(h.stride)];
            for (int r = 0; r < repeat; ++r, pair += 2) {
                pair[0] = int16_t(w[0]);
                pair[1] = int16_t(w[1]);
            }
        }
}

// ---------------------------------------------------------------- AVX2 passes
#if IBNEDGE_X86

bool cpu_has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

// Pillow's 22-bit weights do not fit madd's int16, so each weight is split as
// hi * 2048 + lo (hi <= 2048, lo < 2048) and the two sums are recombined exactly:
// sum(p * w) = (sum(p * hi) << 11) + sum(p * lo). Two outputs per vector, one per 128-bit
// lane; four taps per step: pixels [R0 G0 B0 X0 .. R3 G3 B3 X3] are shuffled to channel
// pairs [R0 R1 G0 G1 ..] so madd yields per-channel partial sums with no reduction.
// `split` holds, per output pair and 4-tap group, the vectors (taps 0-1 hi, taps 2-3 hi,
// taps 0-1 lo, taps 2-3 lo), output A in the low lane, B in the high lane.
// Every output runs the table's full group count (zero weights past its taps): a
// per-output count would make the loop exit unpredictable, which costs more.
// kGroups > 0: the group count known at compile time (the loop vanishes for the common 4-
// and 8-tap tables); 0: `groups`. Returns the pair's RGBX sums >> 22 as int32 (A | B).
template <int kGroups>
__attribute__((target("avx2"))) inline __m256i antialias_pair_avx2(const uint8_t* pa, const uint8_t* pb,
                                                                   const int16_t* w, int groups) {
    if (kGroups > 0) groups = kGroups;
    const __m256i pairs = _mm256_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15,  //
                                           0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
    const __m256i zero = _mm256_setzero_si256();
    __m256i acc_hi = zero, acc_lo = zero;
    for (int g = 0; g < groups; ++g, w += 64) {
        __m256i px = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pa + 16 * g))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(pb + 16 * g)), 1);
        px = _mm256_shuffle_epi8(px, pairs);
        const __m256i t01 = _mm256_unpacklo_epi8(px, zero);
        const __m256i t23 = _mm256_unpackhi_epi8(px, zero);
        const __m256i* wv = reinterpret_cast<const __m256i*>(w);
        acc_hi = _mm256_add_epi32(acc_hi, _mm256_add_epi32(_mm256_madd_epi16(t01, _mm256_loadu_si256(wv)),
                                                           _mm256_madd_epi16(t23, _mm256_loadu_si256(wv + 1))));
        acc_lo = _mm256_add_epi32(acc_lo, _mm256_add_epi32(_mm256_madd_epi16(t01, _mm256_loadu_si256(wv + 2)),
                                                           _mm256_madd_epi16(t23, _mm256_loadu_si256(wv + 3))));
    }
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(acc_hi, 11), acc_lo),
                                         _mm256_set1_epi32(1 << (kBits22 - 1)));
    return _mm256_srai_epi32(sum, kBits22);
}

// Four outputs per step (two pairs: one saturating pack for the four), then the last one
// to three two at a time (an odd last output pairs with itself, as split_antialias_weights
// lays it out).
template <int kGroups>
__attribute__((target("avx2"))) void horizontal_antialias_avx2_groups(const uint8_t* src, int outputs, int groups,
                                                                       const int* first, const int16_t* split,
                                                                       uint8_t* dst) {
    if (kGroups > 0) groups = kGroups;
    const size_t pair_stride = size_t(groups) * 64;
    const __m256i four_pixels = _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0);  // A B C D, see below
    int i = 0;
    for (; i + 4 <= outputs; i += 4) {
        const int16_t* w = split + size_t(i / 2) * pair_stride;
        const __m256i ab = antialias_pair_avx2<kGroups>(src + size_t(first[i]) * 4, src + size_t(first[i + 1]) * 4,
                                                        w, groups);
        const __m256i cd = antialias_pair_avx2<kGroups>(src + size_t(first[i + 2]) * 4,
                                                        src + size_t(first[i + 3]) * 4, w + pair_stride, groups);
        // packs per lane: [A C | B D] as int16; packus: lane dwords [A C A C | B D B D].
        __m256i px = _mm256_packs_epi32(ab, cd);
        px = _mm256_packus_epi16(px, px);
        px = _mm256_permutevar8x32_epi32(px, four_pixels);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4 * i), _mm256_castsi256_si128(px));
    }
    const __m256i two_pixels = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
    for (; i < outputs; i += 2) {
        const int b = i + 1 < outputs ? i + 1 : i;
        __m256i px = antialias_pair_avx2<kGroups>(src + size_t(first[i]) * 4, src + size_t(first[b]) * 4,
                                                  split + size_t(i / 2) * pair_stride, groups);
        px = _mm256_packs_epi32(px, px);
        px = _mm256_packus_epi16(px, px);  // lane k: bytes 0..3 = output k's RGBX
        const __m128i two = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(px, two_pixels));
        if (b != i) {
            _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + 4 * i), two);
        } else {
            const int32_t px4 = _mm_cvtsi128_si32(two);
            std::memcpy(dst + 4 * i, &px4, 4);
        }
    }
}

__attribute__((target("avx2"))) void horizontal_antialias_avx2(const uint8_t* src, const AxisTaps& taps,
                                                                const int* first, const int16_t* split,
                                                                uint8_t* dst) {
    const int groups = taps.stride / 4;
    if (groups == 1) return horizontal_antialias_avx2_groups<1>(src, taps.outputs, groups, first, split, dst);
    if (groups == 2) return horizontal_antialias_avx2_groups<2>(src, taps.outputs, groups, first, split, dst);
    horizontal_antialias_avx2_groups<0>(src, taps.outputs, groups, first, split, dst);
}

// The horizontal split above, for the table of every output: per output pair, per 4-tap
// group, four vectors of 16 int16 (taps 0-1 hi, taps 2-3 hi, taps 0-1 lo, taps 2-3 lo); in
// each, lanes 0..7 belong to the pair's first output and 8..15 to the second, and within a
// lane the two taps alternate (R, G, B, X pairs).
void split_antialias_weights(const AxisTaps& h, std::vector<int16_t>* out) {
    const int groups = h.stride / 4;
    const int pairs = (h.outputs + 1) / 2;
    std::vector<int16_t>& split = *out;
    split.assign(size_t(pairs) * groups * 64, 0);
    for (int p = 0; p < pairs; ++p) {
        for (int half = 0; half < 2; ++half) {
            const int i = std::min(2 * p + half, h.outputs - 1);
            for (int g = 0; g < groups; ++g) {
                int16_t* dst = &split[(size_t(p) * groups + g) * 64];
                const int32_t* w = &h.weights[size_t(i) * h.stride + 4 * g];
                for (int lane = 0; lane < 8; ++lane) {
                    const int t = lane & 1;
                    dst[0 + 8 * half + lane] = int16_t(w[t] >> 11);
                    dst[16 + 8 * half + lane] = int16_t(w[2 + t] >> 11);
                    dst[32 + 8 * half + lane] = int16_t(w[t] & 2047);
                    dst[48 + 8 * half + lane] = int16_t(w[2 + t] & 2047);
                }
            }
        }
    }
}

// The same split for the vertical pass, which takes taps two at a time: per output row, per
// tap pair (t, t+1), the int32 lanes (hi_t | hi_t+1 << 16) and (lo_t | lo_t+1 << 16); an odd
// last tap pairs with a zero weight. `v.stride` is even, so every row has stride / 2 pairs.
void split_vertical_pairs(const AxisTaps& v, std::vector<int32_t>* out) {
    const int pairs = v.stride / 2;
    std::vector<int32_t>& split = *out;
    split.assign(size_t(v.outputs) * pairs * 2, 0);
    for (int j = 0; j < v.outputs; ++j) {
        const int32_t* w = &v.weights[size_t(j) * v.stride];
        for (int p = 0; p < pairs; ++p) {
            const int32_t w0 = w[2 * p], w1 = w[2 * p + 1];
            int32_t* dst = &split[(size_t(j) * pairs + p) * 2];
            dst[0] = int32_t(uint32_t(uint16_t(w0 >> 11)) | (uint32_t(uint16_t(w1 >> 11)) << 16));
            dst[1] = int32_t(uint32_t(uint16_t(w0 & 2047)) | (uint32_t(uint16_t(w1 & 2047)) << 16));
        }
    }
}

// Two source rows per step, their pixels interleaved as int16 (a0 b0 a1 b1 ..) so that one
// madd applies both rows' weights; hi/lo split as in the horizontal pass. `pairs` is this
// output row's part of split_vertical_pairs; rows[taps] must be readable when taps is odd
// (its weight is zero). kPairs > 0: the tap-pair count known at compile time (the weights
// stay in registers for the whole row: 2 pairs cover every shrink up to 2x); 0: any.
template <int kPairs>
__attribute__((target("avx2"))) void vertical_antialias_avx2_pairs(const uint8_t* const* rows, const int32_t* w,
                                                                    const int32_t* pairs, int taps, int n,
                                                                    uint8_t* out) {
    const int count = kPairs > 0 ? kPairs : (taps + 1) / 2;
    constexpr int kHeld = kPairs > 0 ? kPairs : 1;
    __m256i k_hi[kHeld], k_lo[kHeld];
    for (int p = 0; p < kHeld; ++p) {
        k_hi[p] = _mm256_set1_epi32(pairs[2 * p]);
        k_lo[p] = _mm256_set1_epi32(pairs[2 * p + 1]);
    }
    int i = 0;
    const __m256i bias = _mm256_set1_epi32(1 << (kBits22 - 1));
    const __m256i zero = _mm256_setzero_si256();
    for (; i + 16 <= n; i += 16) {
        __m256i hi03 = zero, hi47 = zero, lo03 = zero, lo47 = zero;
        for (int p = 0; p < count; ++p) {
            const __m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[2 * p] + i)));
            const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[2 * p + 1] + i)));
            const __m256i ab03 = _mm256_unpacklo_epi16(a, b);  // pixels 0-3 | 8-11
            const __m256i ab47 = _mm256_unpackhi_epi16(a, b);  // pixels 4-7 | 12-15
            const __m256i kh = kPairs > 0 ? k_hi[p] : _mm256_set1_epi32(pairs[2 * p]);
            const __m256i kl = kPairs > 0 ? k_lo[p] : _mm256_set1_epi32(pairs[2 * p + 1]);
            hi03 = _mm256_add_epi32(hi03, _mm256_madd_epi16(ab03, kh));
            hi47 = _mm256_add_epi32(hi47, _mm256_madd_epi16(ab47, kh));
            lo03 = _mm256_add_epi32(lo03, _mm256_madd_epi16(ab03, kl));
            lo47 = _mm256_add_epi32(lo47, _mm256_madd_epi16(ab47, kl));
        }
        const __m256i acc03 = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi03, 11), lo03), bias);
        const __m256i acc47 = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi47, 11), lo47), bias);
        // packs interleaves per lane: [0-3 4-7 | 8-11 12-15], pixel order again.
        const __m256i p16 = _mm256_packs_epi32(_mm256_srai_epi32(acc03, kBits22), _mm256_srai_epi32(acc47, kBits22));
        const __m128i p8 = _mm_packus_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), p8);
    }
    vertical_antialias_scalar(rows, w, taps, i, n, out);
}

__attribute__((target("avx2"))) void vertical_antialias_avx2(const uint8_t* const* rows, const int32_t* w,
                                                              const int32_t* pairs, int taps, int n, uint8_t* out) {
    switch ((taps + 1) / 2) {
        case 1:
            return vertical_antialias_avx2_pairs<1>(rows, w, pairs, taps, n, out);
        case 2:
            return vertical_antialias_avx2_pairs<2>(rows, w, pairs, taps, n, out);
        case 3:
            return vertical_antialias_avx2_pairs<3>(rows, w, pairs, taps, n, out);
        default:
            return vertical_antialias_avx2_pairs<0>(rows, w, pairs, taps, n, out);
    }
}

// Four outputs per step: two pixels (8 bytes) each, shuffled to channel pairs [R0 R1 G0 G1 ..]
// and widened so that madd with the output's (w0, w1) pair gives its four int32 channels,
// shifted and packed to int16 (packs takes lanes [i | i+2] and [i+1 | i+3] back to pixel
// order). The pairs come already spread over those lanes (opencv_weight_pairs): the same for
// every row, so not re-shuffled in each.
__attribute__((target("avx2"))) void horizontal_opencv_avx2(const uint8_t* src, const AxisTaps& taps,
                                                             const int* first, const int16_t* lanes, int16_t* dst) {
    const __m256i channel_pairs = _mm256_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15,  //
                                                   0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
    const __m256i zero = _mm256_setzero_si256();
    const int outputs = taps.outputs;
    int i = 0;
    for (; i + 4 <= outputs; i += 4) {
        auto two_pixels = [&](int k) {
            return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + size_t(first[i + k]) * 4));
        };
        const __m128i ab = _mm_unpacklo_epi64(two_pixels(0), two_pixels(1));
        const __m128i cd = _mm_unpacklo_epi64(two_pixels(2), two_pixels(3));
        const __m256i px = _mm256_shuffle_epi8(_mm256_inserti128_si256(_mm256_castsi128_si256(ab), cd, 1), channel_pairs);
        const __m256i ac = _mm256_unpacklo_epi8(px, zero);  // outputs i | i+2, as int16 channel pairs
        const __m256i bd = _mm256_unpackhi_epi8(px, zero);  // outputs i+1 | i+3
        const __m256i* k = reinterpret_cast<const __m256i*>(lanes + 8 * i);
        const __m256i rac = _mm256_srai_epi32(_mm256_madd_epi16(ac, _mm256_loadu_si256(k)), 4);
        const __m256i rbd = _mm256_srai_epi32(_mm256_madd_epi16(bd, _mm256_loadu_si256(k + 1)), 4);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 4 * i), _mm256_packs_epi32(rac, rbd));
    }
    horizontal_opencv_scalar(src, taps, first, i, dst);
}

// ((S >> 4) * b) >> 16 is mulhi's signed high half (both factors non-negative int16).
__attribute__((target("avx2"))) inline __m256i vertical_opencv_16(const int16_t* s0, const int16_t* s1, __m256i k0,
                                                                 __m256i k1) {
    const __m256i a = _mm256_mulhi_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s0)), k0);
    const __m256i b = _mm256_mulhi_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s1)), k1);
    return _mm256_srai_epi16(_mm256_add_epi16(_mm256_add_epi16(a, b), _mm256_set1_epi16(2)), 2);
}

__attribute__((target("avx2"))) void vertical_opencv_avx2(const int16_t* s0, const int16_t* s1, int32_t b0,
                                                           int32_t b1, int n, uint8_t* out) {
    int i = 0;
    const __m256i k0 = _mm256_set1_epi16(int16_t(b0)), k1 = _mm256_set1_epi16(int16_t(b1));
    for (; i + 32 <= n; i += 32) {
        const __m256i lo = vertical_opencv_16(s0 + i, s1 + i, k0, k1);
        const __m256i hi = vertical_opencv_16(s0 + i + 16, s1 + i + 16, k0, k1);
        // packus per lane: [lo.0-7 hi.0-7 | lo.8-15 hi.8-15]; the permute restores the order.
        const __m256i p8 = _mm256_permute4x64_epi64(_mm256_packus_epi16(lo, hi), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), p8);
    }
    vertical_opencv_scalar(s0 + i, s1 + i, b0, b1, n - i, out + i);
}

// RGBX bytes -> three normalised float planes, 8 pixels per step (multiply, then add:
// no FMA, so the result equals the scalar tail's).
__attribute__((target("avx2"))) int store_planes_avx2(const uint8_t* rgbx, int width, const Normalization& norm,
                                                       float* r, float* g, float* b) {
    const __m256i byte = _mm256_set1_epi32(0xFF);
    const __m256 sr = _mm256_set1_ps(norm.scale[0]), sg = _mm256_set1_ps(norm.scale[1]),
                 sb = _mm256_set1_ps(norm.scale[2]);
    const __m256 br = _mm256_set1_ps(norm.bias[0]), bg = _mm256_set1_ps(norm.bias[1]),
                 bb = _mm256_set1_ps(norm.bias[2]);
    int i = 0;
    for (; i + 8 <= width; i += 8) {
        const __m256i px = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rgbx + 4 * i));
        const __m256 vr = _mm256_cvtepi32_ps(_mm256_and_si256(px, byte));
        const __m256 vg = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(px, 8), byte));
        const __m256 vb = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(px, 16), byte));
        _mm256_storeu_ps(r + i, _mm256_add_ps(_mm256_mul_ps(vr, sr), br));
        _mm256_storeu_ps(g + i, _mm256_add_ps(_mm256_mul_ps(vg, sg), bg));
        _mm256_storeu_ps(b + i, _mm256_add_ps(_mm256_mul_ps(vb, sb), bb));
    }
    return i;
}

// Packed RGB -> RGBX with X = 0, 4 pixels per step (one byte shuffle of 16 loaded bytes, so
// it stops while 6 pixels are left: the load reads 4 bytes past the 4 pixels). Returns the
// pixels done.
__attribute__((target("avx2"))) int rgb_to_rgbx_avx2(const uint8_t* rgb, int width, uint8_t* rgbx) {
    const __m128i spread = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);  // -1: zero
    int i = 0;
    for (; i + 6 <= width; i += 4) {
        const __m128i px = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rgb + 3 * i));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(rgbx + 4 * i), _mm_shuffle_epi8(px, spread));
    }
    return i;
}

#endif

// ---------------------------------------------------------------- NEON passes
#if IBNEDGE_NEON

// The 22-bit weights split as on x86 (hi * 2048 + lo, both fit int16), so that each tap's
// RGBX, widened once to int16, is multiplied by a lane of the weights with a widening
// multiply-accumulate (no second widening to int32). `split` holds per output, per 4-tap
// group, [hi0 hi1 hi2 hi3 lo0 lo1 lo2 lo3]. Two outputs per step; every output runs the
// table's full group count (zero weights past its taps), as on x86.
void split_antialias_weights_neon(const AxisTaps& h, std::vector<int16_t>* out) {
    std::vector<int16_t>& split = *out;
    split.assign(size_t(h.outputs) * h.stride * 2, 0);
    for (int i = 0; i < h.outputs; ++i) {
        for (int t = 0; t < h.stride; ++t) {
            const int32_t w = h.weights[size_t(i) * h.stride + t];
            int16_t* group = &split[(size_t(i) * h.stride + (t & ~3)) * 2];
            group[t & 3] = int16_t(w >> 11);
            group[4 + (t & 3)] = int16_t(w & 2047);
        }
    }
}

// One output's RGBX, saturated to 0..65535 (clip8_22 then ends with a saturating narrow):
// floor((hi * 2048 + lo) / 2^22) == floor((hi + floor(lo / 2048)) / 2048), one shift-and-add
// and one saturating shift. kGroups > 0: the group count known at compile time (the loop
// vanishes for the common 4- and 8-tap tables); 0: `groups`.
template <int kGroups>
inline uint16x4_t antialias_output_neon(const uint8_t* p, const int16_t* k, int groups) {
    if (kGroups > 0) groups = kGroups;
    int32x4_t hi = vdupq_n_s32(0), lo = vdupq_n_s32(1 << (kBits22 - 1));
    for (int g = 0; g < groups; ++g, p += 16, k += 8) {
        const uint8x16_t px = vld1q_u8(p);
        const int16x8_t kv = vld1q_s16(k);
        const int16x8_t t01 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(px)));
        const int16x8_t t23 = vreinterpretq_s16_u16(vmovl_high_u8(px));
        hi = vmlal_laneq_s16(hi, vget_low_s16(t01), kv, 0);
        lo = vmlal_laneq_s16(lo, vget_low_s16(t01), kv, 4);
        hi = vmlal_high_laneq_s16(hi, t01, kv, 1);
        lo = vmlal_high_laneq_s16(lo, t01, kv, 5);
        hi = vmlal_laneq_s16(hi, vget_low_s16(t23), kv, 2);
        lo = vmlal_laneq_s16(lo, vget_low_s16(t23), kv, 6);
        hi = vmlal_high_laneq_s16(hi, t23, kv, 3);
        lo = vmlal_high_laneq_s16(lo, t23, kv, 7);
    }
    return vqshrun_n_s32(vsraq_n_s32(hi, lo, 11), 11);
}

template <int kGroups>
void horizontal_antialias_neon_groups(const uint8_t* src, int outputs, int groups, const int* first,
                                      const int16_t* split, uint8_t* dst) {
    const size_t split_stride = size_t(groups) * 8;
    int i = 0;
    for (; i + 2 <= outputs; i += 2) {
        const uint16x4_t a = antialias_output_neon<kGroups>(src + size_t(first[i]) * 4, split + i * split_stride, groups);
        const uint16x4_t b =
            antialias_output_neon<kGroups>(src + size_t(first[i + 1]) * 4, split + (i + 1) * split_stride, groups);
        vst1_u8(dst + 4 * i, vqmovn_u16(vcombine_u16(a, b)));
    }
    if (i < outputs) {
        const uint16x4_t a = antialias_output_neon<kGroups>(src + size_t(first[i]) * 4, split + i * split_stride, groups);
        const uint32_t px4 = vget_lane_u32(vreinterpret_u32_u8(vqmovn_u16(vcombine_u16(a, a))), 0);
        std::memcpy(dst + 4 * i, &px4, 4);
    }
}

void horizontal_antialias_neon(const uint8_t* src, const AxisTaps& taps, const int* first, const int16_t* split,
                               uint8_t* dst) {
    const int groups = taps.stride / 4;
    if (groups == 1) return horizontal_antialias_neon_groups<1>(src, taps.outputs, groups, first, split, dst);
    if (groups == 2) return horizontal_antialias_neon_groups<2>(src, taps.outputs, groups, first, split, dst);
    horizontal_antialias_neon_groups<0>(src, taps.outputs, groups, first, split, dst);
}

inline int32x4_t widen_low(uint16x8_t v) { return vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(v))); }
inline int32x4_t widen_high(uint16x8_t v) { return vreinterpretq_s32_u32(vmovl_high_u16(v)); }

// 16 bytes of the output row per step, every tap widened to int32 and multiplied by its
// weight. kTaps > 0: the tap count known at compile time (the loop over taps unrolled, the
// weights in registers for the whole row); 0: `taps`.
template <int kTaps>
void vertical_antialias_neon_taps(const uint8_t* const* rows, const int32_t* w, int taps, int n, uint8_t* out) {
    if (kTaps > 0) taps = kTaps;
    int i = 0;
    const int32x4_t bias = vdupq_n_s32(1 << (kBits22 - 1));
    for (; i + 16 <= n; i += 16) {
        int32x4_t a0 = bias, a1 = bias, a2 = bias, a3 = bias;
        for (int t = 0; t < taps; ++t) {
            const uint8x16_t px = vld1q_u8(rows[t] + i);
            const uint16x8_t lo = vmovl_u8(vget_low_u8(px)), hi = vmovl_high_u8(px);
            a0 = vmlaq_n_s32(a0, widen_low(lo), w[t]);
            a1 = vmlaq_n_s32(a1, widen_high(lo), w[t]);
            a2 = vmlaq_n_s32(a2, widen_low(hi), w[t]);
            a3 = vmlaq_n_s32(a3, widen_high(hi), w[t]);
        }
        const uint16x8_t lo = vcombine_u16(vqmovun_s32(vshrq_n_s32(a0, kBits22)), vqmovun_s32(vshrq_n_s32(a1, kBits22)));
        const uint16x8_t hi = vcombine_u16(vqmovun_s32(vshrq_n_s32(a2, kBits22)), vqmovun_s32(vshrq_n_s32(a3, kBits22)));
        vst1q_u8(out + i, vcombine_u8(vqmovn_u16(lo), vqmovn_u16(hi)));
    }
    vertical_antialias_scalar(rows, w, taps, i, n, out);
}

void vertical_antialias_neon(const uint8_t* const* rows, const int32_t* w, int taps, int n, uint8_t* out) {
    switch (taps) {
        case 2:
            return vertical_antialias_neon_taps<2>(rows, w, taps, n, out);
        case 3:
            return vertical_antialias_neon_taps<3>(rows, w, taps, n, out);
        case 4:
            return vertical_antialias_neon_taps<4>(rows, w, taps, n, out);
        default:
            return vertical_antialias_neon_taps<0>(rows, w, taps, n, out);
    }
}

// Two outputs per step: each one's two pixels widened to int16, times its (w0, w1) pair,
// narrowed back to int16 as S >> 4 (vshrn: the sum fits, so the narrowing is exact).
void horizontal_opencv_neon(const uint8_t* src, const AxisTaps& taps, const int* first, const int16_t* pairs,
                            int16_t* dst) {
    const int outputs = taps.outputs;
    int i = 0;
    for (; i + 2 <= outputs; i += 2) {
        const int16x4_t k = vld1_s16(pairs + 2 * i);  // w0 w1 of output i, then of i+1
        const int16x8_t a = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(src + size_t(first[i]) * 4)));
        const int16x8_t b = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(src + size_t(first[i + 1]) * 4)));
        const int32x4_t sa = vmlal_lane_s16(vmull_lane_s16(vget_low_s16(a), k, 0), vget_high_s16(a), k, 1);
        const int32x4_t sb = vmlal_lane_s16(vmull_lane_s16(vget_low_s16(b), k, 2), vget_high_s16(b), k, 3);
        vst1q_s16(dst + 4 * i, vcombine_s16(vshrn_n_s32(sa, 4), vshrn_n_s32(sb, 4)));
    }
    horizontal_opencv_scalar(src, taps, first, i, dst);
}

// ((S >> 4) * b) >> 16 per row is vqdmulh's high half of the doubled product, (S * b) >> 15
// (never saturating: both factors are non-negative int16), shifted right once more (floor
// division composes); the two rows' halves summed by shift-right-accumulate; (v + 2) >> 2
// saturated to 0..255 is one rounding, saturating, unsigned narrow (vqrshrun).
inline int16x8_t vertical_opencv_neon_8(const int16_t* s0, const int16_t* s1, int16_t b0, int16_t b1) {
    const int16x8_t a = vqdmulhq_n_s16(vld1q_s16(s0), b0);
    const int16x8_t b = vqdmulhq_n_s16(vld1q_s16(s1), b1);
    return vsraq_n_s16(vshrq_n_s16(a, 1), b, 1);
}

void vertical_opencv_neon(const int16_t* s0, const int16_t* s1, int32_t b0, int32_t b1, int n, uint8_t* out) {
    int i = 0;
    const int16_t k0 = int16_t(b0), k1 = int16_t(b1);
    for (; i + 16 <= n; i += 16) {
        const uint8x8_t lo = vqrshrun_n_s16(vertical_opencv_neon_8(s0 + i, s1 + i, k0, k1), 2);
        vst1q_u8(out + i, vqrshrun_high_n_s16(lo, vertical_opencv_neon_8(s0 + i + 8, s1 + i + 8, k0, k1), 2));
    }
    vertical_opencv_scalar(s0 + i, s1 + i, b0, b1, n - i, out + i);
}

inline void store_channel_neon(uint8x16_t v, float32x4_t scale, float32x4_t bias, float* dst) {
    const uint16x8_t lo = vmovl_u8(vget_low_u8(v)), hi = vmovl_high_u8(v);
    const uint32x4_t q[4] = {vmovl_u16(vget_low_u16(lo)), vmovl_high_u16(lo), vmovl_u16(vget_low_u16(hi)),
                             vmovl_high_u16(hi)};
    for (int k = 0; k < 4; ++k) vst1q_f32(dst + 4 * k, vaddq_f32(vmulq_f32(vcvtq_f32_u32(q[k]), scale), bias));
}

// RGBX bytes -> three normalised float planes, 16 pixels per step (vld4 de-interleaves the
// channels). Multiply, then add: -ffp-contract=off keeps GCC from fusing them into the FMA
// the scalar tail (and x86) never uses.
int store_planes_neon(const uint8_t* rgbx, int width, const Normalization& norm, float* r, float* g, float* b) {
    float* planes[3] = {r, g, b};
    float32x4_t scale[3], bias[3];
    for (int c = 0; c < 3; ++c) {
        scale[c] = vdupq_n_f32(norm.scale[c]);
        bias[c] = vdupq_n_f32(norm.bias[c]);
    }
    int i = 0;
    for (; i + 16 <= width; i += 16) {
        const uint8x16x4_t px = vld4q_u8(rgbx + 4 * i);
        for (int c = 0; c < 3; ++c) store_channel_neon(px.val[c], scale[c], bias[c], planes[c] + i);
    }
    return i;
}

// Packed RGB -> RGBX with X = 0, 16 pixels per step (vld3 de-interleaves, vst4 interleaves).
// Returns the pixels done.
int rgb_to_rgbx_neon(const uint8_t* rgb, int width, uint8_t* rgbx) {
    int i = 0;
    for (; i + 16 <= width; i += 16) {
        const uint8x16x3_t px = vld3q_u8(rgb + 3 * i);
        const uint8x16x4_t out = {{px.val[0], px.val[1], px.val[2], vdupq_n_u8(0)}};
        vst4q_u8(rgbx + 4 * i, out);
    }
    return i;
}

#endif

KernelSimd detect_simd() {
    const char* setting = std::getenv("IBNEDGE_SIMD");
    if (setting && std::strcmp(setting, "off") == 0) return KernelSimd::kNone;
#if IBNEDGE_X86
    if (cpu_has_avx2()) return KernelSimd::kAvx2;
#endif
    return IBNEDGE_NEON ? KernelSimd::kNeon : KernelSimd::kNone;
}

// Packed RGB -> RGBX into a row whose X bytes are 0 (the vector passes write 0 there too):
// a 3-byte copy per pixel is several times slower than the vector shuffles.
void packed_rgb_to_rgbx(const uint8_t* rgb, int width, KernelSimd simd, uint8_t* rgbx) {
    int i = 0;
    (void)simd;  // read only by the vector paths built here
#if IBNEDGE_X86
    if (simd == KernelSimd::kAvx2) i = rgb_to_rgbx_avx2(rgb, width, rgbx);
#endif
#if IBNEDGE_NEON
    if (simd == KernelSimd::kNeon) i = rgb_to_rgbx_neon(rgb, width, rgbx);
#endif
    for (; i < width; ++i) std::memcpy(rgbx + 4 * i, rgb + 3 * i, 3);
}

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

KernelSimd kernel_simd() {
    // Constant-initialised, so no initialisation guard exists that a child forked in the
    // middle of the first call could inherit taken; detecting twice gives the same answer.
    static std::atomic<int> detected{-1};
    int simd = detected.load(std::memory_order_relaxed);
    if (simd < 0) {
        simd = int(detect_simd());
        detected.store(simd, std::memory_order_relaxed);
    }
    return KernelSimd(simd);
}

const char* kernel_simd_name(KernelSimd simd) {
    switch (simd) {
        case KernelSimd::kAvx2:
            return "avx2";
        case KernelSimd::kNeon:
            return "neon";
        case KernelSimd::kNone:
            break;
    }
    return "scalar";
}

Normalization::Normalization(const TensorSpec& spec) {
    for (int c = 0; c < 3; ++c) {
        scale[c] = float(1.0 / (255.0 * spec.std[c]));
        bias[c] = float(-spec.mean[c] / spec.std[c]);
    }
}

int row_padding_pixels(const ResizePlan& plan) {
    // The vector antialias passes read whole 4-tap groups (AVX2: for two outputs at a time);
    // the OpenCV ones two pixels per output, the second unused for one-tap outputs.
    return plan.horizontal.stride + 4;
}

Resampler::Resampler(const ResizePlan& plan, const Normalization& norm, ResamplerScratch& scratch, float* out)
    : plan_(plan),
      norm_(norm),
      s_(scratch),
      out_(out),
      simd_(kernel_simd()),
      ring_rows_(std::max(plan.vertical.max_count, 1)),
      x_origin_(-1),
      next_output_(0),
      last_row_(-1) {
    const int width = plan_.horizontal.outputs;
    const size_t bytes_per_pixel = plan_.kind == FilterKind::kOpenCvLinear ? 8 : 4;  // int16 x4 or uint8 x4
    // Rounded up so the vector loops may run over whole 16-pixel blocks.
    ring_stride_ = round_up(size_t(width) * bytes_per_pixel + 64, 64);
    s_.ring.assign(ring_stride_ * ring_rows_, 0);
    s_.row_pointers.assign(size_t(ring_rows_) + 1, nullptr);  // + 1: vertical_antialias_avx2's pairs
    s_.row_out.assign(round_up(size_t(width) * 4 + 64, 64), 0);

    const AxisTaps& v = plan_.vertical;
    s_.wanted.assign(size_t(std::max(v.source_end - v.source_begin, 0)), 0);
    for (int j = 0; j < v.outputs; ++j)
        for (int t = 0; t < v.count[j]; ++t) s_.wanted[size_t(v.first[j] + t - v.source_begin)] = 1;

#if IBNEDGE_X86
    if (simd_ == KernelSimd::kAvx2 && plan_.kind == FilterKind::kAntialiasBilinear) {
        split_antialias_weights(plan_.horizontal, &s_.split_weights);
        split_vertical_pairs(plan_.vertical, &s_.vertical_pairs);
    }
#endif
#if IBNEDGE_NEON
    if (simd_ == KernelSimd::kNeon && plan_.kind == FilterKind::kAntialiasBilinear)
        split_antialias_weights_neon(plan_.horizontal, &s_.split_weights);
#endif
#if IBNEDGE_X86
    // madd lanes of 4 outputs: [i x4 | i+2 x4], [i+1 x4 | i+3 x4] (horizontal_opencv_avx2)
    static const int kMaddOrder[4] = {0, 2, 1, 3};
    if (simd_ == KernelSimd::kAvx2 && plan_.kind == FilterKind::kOpenCvLinear)
        opencv_weight_pairs(plan_.horizontal, kMaddOrder, 4, 4, &s_.pair_weights);
#endif
#if IBNEDGE_NEON
    static const int kInOrder[1] = {0};
    if (simd_ == KernelSimd::kNeon && plan_.kind == FilterKind::kOpenCvLinear)
        opencv_weight_pairs(plan_.horizontal, kInOrder, 1, 1, &s_.pair_weights);
#endif
}

bool Resampler::wants_row(int y) const {
    const int i = y - plan_.vertical.source_begin;
    return i >= 0 && size_t(i) < s_.wanted.size() && s_.wanted[size_t(i)];
}

void Resampler::set_column_origin(int x_origin) {
    if (x_origin > column_begin() && column_begin() < column_end())
        throw std::logic_error("source row starts after the first column the filter reads");
    x_origin_ = x_origin;
    const AxisTaps& h = plan_.horizontal;
    s_.relative_first.assign(size_t(h.outputs), 0);
    for (int i = 0; i < h.outputs; ++i)
        s_.relative_first[size_t(i)] = h.count[i] > 0 ? h.first[i] - x_origin : 0;
}

void Resampler::push_row(int y, const uint8_t* rgbx, int x_origin) {
    if (y <= last_row_) throw std::logic_error("source rows must arrive in increasing order");
    last_row_ = y;
    if (!wants_row(y)) {
        emit_ready_rows(y);
        return;
    }
    if (x_origin != x_origin_) set_column_origin(x_origin);
    uint8_t* slot = &s_.ring[ring_stride_ * size_t(y % ring_rows_)];
    if (plan_.kind == FilterKind::kAntialiasBilinear)
        filter_antialias_row(rgbx, slot);
    else
        filter_opencv_row(rgbx, reinterpret_cast<int16_t*>(slot));
    emit_ready_rows(y);
}

void Resampler::filter_antialias_row(const uint8_t* rgbx, uint8_t* dst) const {
    const AxisTaps& h = plan_.horizontal;
    const int* first = s_.relative_first.data();
    switch (simd_) {
#if IBNEDGE_X86
        case KernelSimd::kAvx2:
            return horizontal_antialias_avx2(rgbx, h, first, s_.split_weights.data(), dst);
#endif
#if IBNEDGE_NEON
        case KernelSimd::kNeon:
            return horizontal_antialias_neon(rgbx, h, first, s_.split_weights.data(), dst);
#endif
        default:
            return horizontal_antialias_scalar(rgbx, h, first, dst);
    }
}

void Resampler::filter_opencv_row(const uint8_t* rgbx, int16_t* dst) const {
    const AxisTaps& h = plan_.horizontal;
    const int* first = s_.relative_first.data();
    switch (simd_) {
#if IBNEDGE_X86
        case KernelSimd::kAvx2:
            return horizontal_opencv_avx2(rgbx, h, first, s_.pair_weights.data(), dst);
#endif
#if IBNEDGE_NEON
        case KernelSimd::kNeon:
            return horizontal_opencv_neon(rgbx, h, first, s_.pair_weights.data(), dst);
#endif
        default:
            return horizontal_opencv_scalar(rgbx, h, first, 0, dst);
    }
}

void Resampler::emit_ready_rows(int last_pushed) {
    const AxisTaps& v = plan_.vertical;
    // Padding rows (count 0) are reached only once every real row above them is out.
    while (next_output_ < v.outputs && (v.count[next_output_] == 0 || v.last(next_output_) <= last_pushed))
        emit_row(next_output_++);
}

void Resampler::finish() {
    while (next_output_ < plan_.vertical.outputs) emit_row(next_output_++);
}

void Resampler::emit_row(int j) {
    const AxisTaps& v = plan_.vertical;
    const int n = plan_.horizontal.outputs * 4;
    uint8_t* row = s_.row_out.data();
    if (v.count[j] == 0 || v.last(j) > last_row_) {
        // Zero padding (or rows the source never delivered: the caller reports that item as failed).
        std::memset(row, 0, size_t(n));
    } else if (plan_.kind == FilterKind::kAntialiasBilinear) {
        const uint8_t** rows = s_.row_pointers.data();
        const int taps = v.count[j];
        for (int t = 0; t < taps; ++t) rows[t] = &s_.ring[ring_stride_ * size_t((v.first[j] + t) % ring_rows_)];
        rows[taps] = rows[taps - 1];  // the zero-weight partner of an odd last tap
        const int32_t* w = &v.weights[size_t(j) * v.stride];
        switch (simd_) {
#if IBNEDGE_X86
            case KernelSimd::kAvx2:
                vertical_antialias_avx2(rows, w, &s_.vertical_pairs[size_t(j) * v.stride], taps, n, row);
                break;
#endif
#if IBNEDGE_NEON
            case KernelSimd::kNeon:
                vertical_antialias_neon(rows, w, taps, n, row);
                break;
#endif
            default:
                vertical_antialias_scalar(rows, w, taps, 0, n, row);
        }
    } else {
        const int16_t* s0 = reinterpret_cast<const int16_t*>(&s_.ring[ring_stride_ * size_t(v.first[j] % ring_rows_)]);
        const int16_t* s1 = reinterpret_cast<const int16_t*>(&s_.ring[ring_stride_ * size_t(v.last(j) % ring_rows_)]);
        const int32_t* w = &v.weights[size_t(j) * v.stride];
        switch (simd_) {
#if IBNEDGE_X86
            case KernelSimd::kAvx2:
                vertical_opencv_avx2(s0, s1, w[0], w[1], n, row);
                break;
#endif
#if IBNEDGE_NEON
            case KernelSimd::kNeon:
                vertical_opencv_neon(s0, s1, w[0], w[1], n, row);
                break;
#endif
            default:
                vertical_opencv_scalar(s0, s1, w[0], w[1], n, row);
        }
    }
    store_row(j, row);
}

void Resampler::store_row(int j, const uint8_t* rgbx) {
    const int width = plan_.horizontal.outputs;
    const size_t plane = size_t(plan_.vertical.outputs) * size_t(width);
    float* r = out_ + size_t(j) * width;
    float* g = r + plane;
    float* b = g + plane;
    int i = 0;
#if IBNEDGE_X86
    if (simd_ == KernelSimd::kAvx2) i = store_planes_avx2(rgbx, width, norm_, r, g, b);
#endif
#if IBNEDGE_NEON
    if (simd_ == KernelSimd::kNeon) i = store_planes_neon(rgbx, width, norm_, r, g, b);
#endif
    for (; i < width; ++i) {
        r[i] = float(rgbx[4 * i + 0]) * norm_.scale[0] + norm_.bias[0];
        g[i] = float(rgbx[4 * i + 1]) * norm_.scale[1] + norm_.bias[1];
        b[i] = float(rgbx[4 * i + 2]) * norm_.scale[2] + norm_.bias[2];
    }
}

void resample_pixels(const PixelView& pixels, const ResizePlan& plan, const Normalization& norm,
                     ResamplerScratch& scratch, float* out) {
    if (pixels.width != plan.source_width || pixels.height != plan.source_height)
        throw std::logic_error("pixel view does not match the resize plan");
    if (pixels.channels < 3) throw std::invalid_argument("pixels need at least 3 channels");
    Resampler resampler(plan, norm, scratch, out);
    const int x0 = resampler.column_begin();
    const int x1 = std::max(resampler.column_end(), x0);
    const KernelSimd simd = kernel_simd();
    std::vector<uint8_t>& row = scratch.source_row;
    row.assign(size_t(x1 - x0 + row_padding_pixels(plan)) * 4, 0);
    for (int y = resampler.row_begin(); y < resampler.row_end(); ++y) {
        if (!resampler.wants_row(y)) continue;
        const uint8_t* src = pixels.data + pixels.row_stride * y + pixels.pixel_stride * x0;
        uint8_t* dst = row.data();
        const int n = x1 - x0;
        if (pixels.pixel_stride == 4 && pixels.channels == 4) {  // RGBX: the 4th byte is the pixel's own
            std::memcpy(dst, src, size_t(n) * 4);
        } else if (pixels.pixel_stride == 4 && n > 0) {
            // 3 channels 4 bytes apart (an RGBA array's [:, :, :3] or [:, :, 1:]): one copy, in
            // which each X byte gets the byte after the pixel (the passes keep channels apart and
            // never store X); it ends at the last pixel's third channel, the view's last byte.
            std::memcpy(dst, src, size_t(n) * 4 - 1);
        } else if (pixels.pixel_stride == 3) {
            packed_rgb_to_rgbx(src, n, simd, dst);
        } else {
            for (int x = 0; x < n; ++x, src += pixels.pixel_stride) std::memcpy(dst + 4 * x, src, 3);
        }
        resampler.push_row(y, row.data(), x0);
    }
    resampler.finish();
}

}  // namespace ibnedge
