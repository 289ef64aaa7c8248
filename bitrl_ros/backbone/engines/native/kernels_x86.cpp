// x86-64 paths of the ternary kernels: AVX2 (vpmaddubsw + vpmaddwd) and AVX-512 VNNI (vpdpbusd).
// Compiled with baseline flags: each function carries a GCC target attribute and kernels.cpp only calls it after
// __builtin_cpu_supports said yes. Packed layout: see kernels.cpp (32 bytes per 128-weight block; (byte >> 2k) & 3
// gives the codes c = w + 1 of weights 32k..32k+31 of the block). Both paths compute sum(c * x) exactly in int32
// (u8 x s8 products; c <= 2 so a vpmaddubsw pair is at most 2*2*128 = 512 in magnitude, four of them 2048: no int16
// saturation even for x = -128) and subtract x_sum: sum(w * x) = sum(c * x) - sum(x).
#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "kernels_internal.h"

// GCC 12 false positive inside its own AVX-512 headers (_mm512_undefined_epi32 in inserti64x4/broadcast_i64x4).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define BITRL_AVX2 __attribute__((target("avx2,fma")))
#define BITRL_VNNI __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

namespace bitrl {
namespace detail {
namespace {

constexpr int kTokTile = 4;  // tokens processed per pass over a row tile's weights

BITRL_AVX2 inline int32_t hsum_avx2(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

BITRL_VNNI inline int32_t hsum_half(__m512i v, int half) {
  return hsum_avx2(half ? _mm512_extracti64x4_epi64(v, 1) : _mm512_castsi512_si256(v));
}

// R rows (pointers rows[0..R)) x T tokens (x + t * xs), nblk blocks; out[r][t] = sum(c * x) over the row.
template <int R, int T>
BITRL_AVX2 void tile_avx2(const uint8_t* const* rows, const int8_t* x, size_t xs, int nblk, int32_t (*out)[kTokTile]) {
  const __m256i mask = _mm256_set1_epi8(3);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[R][T];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
  for (int b = 0; b < nblk; ++b) {
    __m256i wv[R], s16[R][T];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) wv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + 32 * b));
    const int8_t* xb = x + 128 * b;
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      __m256i c[R];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) c[r] = _mm256_and_si256(k ? _mm256_srli_epi16(wv[r], 2 * k) : wv[r], mask);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + t * xs + 32 * k));
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const __m256i p = _mm256_maddubs_epi16(c[r], xv);
          s16[r][t] = k ? _mm256_add_epi16(s16[r][t], p) : p;
        }
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(s16[r][t], ones));
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) out[r][t] = hsum_avx2(acc[r][t]);
}

// P row pairs: pair p holds rows[2p] in the low 256 bits and rows[2p+1] in the high 256 bits of one zmm; each
// activation chunk is broadcast to both halves. Two accumulators per (pair, token) (k even / odd) hide the
// vpdpbusd latency. out[r][t] = sum(c * x).
template <int P, int T>
BITRL_VNNI void tile_vnni(const uint8_t* const* rows, const int8_t* x, size_t xs, int nblk, int32_t (*out)[kTokTile]) {
  const __m512i mask = _mm512_set1_epi8(3);
  __m512i acc[P][T][2];
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[p][t][0] = acc[p][t][1] = _mm512_setzero_si512();
  for (int b = 0; b < nblk; ++b) {
    __m512i wv[P];
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[2 * p] + 32 * b));
      const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[2 * p + 1] + 32 * b));
      wv[p] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    const int8_t* xb = x + 128 * b;
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      __m512i c[P];
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) c[p] = _mm512_and_si512(k ? _mm512_srli_epi16(wv[p], 2 * k) : wv[p], mask);
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) {
        const __m512i xv =
            _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + t * xs + 32 * k)));
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) acc[p][t][k & 1] = _mm512_dpbusd_epi32(acc[p][t][k & 1], c[p], xv);
      }
    }
  }
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const __m512i a = _mm512_add_epi32(acc[p][t][0], acc[p][t][1]);
      out[2 * p][t] = hsum_half(a, 0);
      out[2 * p + 1][t] = hsum_half(a, 1);
    }
}

using TileFn = void (*)(const uint8_t* const*, const int8_t*, size_t, int, int32_t (*)[kTokTile]);

