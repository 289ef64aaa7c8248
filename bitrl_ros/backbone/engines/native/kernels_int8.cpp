// Int8 x int8 kernels (kernels.h, PackedInt8): scalar, AVX2 and ARMv8.0 NEON (no dot product: the Pi 4).
//
// AVX2: 32 weights and activations per step, each half sign-extended to int16 and multiplied pairwise into int32
// lanes with vpmaddwd (|w * x| <= 127 * 128, a pair sum fits int32 easily). NEON: vmull_s8 / vmull_high_s8 give
// int16 products (at most 127 * 128 = 16256, no overflow) and vpadalq_s16 adds each pair into int32 lanes at once,
// so no int16 sum ever accumulates. AVX-512 VNNI: vpdpbusd multiplies unsigned by signed bytes into int32 without
// saturation, so the activations go in as x + 128 (x xor 0x80) and 128 * sum(w) of the row comes off again. All
// are exact integer arithmetic, equal to the scalar loop bit for bit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define BITRL_AVX2_INT8 __attribute__((target("avx2,fma")))
#define BITRL_VNNI_INT8 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace bitrl {

PackedInt8 pack_int8(const int8_t* q, const float* scale, int out, int in) {
  if (out <= 0 || in <= 0) throw std::invalid_argument("pack_int8: empty matrix");
  PackedInt8 p;
  p.out = out;
  p.in = in;
  p.in_padded = padded(in);
  p.scale.assign(scale, scale + out);
  for (int r = 0; r < out; ++r)
    if (!(scale[r] > 0.0f) || !std::isfinite(scale[r]))
      throw std::invalid_argument("pack_int8: row " + std::to_string(r) + " has a non-positive or non-finite scale");
  p.q.assign(static_cast<size_t>(out) * p.in_padded, 0);
  p.row_sum.assign(out, 0);
  for (int r = 0; r < out; ++r)
    for (int i = 0; i < in; ++i) {
      int8_t v = q[static_cast<size_t>(r) * in + i];
      if (v == -128) throw std::invalid_argument("pack_int8: -128 is outside the symmetric range [-127, 127]");
      p.q[static_cast<size_t>(r) * p.in_padded + i] = v;
      p.row_sum[r] += v;
    }
  return p;
}

namespace {

void int8_scalar(const PackedInt8& w, const int8_t* xq, int tokens, int32_t* acc, int row_begin, int row_end) {
  for (int r = row_begin; r < row_end; ++r) {
    const int8_t* wr = w.q.data() + static_cast<size_t>(r) * w.in_padded;
    for (int t = 0; t < tokens; ++t) {
      const int8_t* x = xq + static_cast<size_t>(t) * w.in_padded;
      int32_t s = 0;
      for (int i = 0; i < w.in_padded; ++i) s += static_cast<int32_t>(wr[i]) * x[i];
      acc[static_cast<size_t>(t) * w.out + r] = s;
    }
  }
}

#if defined(__x86_64__)
BITRL_AVX2_INT8 inline __m256i madd32(__m256i sum, const int8_t* a, const int8_t* b) {
  const __m256i va = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
  const __m256i vb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
  const __m256i lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(va)),
                                       _mm256_cvtepi8_epi16(_mm256_castsi256_si128(vb)));
  const __m256i hi = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(va, 1)),
                                       _mm256_cvtepi8_epi16(_mm256_extracti128_si256(vb, 1)));
  return _mm256_add_epi32(sum, _mm256_add_epi32(lo, hi));
}

BITRL_AVX2_INT8 inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Two tokens per pass over a weight row: the row is loaded once for both.
BITRL_AVX2_INT8 void int8_avx2(const PackedInt8& w, const int8_t* xq, int tokens, int32_t* acc, int row_begin,
                               int row_end) {
  const size_t n = static_cast<size_t>(w.in_padded);
  for (int r = row_begin; r < row_end; ++r) {
    const int8_t* wr = w.q.data() + static_cast<size_t>(r) * n;
    int t = 0;
    for (; t + 1 < tokens; t += 2) {
      const int8_t* x0 = xq + static_cast<size_t>(t) * n;
      const int8_t* x1 = x0 + n;
      __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
      for (size_t i = 0; i < n; i += 32) {
        s0 = madd32(s0, wr + i, x0 + i);
        s1 = madd32(s1, wr + i, x1 + i);
      }
      acc[static_cast<size_t>(t) * w.out + r] = hsum(s0);
      acc[static_cast<size_t>(t + 1) * w.out + r] = hsum(s1);
    }
    for (; t < tokens; ++t) {
      const int8_t* x = xq + static_cast<size_t>(t) * n;
      __m256i s = _mm256_setzero_si256();
      for (size_t i = 0; i < n; i += 32) s = madd32(s, wr + i, x + i);
      acc[static_cast<size_t>(t) * w.out + r] = hsum(s);
    }
  }
}

