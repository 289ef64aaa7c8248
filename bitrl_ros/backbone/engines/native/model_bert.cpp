// The BERT-style post-LN encoder (BertModel, model.h): loading and the layer stack.
#include <cmath>
#include <stdexcept>
#include <string>

#include "model.h"
#include "model_internal.h"
#include "ops.h"

namespace bitrl {

BertModel::BertModel(const BertConfig& cfg, int threads)
    : ModelBase(cfg.hidden_size, cfg.num_heads > 0 ? cfg.hidden_size / cfg.num_heads : 0), cfg_(cfg) {
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
    if (name == "word") return word_.set_f32(data, n, cfg_.vocab_size, H, name);
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

const std::vector<float>& BertModel::norm_tensor(const std::string& name, int layer) const {
  if (layer < 0) {
    if (name == "emb_norm.weight") return emb_norm_w_;
    if (name == "emb_norm.bias") return emb_norm_b_;
    throw std::invalid_argument("unknown BERT norm tensor '" + name + "'");
  }
  if (layer >= cfg_.num_layers) throw std::invalid_argument("layer index out of range");
  const Layer& L = layers_[layer];
  if (name == "attn_norm.weight") return L.attn_norm_w;
  if (name == "attn_norm.bias") return L.attn_norm_b;
  if (name == "ffn_norm.weight") return L.ffn_norm_w;
  if (name == "ffn_norm.bias") return L.ffn_norm_b;
  throw std::invalid_argument("unknown BERT layer norm tensor '" + name + "'");
}

QuantLinear& BertModel::linear_slot(const std::string& name, int layer, int& eo, int& ei) {
  if (layer < 0 || layer >= cfg_.num_layers) throw std::invalid_argument("layer index out of range");
  const int H = cfg_.hidden_size, I = cfg_.intermediate_size;
  Layer& L = layers_[layer];
  eo = ei = H;
  if (name == "q") return L.q;
  if (name == "k") return L.k;
  if (name == "v") return L.v;
  if (name == "o") return L.o;
  if (name == "up") { eo = I; return L.up; }
  if (name == "down") { ei = I; return L.down; }
  throw std::invalid_argument("unknown BERT linear '" + name + "'");
}

void BertModel::set_linear(const std::string& name, int layer, const int8_t* w, int out, int in, float scale,
                           const float* bias) {
  int eo, ei;
  QuantLinear& l = linear_slot(name, layer, eo, ei);
  set_linear_impl(l, name, w, out, in, scale, bias, eo, ei, true);
  note_linear(l);
}

void BertModel::set_linear_int8(const std::string& name, int layer, const int8_t* q, int out, int in,
                                const float* scale, const float* bias) {
  int eo, ei;
  QuantLinear& l = linear_slot(name, layer, eo, ei);
  set_linear_int8_impl(l, name, q, out, in, scale, bias, eo, ei, true);
  note_linear(l);
}

void BertModel::set_embedding_int8(const std::string& name, const int8_t* q, size_t n, const float* scales,
                                   size_t n_scales, size_t first_row) {
  if (name != "word") throw std::invalid_argument("only the 'word' table of a BERT model can be int8, not '" + name + "'");
  word_.set_int8(q, n, scales, n_scales, cfg_.vocab_size, cfg_.hidden_size, first_row, name);
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
    const float* p = position_.data() + static_cast<size_t>(tok_pos_[t]) * H;
    const float* ty = token_type_.data();  // token type 0
    float* r = x + static_cast<size_t>(t) * H;
    word_.row(tok_ids_[t], r);
    for (int d = 0; d < H; ++d) r[d] = r[d] + p[d] + ty[d];
  }
  add_layer_norm(x, nullptr, n, H, emb_norm_w_.data(), emb_norm_b_.data(), eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int batch = batch_;
  int64_t attn_work = 0;
  for (int b = 0; b < batch; ++b) attn_work += static_cast<int64_t>(seq_len_[b]) * seq_len_[b];
  attn_work *= 2 * H;

  for (const Layer& L : layers_) {
    {
      const QuantLinear* lins[3] = {&L.q, &L.k, &L.v};
      float* ys[3] = {q_.data(), k_.data(), v_.data()};
      linears(x, n, lins, ys, 3);
    }
    parallel(attn_work, batch * nh, [&](int task, int t) {
      int b = task / nh, h = task % nh;
      size_t first = static_cast<size_t>(seq_start_[b]) * H + h * hd;
      attend_head(q_.data() + first, k_.data() + first, v_.data() + first, H, H, seq_len_[b], hd, scale, false,
                  attn_[t].data(), ctx_.data() + first);
    });
    linear(ctx_.data(), n, L.o, tmp_.data());
    add_layer_norm(x, tmp_.data(), n, H, L.attn_norm_w.data(), L.attn_norm_b.data(), eps);
    linear(x, n, L.up, ff_.data());
    gelu_inplace(ff_.data(), static_cast<size_t>(n) * I);
    linear(ff_.data(), n, L.down, tmp_.data());
    add_layer_norm(x, tmp_.data(), n, H, L.ffn_norm_w.data(), L.ffn_norm_b.data(), eps);
  }
}

}  // namespace bitrl
