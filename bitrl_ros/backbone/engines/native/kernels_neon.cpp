// AArch64 path of the ternary kernels: ARMv8.0 Advanced SIMD only (the Raspberry Pi 4's Cortex-A72 has no dot
// product instructions, so no vdotq_s32). Packed layout: see kernels.cpp; a 32-byte block is two q registers and
// (byte >> 2k) & 3 gives the codes c = w + 1 (0, 1, 2) of weights 32k..32k+31 of the block. Like the x86 paths we
// multiply the codes, not w (sum w*x = sum c*x - sum x), which saves the c - 1 per 16 weights and row: the codes
// are valid signed int8 too, so plain vmull_s8 / vmlal_high_s8 do it. Per block and (row, token): 16 widening
// multiplies accumulate in int16 (|sum| <= 16 * 2 * 128 = 4096 per lane, no overflow even for x = -128), then one
// vpadalq_s16 into int32. Exact, so the result equals the scalar path's bit for bit.
#if defined(__aarch64__)

#include <arm_neon.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "kernels_internal.h"

namespace bitrl {
namespace detail {
namespace {

constexpr int kTokTile = 4;

template <int R, int T>
void tile_neon(const uint8_t* const* rows, const int8_t* x, size_t xs, int nblk, int32_t (*out)[kTokTile]) {
  const uint8x16_t mask = vdupq_n_u8(3);
  int32x4_t acc[R][T];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_s32(0);
  for (int b = 0; b < nblk; ++b) {
    uint8x16_t wv[R][2];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      wv[r][0] = vld1q_u8(rows[r] + 32 * b);
      wv[r][1] = vld1q_u8(rows[r] + 32 * b + 16);
    }
    const int8_t* xb = x + 128 * b;
    int16x8_t s16[R][T];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        int8x16_t wk[R];
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          uint8x16_t c;
          if (k == 0) c = vandq_u8(wv[r][h], mask);
          else if (k == 1) c = vandq_u8(vshrq_n_u8(wv[r][h], 2), mask);
          else if (k == 2) c = vandq_u8(vshrq_n_u8(wv[r][h], 4), mask);
          else c = vshrq_n_u8(wv[r][h], 6);
          wk[r] = vreinterpretq_s8_u8(c);
        }
#pragma GCC unroll 16
        for (int t = 0; t < T; ++t) {
          const int8x16_t xv = vld1q_s8(xb + t * xs + 32 * k + 16 * h);
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r) {
            if (k == 0 && h == 0) s16[r][t] = vmull_s8(vget_low_s8(wk[r]), vget_low_s8(xv));
            else s16[r][t] = vmlal_s8(s16[r][t], vget_low_s8(wk[r]), vget_low_s8(xv));
            s16[r][t] = vmlal_high_s8(s16[r][t], wk[r], xv);
          }
        }
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int t = 0; t < T; ++t) acc[r][t] = vpadalq_s16(acc[r][t], s16[r][t]);
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) out[r][t] = vaddvq_s32(acc[r][t]);
}

using TileFn = void (*)(const uint8_t* const*, const int8_t*, size_t, int, int32_t (*)[kTokTile]);

#ifndef BITRL_NEON_ROWS
#define BITRL_NEON_ROWS 4
#endif

}  // namespace

void gemm_i32_neon(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, int tokens, int32_t* acc,
                   int row_begin, int row_end) {
  constexpr int R = BITRL_NEON_ROWS;
  static const TileFn main[kTokTile] = {tile_neon<R, 1>, tile_neon<R, 2>, tile_neon<R, 3>, tile_neon<R, 4>};
  static const TileFn tail[kTokTile] = {tile_neon<1, 1>, tile_neon<1, 2>, tile_neon<1, 3>, tile_neon<1, 4>};
  const size_t row_bytes = static_cast<size_t>(w.in_padded) / 4;
  const size_t xs = static_cast<size_t>(w.in_padded);
  const int nblk = w.in_padded / kBlock;
  int32_t out[R][kTokTile];
  const uint8_t* rows[R];
  for (int r0 = row_begin; r0 < row_end;) {
    const bool full = row_end - r0 >= R;
    const int n = full ? R : 1;
    for (int i = 0; i < n; ++i) rows[i] = w.codes.data() + static_cast<size_t>(r0 + i) * row_bytes;
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

// quantize_activations, ARMv8.0 NEON. Bit for bit the scalar rule: vmaxnm/vminnm return the number when one
// operand is a NaN (std::max(acc, NaN) keeps acc; std::max(-128, NaN) gives -128), vcvtnq rounds half to even;
// the saturating narrows never saturate.
float amax_neon(const float* row, int in) {
  float32x4_t acc = vdupq_n_f32(0.0f);
  int i = 0;
  for (; i + 4 <= in; i += 4) acc = vmaxnmq_f32(acc, vabsq_f32(vld1q_f32(row + i)));
  float amax = vmaxnmvq_f32(acc);
  for (; i < in; ++i) amax = std::max(amax, std::fabs(row[i]));
  return amax;
}

int32_t quantize_row_neon(const float* row, int in, float s, int8_t* q) {
  const float32x4_t vs = vdupq_n_f32(s), lo = vdupq_n_f32(-128.0f), hi = vdupq_n_f32(127.0f);
  int32x4_t sum = vdupq_n_s32(0);
  int i = 0;
  for (; i + 8 <= in; i += 8) {
    const int32x4_t a = vcvtnq_s32_f32(vminnmq_f32(vmaxnmq_f32(vmulq_f32(vld1q_f32(row + i), vs), lo), hi));
    const int32x4_t b = vcvtnq_s32_f32(vminnmq_f32(vmaxnmq_f32(vmulq_f32(vld1q_f32(row + i + 4), vs), lo), hi));
    sum = vaddq_s32(sum, vaddq_s32(a, b));
    vst1_s8(q + i, vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b))));
  }
  return vaddvq_s32(sum) + quantize_row_scalar(row + i, in - i, s, q + i);
}

}  // namespace detail
}  // namespace bitrl

#endif  // __aarch64__
