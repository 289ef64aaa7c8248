// Forward passes of the native engine (see model.h).
#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace bitrl {

// ---------------------------------------------------------------------------------------------------------------
// Thread pool

ThreadPool::ThreadPool(int threads) : n_(std::max(1, threads)) {
  for (int i = 1; i < n_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_start_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::take_chunks(uint64_t job, int worker) {
  for (;;) {
    int chunk;
    void (*fn)(void*, int, int);
    void* ctx;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (job != job_ || next_ >= total_) return;  // a newer job, or every chunk of this one is claimed
      chunk = next_++;
      fn = fn_;
      ctx = ctx_;
    }
    fn(ctx, chunk, worker);
    std::lock_guard<std::mutex> lock(mu_);
    if (++done_ == total_) cv_done_.notify_all();
  }
}

void ThreadPool::dispatch(void (*fn)(void*, int, int), void* ctx, int n_chunks) {
  uint64_t job;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = fn;
    ctx_ = ctx;
    total_ = n_chunks;
    next_ = 0;
    done_ = 0;
    job = ++job_;
  }
  cv_start_.notify_all();
  take_chunks(job, 0);  // the caller works too; a worker the OS has not scheduled yet is never waited for
  std::unique_lock<std::mutex> lock(mu_);
  cv_done_.wait(lock, [&] { return done_ == total_; });
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_start_.wait(lock, [&] { return stop_ || job_ != seen; });
      if (stop_) return;
      job = seen = job_;
    }
    take_chunks(job, index);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Elementwise helpers (fp32, written so the compiler vectorizes them at baseline ISA)

namespace {

// Hot fp32 loops get an AVX2+FMA clone next to the baseline one, picked at load time (GCC/Clang ifunc); the
// extension itself is compiled for the baseline ISA.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define BITRL_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define BITRL_SIMD_CLONES
#endif

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

// x = LayerNorm(x + res) (res may be null).
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

// out = rms_norm(x) * w (out may alias x).
BITRL_SIMD_CLONES
void rms_norm(const float* x, float* out, int tokens, int dim, const float* w, float eps) {
  for (int t = 0; t < tokens; ++t) {
    const float* r = x + static_cast<size_t>(t) * dim;
    float* o = out + static_cast<size_t>(t) * dim;
    float inv = 1.0f / std::sqrt(dot(r, r, dim) / dim + eps);
    for (int i = 0; i < dim; ++i) o[i] = w[i] * (r[i] * inv);
  }
}

BITRL_SIMD_CLONES
void add_inplace(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

// g = relu(g)^2 * u
BITRL_SIMD_CLONES
void relu2_gate(float* g, const float* u, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    float r = std::max(g[i], 0.0f);
    g[i] = r * r * u[i];
  }
}

// One query row against keys [0, n_keys) of one head: ctx = softmax(q.k * scale) @ v.
BITRL_SIMD_CLONES
void attend_row(const float* q, const float* k, const float* v, int kv_stride, int n_keys, int head_dim,
                float scale, float* scores, float* ctx) {
  float mx = -INFINITY;
  for (int j = 0; j < n_keys; ++j) {
    float s = dot(q, k + static_cast<size_t>(j) * kv_stride, head_dim) * scale;
    scores[j] = s;
    mx = std::max(mx, s);
  }
  float sum = 0.0f;
  for (int j = 0; j < n_keys; ++j) {
    float e = exp_nonpos(scores[j] - mx);
    scores[j] = e;
    sum += e;
  }
  float inv = 1.0f / sum;
  for (int d = 0; d < head_dim; ++d) ctx[d] = 0.0f;
  for (int j = 0; j < n_keys; ++j) {
    float p = scores[j] * inv;
    const float* vr = v + static_cast<size_t>(j) * kv_stride;
    for (int d = 0; d < head_dim; ++d) ctx[d] += p * vr[d];
  }
}

void copy_vec(std::vector<float>& dst, const float* data, size_t n, size_t expected, const std::string& name) {
  if (n != expected)
    throw std::invalid_argument("tensor '" + name + "' has " + std::to_string(n) + " values, expected " +
                                std::to_string(expected));
  dst.assign(data, data + n);
}

void set_linear_impl(TernaryLinear& l, const std::string& name, const int8_t* w, int out, int in, float scale,
                     const float* bias, int exp_out, int exp_in, bool want_bias) {
  if (out != exp_out || in != exp_in)
    throw std::invalid_argument("linear '" + name + "' has shape [" + std::to_string(out) + ", " +
                                std::to_string(in) + "], expected [" + std::to_string(exp_out) + ", " +
                                std::to_string(exp_in) + "]");
  for (size_t i = 0, n = static_cast<size_t>(out) * in; i < n; ++i)
    if (w[i] < -1 || w[i] > 1) throw std::invalid_argument("linear '" + name + "' holds a non-ternary weight");
  if (!(scale > 0.0f) || !std::isfinite(scale))
    throw std::invalid_argument("linear '" + name + "' has a non-positive or non-finite scale");
  if (want_bias && !bias) throw std::invalid_argument("linear '" + name + "' needs a bias");
  if (!want_bias && bias) throw std::invalid_argument("linear '" + name + "' takes no bias");
  l.w = pack_ternary(w, out, in, scale);
  if (bias)
    l.bias.assign(bias, bias + out);
  else
    l.bias.clear();
  l.set = true;
}

template <class T>
size_t vec_bytes(const std::vector<T>& v) {
  return v.size() * sizeof(T);
}

}  // namespace

