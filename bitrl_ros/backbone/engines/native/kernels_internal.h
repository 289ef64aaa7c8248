// Private to the kernel translation units (kernels.cpp, kernels_x86.cpp, kernels_neon.cpp): the per-ISA entry
// points that kernels.cpp dispatches to. Not part of the API; include kernels.h instead.
#pragma once

#include "kernels.h"

namespace bitrl {
namespace detail {

// Every path computes acc[t * w.out + r] for t in [0, tokens), r in [row_begin, row_end); xq rows are
// w.in_padded long. x_sum is never null here (kernels.cpp fills it in when the caller passed null).
void gemm_i32_scalar(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, int tokens, int32_t* acc,
                     int row_begin, int row_end);
int32_t quantize_row_scalar(const float* row, int in, float s, int8_t* q);
// One token row of quantize_activations' vector paths: q[0..in) and the returned x_sum, given the scale s.
#if defined(__x86_64__)
int32_t quantize_row_avx2(const float* row, int in, float s, int8_t* q);
#endif
#if defined(__aarch64__)
int32_t quantize_row_neon(const float* row, int in, float s, int8_t* q);
float amax_neon(const float* row, int in);
#endif
#if defined(__x86_64__)
float amax_avx2(const float* row, int in);
void gemm_i32_avx2(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, int tokens, int32_t* acc,
                   int row_begin, int row_end);
void gemm_i32_avx512vnni(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, int tokens, int32_t* acc,
                         int row_begin, int row_end);
#endif
#if defined(__aarch64__)
void gemm_i32_neon(const PackedTernary& w, const int8_t* xq, const int32_t* x_sum, int tokens, int32_t* acc,
                   int row_begin, int row_end);
#endif

}  // namespace detail
}  // namespace bitrl