// Rows [row_begin, row_end) in tiles of `rows_main` rows (main[T-1] handles T tokens), the last < rows_main rows
// in tiles of `rows_tail` (tail[T-1]); a partial tile repeats its last row pointer and drops the extra results.
// Tokens go in groups of kTokTile inside each row tile, so a tile's weights are read from memory once.
void drive(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, int tokens, int32_t* acc, int row_begin,
           int row_end, int rows_main, const TileFn* main, int rows_tail, const TileFn* tail) {
  const size_t row_bytes = static_cast<size_t>(w.in_padded) / 4;
  const size_t xs = static_cast<size_t>(w.in_padded);
  const int nblk = w.in_padded / kBlock;
  int32_t out[16][kTokTile];
  const uint8_t* rows[16];
  for (int r0 = row_begin; r0 < row_end;) {
    const bool full = row_end - r0 >= rows_main;
    const int tile_rows = full ? rows_main : rows_tail;
    const int n = full ? rows_main : std::min(rows_tail, row_end - r0);
    for (int i = 0; i < tile_rows; ++i)
      rows[i] = w.codes.data() + static_cast<size_t>(r0 + std::min(i, n - 1)) * row_bytes;
    for (int t0 = 0; t0 < tokens; t0 += kTokTile) {
      const int nt = std::min(kTokTile, tokens - t0);
      (full ? main : tail)[nt - 1](rows, xq + t0 * xs, xs, nblk, out);
      for (int t = 0; t < nt; ++t) {
        int32_t* a = acc + static_cast<size_t>(t0 + t) * w.out + r0;
        const int32_t sx = x_sum[t0 + t];
        for (int i = 0; i < n; ++i) a[i] = out[i][t] - sx;
      }
    }
    r0 += n;
  }
}

#ifndef BITRL_AVX2_ROWS
#define BITRL_AVX2_ROWS 2
#endif
#ifndef BITRL_VNNI_PAIRS
#define BITRL_VNNI_PAIRS 2
#endif

}  // namespace

void gemm_i32_avx2(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, int tokens, int32_t* acc,
                   int row_begin, int row_end) {
  constexpr int R = BITRL_AVX2_ROWS;
  static const TileFn main[kTokTile] = {tile_avx2<R, 1>, tile_avx2<R, 2>, tile_avx2<R, 3>, tile_avx2<R, 4>};
  static const TileFn tail[kTokTile] = {tile_avx2<1, 1>, tile_avx2<1, 2>, tile_avx2<1, 3>, tile_avx2<1, 4>};
  drive(w, xq, x_sum, tokens, acc, row_begin, row_end, R, main, 1, tail);
}

void gemm_i32_avx512vnni(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, int tokens, int32_t* acc,
                         int row_begin, int row_end) {
  constexpr int P = BITRL_VNNI_PAIRS;
  static const TileFn main[kTokTile] = {tile_vnni<P, 1>, tile_vnni<P, 2>, tile_vnni<P, 3>, tile_vnni<P, 4>};
  static const TileFn tail[kTokTile] = {tile_vnni<1, 1>, tile_vnni<1, 2>, tile_vnni<1, 3>, tile_vnni<1, 4>};
  drive(w, xq, x_sum, tokens, acc, row_begin, row_end, 2 * P, main, 2, tail);
}

// quantize_activations, AVX2 (also the AVX-512 machines' path: the row is short, the work memory-bound). Bit for
// bit the scalar rule: max_ps(v, acc) / max_ps(v, lo) return their second operand for a NaN v, as std::max does;
// cvtps_epi32 rounds half to even under the default MXCSR, like nearbyint; the int8 packs never saturate.
BITRL_AVX2 float amax_avx2(const float* row, int in) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= in; i += 8) acc = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(row + i)), acc);
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  float amax = _mm_cvtss_f32(m);
  for (; i < in; ++i) amax = std::max(amax, std::fabs(row[i]));
  return amax;
}

namespace {

BITRL_AVX2 inline __m256i quantize8_avx2(const float* p, __m256 s, __m256 lo, __m256 hi) {
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(p), s), lo), hi));
}

}  // namespace

BITRL_AVX2 int32_t quantize_row_avx2(const float* row, int in, float s, int8_t* q) {
  const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undo the packs' lane interleave
  __m256i sum = _mm256_setzero_si256();
  int i = 0;
  for (; i + 32 <= in; i += 32) {
    const __m256i a = quantize8_avx2(row + i, vs, lo, hi), b = quantize8_avx2(row + i + 8, vs, lo, hi);
    const __m256i c = quantize8_avx2(row + i + 16, vs, lo, hi), d = quantize8_avx2(row + i + 24, vs, lo, hi);
    sum = _mm256_add_epi32(sum, _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d)));
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permutevar8x32_epi32(packed, order));
  }
  return hsum_avx2(sum) + quantize_row_scalar(row + i, in - i, s, q + i);
}

}  // namespace detail
}  // namespace bitrl

#endif  // __x86_64__
