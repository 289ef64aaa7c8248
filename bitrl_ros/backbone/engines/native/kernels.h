// Ternary x int8 matrix kernels of the native engine: the interface the model code and the bindings use.
//
// Compiled with baseline flags (no -mavx2 / -march=native): the x86 paths carry target attributes and are picked
// at run time, so one build runs on every x86-64 CPU.
//
// Weights: a ternary matrix W [out, in] (values -1, 0, +1) with one float scale per tensor (absmean), stored as
// 2-bit codes (code = w + 1, so 0, 1, 2). Activations: per-token absmax int8 (x_q = round(x * 127 / max|x|)).
// Products accumulate in int32; one float rescale per output: y = acc * w_scale / x_scale (+ bias).
// Every SIMD path must return exactly the scalar path's int32 accumulators.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bitrl {

enum class Isa { Scalar = 0, AVX2 = 1, AVX512VNNI = 2, NEON = 3 };

const char* isa_name(Isa isa);
// Inverse of isa_name ("scalar", "avx2", "avx512vnni", "neon"); throws std::invalid_argument otherwise.
Isa parse_isa(const std::string& name);
// The best path this CPU runs (checked at run time, not only at compile time), detected once. The environment
// variable BITRL_NATIVE_ISA (an isa_name) overrides it (std::runtime_error if that ISA is not available).
Isa best_isa();
// Whether `isa` was compiled into this build and this CPU supports it.
bool isa_available(Isa isa);
// All available ISAs, Scalar first.
std::vector<Isa> available_isas();

// Activation quantization epsilon, as bitlinear.ACT_EPS.
constexpr float kActEps = 1e-5f;

// Number of weights one packed block covers; `in` is padded with zero weights up to a multiple of it.
constexpr int kBlock = 128;
inline int padded(int in) { return (in + kBlock - 1) / kBlock * kBlock; }

struct PackedTernary {
  int out = 0, in = 0, in_padded = 0;
  float scale = 1.0f;            // the per-tensor absmean scale
  std::vector<uint8_t> codes;    // out * in_padded / 4 bytes; layout private to kernels.cpp (documented there)
  size_t bytes() const { return codes.size(); }
};

// w: row-major int8 [out, in] with values in {-1, 0, 1}.
PackedTernary pack_ternary(const int8_t* w, int out, int in, float scale);
// Back to int8 [out, in] (for tests and for converting to other formats).
void unpack_ternary(const PackedTernary& p, int8_t* w);

// x: float [tokens, in] -> xq int8 [tokens, in_padded] (zero padded), x_scale[t] = 127 / max(max|x_t|, kActEps),
// xq = round_half_even(clamp(x * x_scale, -128, 127)) (bit-identical to bitlinear.quantize_activations),
// x_sum[t] = sum of xq over the row (some SIMD paths need it for the unsigned-code trick; x_sum may be null).
// isa: AVX2 (also for AVX-512 VNNI) and NEON have vector paths, identical to the scalar one bit for bit (same
// products, max, clamp and round-half-even conversion); throws std::invalid_argument if `isa` is not available.
void quantize_activations(const float* x, int tokens, int in, int in_padded, int8_t* xq, float* x_scale,
                          int32_t* x_sum, Isa isa);
inline void quantize_activations(const float* x, int tokens, int in, int in_padded, int8_t* xq, float* x_scale,
                                 int32_t* x_sum) {
  quantize_activations(x, tokens, in, in_padded, xq, x_scale, x_sum, best_isa());
}

// acc [tokens, out] = xq [tokens, in_padded] . W^T, exact int32, rows [row_begin, row_end) of W only
// (callers split rows across threads). x_sum may be null (it is then computed per call). Throws
// std::invalid_argument if `isa` is not available, std::out_of_range on a bad row range.
void ternary_gemm_i32(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, int tokens, int32_t* acc,
                      int row_begin, int row_end, Isa isa);

// y [tokens, out] = acc * w.scale / x_scale[t] + bias (bias may be null), rows [row_begin, row_end).
void ternary_gemm_f32(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, const float* x_scale,
                      const float* bias, int tokens, float* y, int32_t* acc_scratch, int row_begin, int row_end,
                      Isa isa);

// Int8 weights (the hybrid critic's INT8 backbone): W [out, in] as symmetric per-output-channel int8 (values in
// [-127, 127], one float scale per row: w ~= q * scale[r]), rows padded with zero weights to in_padded (the same
// padding as the ternary layout, so both read the same quantized activations). Products int8 x int8 accumulate
// exactly in int32 (every SIMD path equals the scalar one bit for bit): y = acc * scale[r] / x_scale + bias.
struct PackedInt8 {
  int out = 0, in = 0, in_padded = 0;
  std::vector<float> scale;   // [out]
  std::vector<int8_t> q;      // [out, in_padded], row-major
  std::vector<int32_t> row_sum;  // [out] sum of each row's q: derived (the AVX-512 VNNI path's unsigned trick)
  size_t bytes() const { return q.size() + scale.size() * sizeof(float); }
};

// q: row-major int8 [out, in] in [-127, 127]; scale: [out], positive and finite (std::invalid_argument otherwise).
PackedInt8 pack_int8(const int8_t* q, const float* scale, int out, int in);

// acc [tokens, out] = xq [tokens, in_padded] . W^T, exact int32, rows [row_begin, row_end) of W only.
// isa: AVX2, AVX-512 VNNI and NEON have vector paths; throws as ternary_gemm_i32 does.
void int8_gemm_i32(const PackedInt8& w, const int8_t* xq, int tokens, int32_t* acc, int row_begin, int row_end,
                   Isa isa);

// y [tokens, out] = acc * w.scale[r] / x_scale[t] + bias (bias may be null), rows [row_begin, row_end).
void int8_gemm_f32(const PackedInt8& w, const int8_t* xq, const float* x_scale, const float* bias, int tokens,
                   float* y, int32_t* acc_scratch, int row_begin, int row_end, Isa isa);

}  // namespace bitrl
