// The BitNet b1.58 decoder (BitNetModel, model.h): loading, RoPE tables and the layer stack.
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "model.h"
#include "model_internal.h"
#include "ops.h"

namespace bitrl {

BitNetModel::BitNetModel(const BitNetConfig& cfg, int threads)
    : ModelBase(cfg.hidden_size, cfg.num_heads > 0 ? cfg.hidden_size / cfg.num_heads : 0), cfg_(cfg) {
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
    if (name == "embed_tokens") return embed_.set_f32(data, n, cfg_.vocab_size, H, name);
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

const std::vector<float>& BitNetModel::norm_tensor(const std::string& name, int layer) const {
  if (layer < 0) {
    if (name == "norm") return norm_;
    throw std::invalid_argument("unknown BitNet norm tensor '" + name + "'");
  }
  if (layer >= cfg_.num_layers) throw std::invalid_argument("layer index out of range");
  const Layer& L = layers_[layer];
  if (name == "input_layernorm") return L.input_norm;
  if (name == "post_attention_layernorm") return L.post_attn_norm;
  if (name == "attn_sub_norm") return L.attn_sub_norm;
  if (name == "ffn_sub_norm") return L.ffn_sub_norm;
  throw std::invalid_argument("unknown BitNet layer norm tensor '" + name + "'");
}

void BitNetModel::set_linear(const std::string& name, int layer, const int8_t* w, int out, int in, float scale,
                             const float* bias) {
  if (layer < 0 || layer >= cfg_.num_layers) throw std::invalid_argument("layer index out of range");
  const int H = cfg_.hidden_size, I = cfg_.intermediate_size, KV = cfg_.num_kv_heads * head_dim_;
  Layer& L = layers_[layer];
  QuantLinear* l = nullptr;
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

void BitNetModel::set_embedding_int8(const std::string& name, const int8_t* q, size_t n, const float* scales,
                                     size_t n_scales, size_t first_row) {
  if (name != "embed_tokens")
    throw std::invalid_argument("only the 'embed_tokens' table of a BitNet model can be int8, not '" + name + "'");
  embed_.set_int8(q, n, scales, n_scales, cfg_.vocab_size, cfg_.hidden_size, first_row, name);
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
            I = cfg_.intermediate_size, KV = nkv * hd, rep = nh / nkv;
  const float eps = cfg_.rms_norm_eps;
  float* x = x_.data();
  for (int t = 0; t < n; ++t) embed_.row(tok_ids_[t], x + static_cast<size_t>(t) * H);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int batch = batch_;
  int64_t attn_work = 0;
  for (int b = 0; b < batch; ++b) attn_work += static_cast<int64_t>(seq_len_[b]) * (seq_len_[b] + 1) / 2;
  attn_work *= 2 * H;

  for (const Layer& L : layers_) {
    rms_norm(x, h_.data(), n, H, L.input_norm.data(), eps);
    {
      const QuantLinear* lins[3] = {&L.q, &L.k, &L.v};
      float* ys[3] = {q_.data(), k_.data(), v_.data()};
      linears(h_.data(), n, lins, ys, 3);
    }
    rope_inplace(q_.data(), n, nh, H, hd, rope_cos_.data(), rope_sin_.data(), tok_pos_.data());
    rope_inplace(k_.data(), n, nkv, KV, hd, rope_cos_.data(), rope_sin_.data(), tok_pos_.data());
    parallel(attn_work, batch * nh, [&](int task, int t) {
      int b = task / nh, h = task % nh, kvh = h / rep;
      int s0 = seq_start_[b];
      size_t q_first = static_cast<size_t>(s0) * H + h * hd, kv_first = static_cast<size_t>(s0) * KV + kvh * hd;
      attend_head(q_.data() + q_first, k_.data() + kv_first, v_.data() + kv_first, H, KV, seq_len_[b], hd, scale,
                  true, attn_[t].data(), ctx_.data() + q_first);
    });
    rms_norm(ctx_.data(), ctx_.data(), n, H, L.attn_sub_norm.data(), eps);
    linear(ctx_.data(), n, L.o, h_.data());
    add_inplace(x, h_.data(), static_cast<size_t>(n) * H);
    rms_norm(x, h_.data(), n, H, L.post_attn_norm.data(), eps);
    {
      const QuantLinear* lins[2] = {&L.gate, &L.up};
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
