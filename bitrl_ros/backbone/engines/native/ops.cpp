// The fp32 operations of the forward passes (ops.h), written so the compiler vectorizes them at baseline ISA.
#include "ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace bitrl {

// Hot fp32 loops get an AVX2+FMA clone next to the baseline one, picked at load time (GCC/Clang ifunc); the
// extension itself is compiled for the baseline ISA.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define BITRL_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define BITRL_SIMD_CLONES
#endif

namespace {

// min(a, lim) for a, lim >= 0 through the bit patterns (ordered like integers for non-negative floats): an integer
// select, which the vectorizer takes where a float comparison would be kept as a branch (-ftrapping-math).
inline float min_nonneg(float a, float lim) {
  int32_t ab, lb;
  std::memcpy(&ab, &a, sizeof(ab));
  std::memcpy(&lb, &lim, sizeof(lb));
  ab = ab < lb ? ab : lb;
  std::memcpy(&a, &ab, sizeof(a));
  return a;
}

// exp(x) for x <= 0 (Cephes polynomial, ~1 ulp in float); inputs below -87 give exp(-87) ~ 1.6e-38.
inline float exp_nonpos(float x) {
  x = -min_nonneg(-x, 87.0f);
  float fx = x * 1.44269504088896341f - 0.5f;
  int n = static_cast<int>(fx);  // truncation toward zero == round for x <= 0 after the -0.5
  float fn = static_cast<float>(n);
  float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

// Sum with 8 independent partial sums (vectorizes without reassociation flags).
inline float sum8(const float* a, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i];
  return s;
}

inline float dot(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline float sq_dev_sum(const float* a, float mean, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      float d = a[i + l] - mean;
      acc[l] += d * d;
    }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += (a[i] - mean) * (a[i] - mean);
  return s;
}

}  // namespace

// GELU with the exact erf form, erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). Branch-free so it vectorizes.
BITRL_SIMD_CLONES
void gelu_inplace(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    float v = x[i];
    float a = min_nonneg(std::fabs(v) * 0.70710678118654752f, 10.0f);  // erf(10) == 1 in float
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float p = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
    float e = 1.0f - p * exp_nonpos(-a * a);  // erf(|v| / sqrt 2)
    // 0.5 v (1 + erf(v / sqrt 2)) = 0.5 (v + |v| erf(|v| / sqrt 2)), erf being odd
    x[i] = 0.5f * (v + std::fabs(v) * e);
  }
}

BITRL_SIMD_CLONES
void relu2_gate(float* g, const float* u, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    float r = std::max(g[i], 0.0f);
    g[i] = r * r * u[i];
  }
}

