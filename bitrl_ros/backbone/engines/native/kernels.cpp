// Packing, activation quantization, ISA dispatch and the scalar reference of the native engine's ternary kernels.
//
// Packed layout (PackedTernary::codes), 2 bits per weight, no other overhead:
//   rows are stored one after another, each w.in_padded / 4 bytes long (in_padded = in rounded up to 128);
//   a row is a sequence of blocks of 128 weights, 32 bytes each; byte j (0..31) of block b holds the codes of
//   weights b*128 + j + 32*k in bits 2k..2k+1 for k = 0..3.
//   code = w + 1 (0, 1, 2); the padding weights are 0 (code 1) and the padded activations are 0.
// So one 32-byte load + (byte >> 2k) & 3 yields 32 consecutive codes, lined up with 32 consecutive activation
// bytes xq[b*128 + 32k .. +32): the same layout serves AVX2/VNNI (one ymm = one block) and NEON (two q registers).
// With unsigned codes, sum_i w_i x_i = sum_i c_i x_i - sum_i x_i: that is what x_sum is for.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels.h"
#include "kernels_internal.h"

namespace bitrl {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::AVX2: return "avx2";
    case Isa::AVX512VNNI: return "avx512vnni";
    case Isa::NEON: return "neon";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name) {
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512VNNI, Isa::NEON})
    if (name == isa_name(isa)) return isa;
  throw std::invalid_argument("unknown ISA '" + name + "' (expected scalar, avx2, avx512vnni or neon)");
}

static bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
#if defined(__x86_64__)
    case Isa::AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::AVX512VNNI:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
#if defined(__aarch64__)
    case Isa::NEON: return true;  // Advanced SIMD is mandatory in ARMv8-A
#endif
    default: return false;
  }
}

bool isa_available(Isa isa) {
  static const bool avail[4] = {cpu_supports(Isa::Scalar), cpu_supports(Isa::AVX2), cpu_supports(Isa::AVX512VNNI),
                                cpu_supports(Isa::NEON)};
  int i = static_cast<int>(isa);
  return i >= 0 && i < 4 && avail[i];
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512VNNI, Isa::NEON})
    if (isa_available(isa)) out.push_back(isa);
  return out;
}

static Isa detect_best() {
  if (const char* env = std::getenv("BITRL_NATIVE_ISA")) {
    if (*env) {
      Isa want = parse_isa(env);
      if (!isa_available(want))
        throw std::runtime_error(std::string("BITRL_NATIVE_ISA=") + env + " is not available on this CPU/build");
      return want;
    }
  }
  if (isa_available(Isa::AVX512VNNI)) return Isa::AVX512VNNI;
  if (isa_available(Isa::AVX2)) return Isa::AVX2;
  if (isa_available(Isa::NEON)) return Isa::NEON;
  return Isa::Scalar;
}

Isa best_isa() {
  static const Isa best = detect_best();
  return best;
}

PackedTernary pack_ternary(const int8_t* w, int out, int in, float scale) {
  if (out < 0 || in < 0) throw std::invalid_argument("pack_ternary: negative shape");
  PackedTernary p;
  p.out = out;
  p.in = in;
  p.in_padded = padded(in);
  p.scale = scale;
  const size_t row_bytes = static_cast<size_t>(p.in_padded) / 4;
  p.codes.assign(static_cast<size_t>(out) * row_bytes, 0x55);  // 0x55 = four codes of 1 = four zero weights
  for (int r = 0; r < out; ++r) {
    uint8_t* dst = p.codes.data() + static_cast<size_t>(r) * row_bytes;
    const int8_t* src = w + static_cast<size_t>(r) * in;
    for (int i = 0; i < in; ++i) {
      const int v = src[i];
      if (v < -1 || v > 1)
        throw std::invalid_argument("pack_ternary: weight " + std::to_string(v) + " at [" + std::to_string(r) + "," +
                                    std::to_string(i) + "] is not in {-1, 0, 1}");
      const int blk = i / kBlock, pos = i % kBlock, j = pos % 32, k = pos / 32;
      uint8_t& byte = dst[blk * 32 + j];
      byte = static_cast<uint8_t>((byte & ~(3u << (2 * k))) | (static_cast<unsigned>(v + 1) << (2 * k)));
    }
  }
  return p;
}

void unpack_ternary(const PackedTernary& p, int8_t* w) {
  const size_t row_bytes = static_cast<size_t>(p.in_padded) / 4;
  for (int r = 0; r < p.out; ++r) {
    const uint8_t* src = p.codes.data() + static_cast<size_t>(r) * row_bytes;
    for (int i = 0; i < p.in; ++i) {
      const int blk = i / kBlock, pos = i % kBlock, j = pos % 32, k = pos / 32;
      w[static_cast<size_t>(r) * p.in + i] = static_cast<int8_t>(((src[blk * 32 + j] >> (2 * k)) & 3) - 1);
    }
  }
}

namespace {

float amax_scalar(const float* row, int in) {
  float amax = 0.0f;
  for (int i = 0; i < in; ++i) amax = std::max(amax, std::fabs(row[i]));
  return amax;
}

}  // namespace

namespace detail {

// The element rule every path follows: clamp(x * s) to [-128, 127] (NaN -> -128, as std::max(-128, NaN) gives),
// then round half to even.
int32_t quantize_row_scalar(const float* row, int in, float s, int8_t* q) {
  int32_t sum = 0;
  for (int i = 0; i < in; ++i) {
    float v = row[i] * s;
    v = std::min(127.0f, std::max(-128.0f, v));
    const int qi = static_cast<int>(std::nearbyint(v));
    q[i] = static_cast<int8_t>(qi);
    sum += qi;
  }
  return sum;
}

}  // namespace detail