Pooling parse_pooling(const std::string& name) {
  if (name == "none") return Pooling::None;
  if (name == "mean") return Pooling::Mean;
  if (name == "cls") return Pooling::Cls;
  if (name == "last") return Pooling::Last;
  throw std::invalid_argument("unknown pooling '" + name + "'; expected none, mean, cls or last");
}

// ---------------------------------------------------------------------------------------------------------------
// ModelBase

ModelBase::ModelBase(int hidden) : hidden_(hidden), isa_(best_isa()) {}

void ModelBase::set_threads(int threads) {
  if (threads < 1) throw std::invalid_argument("threads must be >= 1");
  std::lock_guard<std::mutex> lock(call_mu_);
  if (threads == this->threads() && acc_.size() >= static_cast<size_t>(threads)) return;
  pool_.reset();
  if (threads > 1) pool_.reset(new ThreadPool(threads));
  acc_.resize(threads);
  attn_.resize(threads);
  capacity_tokens_ = 0;  // per-thread buffers are re-reserved on the next call
  max_seq_ = 0;
}

void ModelBase::set_isa(Isa isa) {
  if (!isa_available(isa)) throw std::invalid_argument(std::string("ISA ") + isa_name(isa) + " is not available");
  isa_ = isa;
}

void ModelBase::note_linear(const TernaryLinear& l) {
  if (std::find(all_linears_.begin(), all_linears_.end(), &l) == all_linears_.end()) all_linears_.push_back(&l);
  max_in_padded_ = std::max(max_in_padded_, l.w.in_padded);
  max_out_ = std::max(max_out_, l.w.out);
}

size_t ModelBase::weight_bytes() const {
  size_t b = 0;
  for (const auto* l : all_linears_) b += l->w.bytes();
  return b;
}

size_t ModelBase::scratch_bytes() const {
  size_t b = vec_bytes(tok_ids_) + vec_bytes(seq_start_) + vec_bytes(seq_len_) + vec_bytes(tok_pos_) +
             vec_bytes(xq_) + vec_bytes(x_scale_) + vec_bytes(x_sum_) + vec_bytes(x_);
  for (const auto& a : acc_) b += vec_bytes(a);
  for (const auto& a : attn_) b += vec_bytes(a);
  return b + model_scratch_bytes();
}

void ModelBase::ensure_scratch(int n_tokens, int max_seq) {
  int nt = threads();
  if (static_cast<int>(acc_.size()) < nt) acc_.resize(nt);
  if (static_cast<int>(attn_.size()) < nt) attn_.resize(nt);
  if (n_tokens > capacity_tokens_) {
    size_t n = static_cast<size_t>(n_tokens);
    reserve_vec(tok_ids_, n);
    reserve_vec(tok_pos_, n);
    reserve_vec(xq_, n * max_in_padded_);
    reserve_vec(x_scale_, n);
    reserve_vec(x_sum_, n);
    reserve_vec(x_, n * hidden_);
    for (int t = 0; t < nt; ++t) reserve_vec(acc_[t], n * max_out_);
    ensure_model_scratch(n_tokens);
    capacity_tokens_ = n_tokens;
  }
  if (max_seq > max_seq_) {
    for (int t = 0; t < nt; ++t) reserve_vec(attn_[t], static_cast<size_t>(max_seq));
    max_seq_ = max_seq;
  }
}