// Four tokens per pass over a weight row (the row's 64-byte chunk loaded once for all four).
BITRL_VNNI_INT8 void int8_vnni(const PackedInt8& w, const int8_t* xq, int tokens, int32_t* acc, int row_begin,
                               int row_end) {
  const size_t n = static_cast<size_t>(w.in_padded);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int r = row_begin; r < row_end; ++r) {
    const int8_t* wr = w.q.data() + static_cast<size_t>(r) * n;
    const int32_t bias = 128 * w.row_sum[r];
    for (int t0 = 0; t0 < tokens; t0 += 4) {
      const int nt = std::min(4, tokens - t0);
      __m512i s[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                      _mm512_setzero_si512()};
      for (size_t i = 0; i < n; i += 64) {
        const __m512i vw = _mm512_loadu_si512(wr + i);
        for (int j = 0; j < nt; ++j) {
          const __m512i vx = _mm512_xor_si512(_mm512_loadu_si512(xq + static_cast<size_t>(t0 + j) * n + i), flip);
          s[j] = _mm512_dpbusd_epi32(s[j], vx, vw);
        }
      }
      for (int j = 0; j < nt; ++j)
        acc[static_cast<size_t>(t0 + j) * w.out + r] = _mm512_reduce_add_epi32(s[j]) - bias;
    }
  }
}
#endif

#if defined(__aarch64__)
void int8_neon(const PackedInt8& w, const int8_t* xq, int tokens, int32_t* acc, int row_begin, int row_end) {
  const size_t n = static_cast<size_t>(w.in_padded);
  for (int r = row_begin; r < row_end; ++r) {
    const int8_t* wr = w.q.data() + static_cast<size_t>(r) * n;
    for (int t = 0; t < tokens; ++t) {
      const int8_t* x = xq + static_cast<size_t>(t) * n;
      int32x4_t s = vdupq_n_s32(0);
      for (size_t i = 0; i < n; i += 16) {
        const int8x16_t vw = vld1q_s8(wr + i), vx = vld1q_s8(x + i);
        s = vpadalq_s16(s, vmull_s8(vget_low_s8(vw), vget_low_s8(vx)));
        s = vpadalq_s16(s, vmull_high_s8(vw, vx));
      }
      acc[static_cast<size_t>(t) * w.out + r] = vaddvq_s32(s);
    }
  }
}
#endif

}  // namespace

void int8_gemm_i32(const PackedInt8& w, const int8_t* xq, int tokens, int32_t* acc, int row_begin, int row_end,
                   Isa isa) {
  if (row_begin < 0 || row_end > w.out || row_begin > row_end) throw std::out_of_range("int8_gemm_i32: bad row range");
  if (tokens <= 0 || row_begin == row_end) return;
  if (!isa_available(isa)) throw std::invalid_argument(std::string("ISA not available: ") + isa_name(isa));
  switch (isa) {
#if defined(__x86_64__)
    case Isa::AVX2: return int8_avx2(w, xq, tokens, acc, row_begin, row_end);
    case Isa::AVX512VNNI: return int8_vnni(w, xq, tokens, acc, row_begin, row_end);
#endif
#if defined(__aarch64__)
    case Isa::NEON: return int8_neon(w, xq, tokens, acc, row_begin, row_end);
#endif
    default: return int8_scalar(w, xq, tokens, acc, row_begin, row_end);
  }
}

void int8_gemm_f32(const PackedInt8& w, const int8_t* xq, const float* x_scale, const float* bias, int tokens,
                   float* y, int32_t* acc_scratch, int row_begin, int row_end, Isa isa) {
  std::vector<int32_t> local;
  if (!acc_scratch) {
    local.resize(static_cast<size_t>(tokens) * w.out);
    acc_scratch = local.data();
  }
  int8_gemm_i32(w, xq, tokens, acc_scratch, row_begin, row_end, isa);
  for (int t = 0; t < tokens; ++t) {
    const float inv = 1.0f / x_scale[t];
    const int32_t* a = acc_scratch + static_cast<size_t>(t) * w.out;
    float* yt = y + static_cast<size_t>(t) * w.out;
    for (int r = row_begin; r < row_end; ++r)
      yt[r] = static_cast<float>(a[r]) * (w.scale[r] * inv) + (bias ? bias[r] : 0.0f);
  }
}

}  // namespace bitrl
