// The fp32 operations of the forward passes, everything but the ternary GEMMs (kernels.h): norms, activations,
// RoPE and attention. Row-major, `tokens` rows of `dim` values; no allocation, no threads (callers split work).
#pragma once

#include <cstddef>
#include <cstdint>

namespace bitrl {

// x = GELU(x), exact erf form.
void gelu_inplace(float* x, size_t n);
// g = relu(g)^2 * u (BitNet's gated squared ReLU).
void relu2_gate(float* g, const float* u, size_t n);
// x += y.
void add_inplace(float* x, const float* y, size_t n);

// x = LayerNorm(x + res) with weight w and bias b (res may be null).
void add_layer_norm(float* x, const float* res, int tokens, int dim, const float* w, const float* b, float eps);
// out = rms_norm(x) * w (out may alias x).
void rms_norm(const float* x, float* out, int tokens, int dim, const float* w, float eps);

// Rotate-half RoPE in place on `heads` heads of head_dim values per token, rows `stride` apart. cos / sin are
// tables [positions, head_dim / 2]; token t uses row pos[t].
void rope_inplace(float* base, int tokens, int heads, int stride, int head_dim, const float* cos, const float* sin,
                  const int32_t* pos);

// One head over one sequence of n tokens: ctx_i = softmax(q_i.k * scale) @ v over keys [0, n), or [0, i] when
// causal. Query and context rows are q_stride apart, key and value rows kv_stride apart. scratch holds
// attend_head_padded(n) * (head_dim + 1) floats: the keys transposed, so that a query's scores come out of
// vector sweeps over 8 keys at a time instead of a horizontal sum per key.
inline int attend_head_padded(int n) { return (n + 7) / 8 * 8; }
void attend_head(const float* q, const float* k, const float* v, int q_stride, int kv_stride, int n, int head_dim,
                 float scale, bool causal, float* scratch, float* ctx);

}  // namespace bitrl