void ModelBase::linears(const float* x, int tokens, const TernaryLinear* const* lins, float* const* ys, int count) {
  const int in = lins[0]->w.in, in_padded = lins[0]->w.in_padded;
  quantize_activations(x, tokens, in, in_padded, xq_.data(), x_scale_.data(), x_sum_.data());
  int total = 0;
  for (int l = 0; l < count; ++l) total += lins[l]->w.out;
  const int64_t work = static_cast<int64_t>(tokens) * total * in;
  // Chunks of whole 16-row groups over the concatenated output rows of all the linears.
  const int groups = (total + 15) / 16;
  const int n_chunks = std::min(groups, chunks_per_call());
  parallel(work, n_chunks, [&](int c, int t) {
    int begin = std::min(total, static_cast<int>(static_cast<int64_t>(groups) * c / n_chunks) * 16);
    int end = std::min(total, static_cast<int>(static_cast<int64_t>(groups) * (c + 1) / n_chunks) * 16);
    int offset = 0;
    for (int l = 0; l < count && begin < end; ++l) {
      const TernaryLinear& lin = *lins[l];
      int lo = std::max(begin, offset) - offset, hi = std::min(end, offset + lin.w.out) - offset;
      if (lo < hi)
        ternary_gemm_f32(lin.w, xq_.data(), x_sum_.data(), x_scale_.data(),
                         lin.bias.empty() ? nullptr : lin.bias.data(), tokens, ys[l], acc_[t].data(), lo, hi,
                         isa_);
      offset += lin.w.out;
    }
  });
}