BITRL_SIMD_CLONES
void add_inplace(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

BITRL_SIMD_CLONES
void add_layer_norm(float* x, const float* res, int tokens, int dim, const float* w, const float* b, float eps) {
  for (int t = 0; t < tokens; ++t) {
    float* r = x + static_cast<size_t>(t) * dim;
    if (res) {
      const float* q = res + static_cast<size_t>(t) * dim;
      for (int i = 0; i < dim; ++i) r[i] += q[i];
    }
    float mean = sum8(r, dim) / dim;
    float var = sq_dev_sum(r, mean, dim) / dim;
    float inv = 1.0f / std::sqrt(var + eps);
    for (int i = 0; i < dim; ++i) r[i] = (r[i] - mean) * inv * w[i] + b[i];
  }
}

BITRL_SIMD_CLONES
void rms_norm(const float* x, float* out, int tokens, int dim, const float* w, float eps) {
  for (int t = 0; t < tokens; ++t) {
    const float* r = x + static_cast<size_t>(t) * dim;
    float* o = out + static_cast<size_t>(t) * dim;
    float inv = 1.0f / std::sqrt(dot(r, r, dim) / dim + eps);
    for (int i = 0; i < dim; ++i) o[i] = w[i] * (r[i] * inv);
  }
}

void rope_inplace(float* base, int tokens, int heads, int stride, int head_dim, const float* cos, const float* sin,
                  const int32_t* pos) {
  const int half = head_dim / 2;
  for (int t = 0; t < tokens; ++t) {
    const float* c = cos + static_cast<size_t>(pos[t]) * half;
    const float* s = sin + static_cast<size_t>(pos[t]) * half;
    for (int h = 0; h < heads; ++h) {
      float* r = base + static_cast<size_t>(t) * stride + h * head_dim;
      for (int i = 0; i < half; ++i) {
        float a = r[i], b = r[i + half];
        r[i] = a * c[i] - b * s[i];
        r[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

// Attention works on 8 floats at a time in GCC/Clang vector types (one AVX register, two SSE or NEON ones), kChains
// of them at once: independent accumulators, so the FMAs overlap instead of waiting on one another.
namespace {

constexpr int kLanes = 8;
constexpr int kChains = 4;
typedef float f32x8 __attribute__((vector_size(kLanes * sizeof(float))));
// Only inlined helpers take or return f32x8, so the AVX-vs-SSE calling convention GCC warns about never applies.
#pragma GCC diagnostic ignored "-Wpsabi"

inline f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, const f32x8& v) { std::memcpy(p, &v, sizeof(v)); }

// Blocks of keys [b0, b0 + B) of query qi: scores[j] = qi . k_j * scale, the keys read transposed from kt.
template <int B>
inline void score_blocks(const float* qi, const float* kt, int n_pad, int head_dim, float scale, int b0,
                         float* scores) {
  f32x8 a[B] = {};
  const float* kd = kt + b0 * kLanes;
  for (int d = 0; d < head_dim; ++d, kd += n_pad) {
    const float qd = qi[d];
    for (int b = 0; b < B; ++b) a[b] += qd * load8(kd + b * kLanes);
  }
  for (int b = 0; b < B; ++b) store8(scores + (b0 + b) * kLanes, a[b] * scale);
}

// Context dimensions [d0, d0 + 8 B) of one query: sum_j p_j v_j[d].
template <int B>
inline void context_blocks(const float* p, const float* v, int kv_stride, int n_keys, int d0, float* c) {
  f32x8 a[B] = {};
  const float* vr = v + d0;
  for (int j = 0; j < n_keys; ++j, vr += kv_stride) {
    const float pj = p[j];
    for (int b = 0; b < B; ++b) a[b] += pj * load8(vr + b * kLanes);
  }
  for (int b = 0; b < B; ++b) store8(c + d0 + b * kLanes, a[b]);
}

}  // namespace

BITRL_SIMD_CLONES
void attend_head(const float* q, const float* k, const float* v, int q_stride, int kv_stride, int n, int head_dim,
                 float scale, bool causal, float* scratch, float* ctx) {
  const int n_pad = attend_head_padded(n);
  float* kt = scratch;  // [head_dim][n_pad], zero past n
  float* scores = scratch + static_cast<size_t>(head_dim) * n_pad;
  for (int d = 0; d < head_dim; ++d)
    for (int j = n; j < n_pad; ++j) kt[static_cast<size_t>(d) * n_pad + j] = 0.0f;
  for (int j = 0; j < n; ++j) {
    const float* kr = k + static_cast<size_t>(j) * kv_stride;
    for (int d = 0; d < head_dim; ++d) kt[static_cast<size_t>(d) * n_pad + j] = kr[d];
  }
  for (int i = 0; i < n; ++i) {
    const float* qi = q + static_cast<size_t>(i) * q_stride;
    const int n_keys = causal ? i + 1 : n;
    const int key_blocks = (n_keys + kLanes - 1) / kLanes;  // keys past n_keys score too, and are then ignored
    int b0 = 0;
    for (; b0 + kChains <= key_blocks; b0 += kChains)
      score_blocks<kChains>(qi, kt, n_pad, head_dim, scale, b0, scores);
    for (; b0 < key_blocks; ++b0) score_blocks<1>(qi, kt, n_pad, head_dim, scale, b0, scores);
    float mx = -INFINITY;
    for (int j = 0; j < n_keys; ++j) mx = std::max(mx, scores[j]);
    float sum = 0.0f;
    for (int j = 0; j < n_keys; ++j) {
      float e = exp_nonpos(scores[j] - mx);
      scores[j] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < n_keys; ++j) scores[j] *= inv;
    float* c = ctx + static_cast<size_t>(i) * q_stride;
    int d0 = 0;
    for (; d0 + kChains * kLanes <= head_dim; d0 += kChains * kLanes)
      context_blocks<kChains>(scores, v, kv_stride, n_keys, d0, c);
    for (; d0 + kLanes <= head_dim; d0 += kLanes) context_blocks<1>(scores, v, kv_stride, n_keys, d0, c);
    for (int d = d0; d < head_dim; ++d) {
      float a = 0.0f;
      for (int j = 0; j < n_keys; ++j) a += scores[j] * v[static_cast<size_t>(j) * kv_stride + d];
      c[d] = a;
    }
  }
}

}  // namespace bitrl