void quantize_activations(const float* x, int tokens, int in, int in_padded, int8_t* xq, float* x_scale,
                          int32_t* x_sum, Isa isa) {
  if (in_padded < in) throw std::invalid_argument("quantize_activations: in_padded < in");
  if (!isa_available(isa)) throw std::invalid_argument(std::string("ISA not available: ") + isa_name(isa));
  float (*amax_of)(const float*, int) = amax_scalar;
  int32_t (*quantize_row)(const float*, int, float, int8_t*) = detail::quantize_row_scalar;
#if defined(__x86_64__)
  if (isa == Isa::AVX2 || isa == Isa::AVX512VNNI) {
    amax_of = detail::amax_avx2;
    quantize_row = detail::quantize_row_avx2;
  }
#endif
#if defined(__aarch64__)
  if (isa == Isa::NEON) {
    amax_of = detail::amax_neon;
    quantize_row = detail::quantize_row_neon;
  }
#endif
  for (int t = 0; t < tokens; ++t) {
    const float* row = x + static_cast<size_t>(t) * in;
    int8_t* q = xq + static_cast<size_t>(t) * in_padded;
    // Exactly bitlinear.quantize_activations: 127.0 / clamp(amax, 1e-5) (which torch evaluates as
    // reciprocal(.) * 127 in float32: two roundings), clamp to [-128, 127], round half to even.
    const float recip = 1.0f / std::max(amax_of(row, in), kActEps);
    const float s = recip * 127.0f;
    const int32_t sum = quantize_row(row, in, s, q);
    std::memset(q + in, 0, static_cast<size_t>(in_padded - in));
    x_scale[t] = s;
    if (x_sum) x_sum[t] = sum;
  }
}

namespace detail {

void gemm_i32_scalar(const PackedTernary& w, const int8_t* xq, const int32_t* /*x_sum*/, int tokens, int32_t* acc,
                     int row_begin, int row_end) {
  const size_t row_bytes = static_cast<size_t>(w.in_padded) / 4;
  const int nblk = w.in_padded / kBlock;
  for (int r = row_begin; r < row_end; ++r) {
    const uint8_t* wr = w.codes.data() + static_cast<size_t>(r) * row_bytes;
    for (int t = 0; t < tokens; ++t) {
      const int8_t* x = xq + static_cast<size_t>(t) * w.in_padded;
      int32_t s = 0;
      for (int b = 0; b < nblk; ++b)
        for (int k = 0; k < 4; ++k)
          for (int j = 0; j < 32; ++j)
            s += (((wr[b * 32 + j] >> (2 * k)) & 3) - 1) * x[b * kBlock + 32 * k + j];
      acc[static_cast<size_t>(t) * w.out + r] = s;
    }
  }
}

}  // namespace detail

void ternary_gemm_i32(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, int tokens, int32_t* acc,
                      int row_begin, int row_end, Isa isa) {
  if (row_begin < 0 || row_end > w.out || row_begin > row_end)
    throw std::out_of_range("ternary_gemm_i32: bad row range");
  if (tokens <= 0 || row_begin == row_end) return;
  if (!isa_available(isa)) throw std::invalid_argument(std::string("ISA not available: ") + isa_name(isa));
  std::vector<int32_t> sums;
  if (!x_sum && isa != Isa::Scalar) {  // the unsigned-code paths need sum(x); compute it
    sums.resize(tokens);
    for (int t = 0; t < tokens; ++t) {
      int32_t s = 0;
      const int8_t* x = xq + static_cast<size_t>(t) * w.in_padded;
      for (int i = 0; i < w.in_padded; ++i) s += x[i];
      sums[t] = s;
    }
    x_sum = sums.data();
  }
  switch (isa) {
#if defined(__x86_64__)
    case Isa::AVX2: return detail::gemm_i32_avx2(w, xq, x_sum, tokens, acc, row_begin, row_end);
    case Isa::AVX512VNNI: return detail::gemm_i32_avx512vnni(w, xq, x_sum, tokens, acc, row_begin, row_end);
#endif
#if defined(__aarch64__)
    case Isa::NEON: return detail::gemm_i32_neon(w, xq, x_sum, tokens, acc, row_begin, row_end);
#endif
    default: return detail::gemm_i32_scalar(w, xq, x_sum, tokens, acc, row_begin, row_end);
  }
}

void ternary_gemm_f32(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, const float* x_scale,
                      const float* bias, int tokens, float* y, int32_t* acc_scratch, int row_begin, int row_end,
                      Isa isa) {
  std::vector<int32_t> local;
  if (!acc_scratch) {
    local.resize(static_cast<size_t>(tokens) * w.out);
    acc_scratch = local.data();
  }
  ternary_gemm_i32(w, xq, x_sum, tokens, acc_scratch, row_begin, row_end, isa);
  for (int t = 0; t < tokens; ++t) {
    const float f = w.scale / x_scale[t];
    const int32_t* a = acc_scratch + static_cast<size_t>(t) * w.out;
    float* yt = y + static_cast<size_t>(t) * w.out;
    if (bias) {
      for (int r = row_begin; r < row_end; ++r) yt[r] = static_cast<float>(a[r]) * f + bias[r];
    } else {
      for (int r = row_begin; r < row_end; ++r) yt[r] = static_cast<float>(a[r]) * f;
    }
  }
}

}  // namespace bitrl