void ModelBase::forward(const int32_t* ids, const int32_t* lengths, int batch, int stride, Pooling pooling,
                        float* out) {
  std::lock_guard<std::mutex> lock(call_mu_);
  check_ready();
  if (batch < 1) throw std::invalid_argument("empty batch");
  int n_tokens = 0, max_seq = 0;
  const int vocab = vocab_size(), max_pos = max_positions();
  for (int b = 0; b < batch; ++b) {
    int len = lengths[b];
    if (len < 1 || len > stride)
      throw std::invalid_argument("sequence " + std::to_string(b) + " has length " + std::to_string(len) +
                                  " (must be in [1, " + std::to_string(stride) + "])");
    if (len > max_pos)
      throw std::invalid_argument("sequence of " + std::to_string(len) + " tokens exceeds the model's " +
                                  std::to_string(max_pos) + " positions");
    for (int i = 0; i < len; ++i) {
      int id = ids[static_cast<size_t>(b) * stride + i];
      if (id < 0 || id >= vocab)
        throw std::invalid_argument("token id " + std::to_string(id) + " outside the vocabulary of " +
                                    std::to_string(vocab));
    }
    n_tokens += len;
    max_seq = std::max(max_seq, len);
  }
  if (static_cast<int>(seq_start_.size()) < batch) {
    reserve_vec(seq_start_, static_cast<size_t>(batch));
    reserve_vec(seq_len_, static_cast<size_t>(batch));
  }
  ensure_scratch(n_tokens, max_seq);
  int pos = 0;
  for (int b = 0; b < batch; ++b) {
    seq_start_[b] = pos;
    seq_len_[b] = lengths[b];
    for (int i = 0; i < lengths[b]; ++i, ++pos) {
      tok_ids_[pos] = ids[static_cast<size_t>(b) * stride + i];
      tok_pos_[pos] = i;
    }
  }
  batch_ = batch;
  run_stack(n_tokens);

  const int H = hidden_;
  for (int b = 0; b < batch; ++b) {
    const float* xs = x_.data() + static_cast<size_t>(seq_start_[b]) * H;
    const int len = seq_len_[b];
    if (pooling == Pooling::None) {
      float* o = out + static_cast<size_t>(b) * stride * H;
      std::memcpy(o, xs, sizeof(float) * len * H);
      std::memset(o + static_cast<size_t>(len) * H, 0, sizeof(float) * (stride - len) * H);
      continue;
    }
    float* o = out + static_cast<size_t>(b) * H;
    if (pooling == Pooling::Cls) {
      std::memcpy(o, xs, sizeof(float) * H);
    } else if (pooling == Pooling::Last) {
      std::memcpy(o, xs + static_cast<size_t>(len - 1) * H, sizeof(float) * H);
    } else {
      for (int d = 0; d < H; ++d) o[d] = 0.0f;
      for (int i = 0; i < len; ++i)
        for (int d = 0; d < H; ++d) o[d] += xs[static_cast<size_t>(i) * H + d];
      float inv = 1.0f / len;
      for (int d = 0; d < H; ++d) o[d] *= inv;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// BERT encoder

BertModel::BertModel(const BertConfig& cfg, int threads) : ModelBase(cfg.hidden_size), cfg_(cfg) {
  if (cfg.hidden_size <= 0 || cfg.num_heads <= 0 || cfg.hidden_size % cfg.num_heads)
    throw std::invalid_argument("hidden_size must be a positive multiple of num_heads");
  if (cfg.num_layers < 1 || cfg.intermediate_size < 1 || cfg.vocab_size < 1 || cfg.max_position < 1 ||
      cfg.type_vocab_size < 1)
    throw std::invalid_argument("invalid BERT config");
  layers_.resize(cfg.num_layers);
  set_threads(threads);
}

void BertModel::set_tensor(const std::string& name, int layer, const float* data, size_t n) {
  const size_t H = cfg_.hidden_size;
  if (layer < 0) {
    if (name == "word") return copy_vec(word_, data, n, H * cfg_.vocab_size, name);
    if (name == "position") return copy_vec(position_, data, n, H * cfg_.max_position, name);
    if (name == "token_type") return copy_vec(token_type_, data, n, H * cfg_.type_vocab_size, name);
    if (name == "emb_norm.weight") return copy_vec(emb_norm_w_, data, n, H, name);
    if (name == "emb_norm.bias") return copy_vec(emb_norm_b_, data, n, H, name);
    throw std::invalid_argument("unknown BERT tensor '" + name + "'");
  }
  if (layer >= cfg_.num_layers) throw std::invalid_argument("layer index out of range");
  Layer& L = layers_[layer];
  if (name == "attn_norm.weight") return copy_vec(L.attn_norm_w, data, n, H, name);
  if (name == "attn_norm.bias") return copy_vec(L.attn_norm_b, data, n, H, name);
  if (name == "ffn_norm.weight") return copy_vec(L.ffn_norm_w, data, n, H, name);
  if (name == "ffn_norm.bias") return copy_vec(L.ffn_norm_b, data, n, H, name);
  throw std::invalid_argument("unknown BERT layer tensor '" + name + "'");
}

void BertModel::set_linear(const std::string& name, int layer, const int8_t* w, int out, int in, float scale,
                           const float* bias) {
  if (layer < 0 || layer >= cfg_.num_layers) throw std::invalid_argument("layer index out of range");
  const int H = cfg_.hidden_size, I = cfg_.intermediate_size;
  Layer& L = layers_[layer];
  TernaryLinear* l = nullptr;
  int eo = H, ei = H;
  if (name == "q") l = &L.q;
  else if (name == "k") l = &L.k;
  else if (name == "v") l = &L.v;
  else if (name == "o") l = &L.o;
  else if (name == "up") { l = &L.up; eo = I; }
  else if (name == "down") { l = &L.down; ei = I; }
  else throw std::invalid_argument("unknown BERT linear '" + name + "'");
  set_linear_impl(*l, name, w, out, in, scale, bias, eo, ei, true);
  note_linear(*l);
}

void BertModel::check_ready() const {
  if (word_.empty() || position_.empty() || token_type_.empty() || emb_norm_w_.empty() || emb_norm_b_.empty())
    throw std::runtime_error("BERT model: embedding tensors not set");
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& L = layers_[i];
    if (!(L.q.set && L.k.set && L.v.set && L.o.set && L.up.set && L.down.set) || L.attn_norm_w.empty() ||
        L.attn_norm_b.empty() || L.ffn_norm_w.empty() || L.ffn_norm_b.empty())
      throw std::runtime_error("BERT model: layer " + std::to_string(i) + " is incomplete");
  }
}

void BertModel::ensure_model_scratch(int n_tokens) {
  size_t n = static_cast<size_t>(n_tokens);
  reserve_vec(q_, n * cfg_.hidden_size);
  reserve_vec(k_, n * cfg_.hidden_size);
  reserve_vec(v_, n * cfg_.hidden_size);
  reserve_vec(ctx_, n * cfg_.hidden_size);
  reserve_vec(tmp_, n * cfg_.hidden_size);
  reserve_vec(ff_, n * cfg_.intermediate_size);
}

size_t BertModel::model_scratch_bytes() const {
  return vec_bytes(q_) + vec_bytes(k_) + vec_bytes(v_) + vec_bytes(ctx_) + vec_bytes(tmp_) + vec_bytes(ff_);
}

void BertModel::run_stack(int n) {
  const int H = cfg_.hidden_size, nh = cfg_.num_heads, hd = H / nh, I = cfg_.intermediate_size;
  const float eps = cfg_.layer_norm_eps;
  float* x = x_.data();
  for (int t = 0; t < n; ++t) {
    const float* w = word_.data() + static_cast<size_t>(tok_ids_[t]) * H;
    const float* p = position_.data() + static_cast<size_t>(tok_pos_[t]) * H;
    const float* ty = token_type_.data();  // token type 0
    float* r = x + static_cast<size_t>(t) * H;
    for (int d = 0; d < H; ++d) r[d] = w[d] + p[d] + ty[d];
  }
  add_layer_norm(x, nullptr, n, H, emb_norm_w_.data(), emb_norm_b_.data(), eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int batch = batch_;
  int64_t attn_work = 0;
  for (int b = 0; b < batch; ++b) attn_work += static_cast<int64_t>(seq_len_[b]) * seq_len_[b];
  attn_work *= 2 * H;

  for (const Layer& L : layers_) {
    {
      const TernaryLinear* lins[3] = {&L.q, &L.k, &L.v};
      float* ys[3] = {q_.data(), k_.data(), v_.data()};
      linears(x, n, lins, ys, 3);
    }
    parallel(attn_work, batch * nh, [&](int task, int t) {
      float* scores = attn_[t].data();
      {
        int b = task / nh, h = task % nh;
        int s0 = seq_start_[b], len = seq_len_[b];
        const float* kb = k_.data() + static_cast<size_t>(s0) * H + h * hd;
        const float* vb = v_.data() + static_cast<size_t>(s0) * H + h * hd;
        for (int i = 0; i < len; ++i) {
          size_t row = static_cast<size_t>(s0 + i) * H + h * hd;
          attend_row(q_.data() + row, kb, vb, H, len, hd, scale, scores, ctx_.data() + row);
        }
      }
    });
    linear(ctx_.data(), n, L.o, tmp_.data());
    add_layer_norm(x, tmp_.data(), n, H, L.attn_norm_w.data(), L.attn_norm_b.data(), eps);
    linear(x, n, L.up, ff_.data());
    gelu_inplace(ff_.data(), static_cast<size_t>(n) * I);
    linear(ff_.data(), n, L.down, tmp_.data());
    add_layer_norm(x, tmp_.data(), n, H, L.ffn_norm_w.data(), L.ffn_norm_b.data(), eps);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// BitNet decoder

BitNetModel::BitNetModel(const BitNetConfig& cfg, int threads) : ModelBase(cfg.hidden_size), cfg_(cfg) {
  if (cfg.hidden_size <= 0 || cfg.num_heads <= 0 || cfg.hidden_size % cfg.num_heads)
    throw std::invalid_argument("hidden_size must be a positive multiple of num_heads");
  if (cfg.num_kv_heads <= 0 || cfg.num_heads % cfg.num_kv_heads)
    throw std::invalid_argument("num_heads must be a multiple of num_kv_heads");
  head_dim_ = cfg.hidden_size / cfg.num_heads;
  if (head_dim_ % 2) throw std::invalid_argument("head dimension must be even for RoPE");
  if (cfg.num_layers < 1 || cfg.intermediate_size < 1 || cfg.vocab_size < 1 || cfg.max_position < 1)
    throw std::invalid_argument("invalid BitNet config");
  layers_.resize(cfg.num_layers);
  // RoPE tables, computed as the torch reference does (float32 inverse frequencies and angles).
  const int half = head_dim_ / 2;
  rope_cos_.resize(static_cast<size_t>(cfg.max_position) * half);
  rope_sin_.resize(rope_cos_.size());
  for (int i = 0; i < half; ++i) {
    float inv = 1.0f / std::pow(static_cast<float>(cfg.rope_theta), static_cast<float>(2 * i) / head_dim_);
    for (int p = 0; p < cfg.max_position; ++p) {
      float a = static_cast<float>(p) * inv;
      rope_cos_[static_cast<size_t>(p) * half + i] = std::cos(a);
      rope_sin_[static_cast<size_t>(p) * half + i] = std::sin(a);
    }
  }
  set_threads(threads);
}

void BitNetModel::set_tensor(const std::string& name, int layer, const float* data, size_t n) {
  const size_t H = cfg_.hidden_size;
  if (layer < 0) {
    if (name == "embed_tokens") return copy_vec(embed_, data, n, H * cfg_.vocab_size, name);
    if (name == "norm") return copy_vec(norm_, data, n, H, name);
    throw std::invalid_argument("unknown BitNet tensor '" + name + "'");
  }
  if (layer >= cfg_.num_layers) throw std::invalid_argument("layer index out of range");
  Layer& L = layers_[layer];
  if (name == "input_layernorm") return copy_vec(L.input_norm, data, n, H, name);
  if (name == "post_attention_layernorm") return copy_vec(L.post_attn_norm, data, n, H, name);
  if (name == "attn_sub_norm") return copy_vec(L.attn_sub_norm, data, n, H, name);
  if (name == "ffn_sub_norm") return copy_vec(L.ffn_sub_norm, data, n, cfg_.intermediate_size, name);
  throw std::invalid_argument("unknown BitNet layer tensor '" + name + "'");
}

void BitNetModel::set_linear(const std::string& name, int layer, const int8_t* w, int out, int in, float scale,
                             const float* bias) {
  if (layer < 0 || layer >= cfg_.num_layers) throw std::invalid_argument("layer index out of range");
  const int H = cfg_.hidden_size, I = cfg_.intermediate_size, KV = cfg_.num_kv_heads * head_dim_;
  Layer& L = layers_[layer];
  TernaryLinear* l = nullptr;
  int eo = H, ei = H;
  if (name == "q_proj") l = &L.q;
  else if (name == "k_proj") { l = &L.k; eo = KV; }
  else if (name == "v_proj") { l = &L.v; eo = KV; }
  else if (name == "o_proj") l = &L.o;
  else if (name == "gate_proj") { l = &L.gate; eo = I; }
  else if (name == "up_proj") { l = &L.up; eo = I; }
  else if (name == "down_proj") { l = &L.down; ei = I; }
  else throw std::invalid_argument("unknown BitNet linear '" + name + "'");
  set_linear_impl(*l, name, w, out, in, scale, bias, eo, ei, false);
  note_linear(*l);
}

void BitNetModel::check_ready() const {
  if (embed_.empty() || norm_.empty()) throw std::runtime_error("BitNet model: embedding or final norm not set");
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& L = layers_[i];
    if (!(L.q.set && L.k.set && L.v.set && L.o.set && L.gate.set && L.up.set && L.down.set) ||
        L.input_norm.empty() || L.post_attn_norm.empty() || L.attn_sub_norm.empty() || L.ffn_sub_norm.empty())
      throw std::runtime_error("BitNet model: layer " + std::to_string(i) + " is incomplete");
  }
}

void BitNetModel::ensure_model_scratch(int n_tokens) {
  size_t n = static_cast<size_t>(n_tokens);
  const size_t H = cfg_.hidden_size, KV = static_cast<size_t>(cfg_.num_kv_heads) * head_dim_,
               I = cfg_.intermediate_size;
  reserve_vec(h_, n * H);
  reserve_vec(q_, n * H);
  reserve_vec(k_, n * KV);
  reserve_vec(v_, n * KV);
  reserve_vec(ctx_, n * H);
  reserve_vec(g_, n * I);
  reserve_vec(u_, n * I);
}

size_t BitNetModel::model_scratch_bytes() const {
  return vec_bytes(h_) + vec_bytes(q_) + vec_bytes(k_) + vec_bytes(v_) + vec_bytes(ctx_) + vec_bytes(g_) +
         vec_bytes(u_);
}

void BitNetModel::run_stack(int n) {
  const int H = cfg_.hidden_size, nh = cfg_.num_heads, nkv = cfg_.num_kv_heads, hd = head_dim_,
            I = cfg_.intermediate_size, half = hd / 2, KV = nkv * hd, rep = nh / nkv;
  const float eps = cfg_.rms_norm_eps;
  float* x = x_.data();
  for (int t = 0; t < n; ++t)
    std::memcpy(x + static_cast<size_t>(t) * H, embed_.data() + static_cast<size_t>(tok_ids_[t]) * H,
                sizeof(float) * H);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int batch = batch_;
  int64_t attn_work = 0;
  for (int b = 0; b < batch; ++b) attn_work += static_cast<int64_t>(seq_len_[b]) * (seq_len_[b] + 1) / 2;
  attn_work *= 2 * H;

  auto rope = [&](float* base, int heads, int stride) {
    for (int t = 0; t < n; ++t) {
      const float* c = rope_cos_.data() + static_cast<size_t>(tok_pos_[t]) * half;
      const float* s = rope_sin_.data() + static_cast<size_t>(tok_pos_[t]) * half;
      for (int h = 0; h < heads; ++h) {
        float* r = base + static_cast<size_t>(t) * stride + h * hd;
        for (int i = 0; i < half; ++i) {
          float a = r[i], b = r[i + half];
          r[i] = a * c[i] - b * s[i];
          r[i + half] = b * c[i] + a * s[i];
        }
      }
    }
  };

  for (const Layer& L : layers_) {
    rms_norm(x, h_.data(), n, H, L.input_norm.data(), eps);
    {
      const TernaryLinear* lins[3] = {&L.q, &L.k, &L.v};
      float* ys[3] = {q_.data(), k_.data(), v_.data()};
      linears(h_.data(), n, lins, ys, 3);
    }
    rope(q_.data(), nh, H);
    rope(k_.data(), nkv, KV);
    parallel(attn_work, batch * nh, [&](int task, int t) {
      float* scores = attn_[t].data();
      {
        int b = task / nh, h = task % nh, kvh = h / rep;
        int s0 = seq_start_[b], len = seq_len_[b];
        const float* kb = k_.data() + static_cast<size_t>(s0) * KV + kvh * hd;
        const float* vb = v_.data() + static_cast<size_t>(s0) * KV + kvh * hd;
        for (int i = 0; i < len; ++i) {
          size_t row = static_cast<size_t>(s0 + i) * H + h * hd;
          attend_row(q_.data() + row, kb, vb, KV, i + 1, hd, scale, scores, ctx_.data() + row);
        }
      }
    });
    rms_norm(ctx_.data(), ctx_.data(), n, H, L.attn_sub_norm.data(), eps);
    linear(ctx_.data(), n, L.o, h_.data());
    add_inplace(x, h_.data(), static_cast<size_t>(n) * H);
    rms_norm(x, h_.data(), n, H, L.post_attn_norm.data(), eps);
    {
      const TernaryLinear* lins[2] = {&L.gate, &L.up};
      float* ys[2] = {g_.data(), u_.data()};
      linears(h_.data(), n, lins, ys, 2);
    }
    relu2_gate(g_.data(), u_.data(), static_cast<size_t>(n) * I);
    rms_norm(g_.data(), g_.data(), n, I, L.ffn_sub_norm.data(), eps);
    linear(g_.data(), n, L.down, h_.data());
    add_inplace(x, h_.data(), static_cast<size_t>(n) * H);
  }
  rms_norm(x, x, n, H, norm_.data(), eps);
}

}  // namespace bitrl
