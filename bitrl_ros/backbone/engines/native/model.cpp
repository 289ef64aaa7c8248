// What both architectures share (model.h): ModelBase (threads, scratch, the linear-layer driver, batching and
// pooling) and the loading helpers of model_internal.h. The stacks are in model_bert.cpp and model_bitnet.cpp.
#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "model_internal.h"
#include "ops.h"

namespace bitrl {

void copy_vec(std::vector<float>& dst, const float* data, size_t n, size_t expected, const std::string& name) {
  if (n != expected)
    throw std::invalid_argument("tensor '" + name + "' has " + std::to_string(n) + " values, expected " +
                                std::to_string(expected));
  dst.assign(data, data + n);
}

void EmbeddingTable::set_f32(const float* data, size_t n, size_t n_rows, size_t w, const std::string& name) {
  copy_vec(f32, data, n, n_rows * w, name);
  q.clear();
  row_scale.clear();
  row_set.clear();
  rows = n_rows;
  width = w;
  rows_missing = 0;
}

void EmbeddingTable::set_int8(const int8_t* data, size_t n, const float* scales, size_t n_scales, size_t n_rows,
                              size_t w, size_t first_row, const std::string& name) {
  if (n != n_scales * w || first_row + n_scales > n_rows)
    throw std::invalid_argument("int8 table '" + name + "': " + std::to_string(n) + " values and " +
                                std::to_string(n_scales) + " row scales from row " + std::to_string(first_row) +
                                " do not fit " + std::to_string(n_rows) + " rows of " + std::to_string(w));
  for (size_t r = 0; r < n_scales; ++r)
    if (!std::isfinite(scales[r])) throw std::invalid_argument("int8 table '" + name + "' has a non-finite scale");
  if (q.size() != n_rows * w) {  // first chunk (or a float table before): a fresh int8 table
    f32.clear();
    f32.shrink_to_fit();
    q.assign(n_rows * w, 0);
    row_scale.assign(n_rows, 0.0f);
    row_set.assign(n_rows, 0);
    rows = n_rows;
    width = w;
    rows_missing = n_rows;
  }
  std::memcpy(q.data() + first_row * w, data, n);
  std::memcpy(row_scale.data() + first_row, scales, sizeof(float) * n_scales);
  for (size_t r = first_row; r < first_row + n_scales; ++r) {
    rows_missing -= row_set[r] ? 0 : 1;
    row_set[r] = 1;
  }
}

void EmbeddingTable::row(int32_t id, float* out) const {
  const size_t off = static_cast<size_t>(id) * width;
  if (!f32.empty()) {
    std::memcpy(out, f32.data() + off, sizeof(float) * width);
    return;
  }
  const float s = row_scale[static_cast<size_t>(id)];
  const int8_t* src = q.data() + off;
  for (size_t d = 0; d < width; ++d) out[d] = static_cast<float>(src[d]) * s;
}

namespace {

// The checks and the bias every linear shares, whatever its weight format.
void check_linear(const std::string& name, int out, int in, const float* bias, int exp_out, int exp_in,
                  bool want_bias) {
  if (out != exp_out || in != exp_in)
    throw std::invalid_argument("linear '" + name + "' has shape [" + std::to_string(out) + ", " +
                                std::to_string(in) + "], expected [" + std::to_string(exp_out) + ", " +
                                std::to_string(exp_in) + "]");
  if (want_bias && !bias) throw std::invalid_argument("linear '" + name + "' needs a bias");
  if (!want_bias && bias) throw std::invalid_argument("linear '" + name + "' takes no bias");
}

void finish_linear(QuantLinear& l, const float* bias, int out) {
  if (bias)
    l.bias.assign(bias, bias + out);
  else
    l.bias.clear();
  l.set = true;
}

}  // namespace

void set_linear_impl(QuantLinear& l, const std::string& name, const int8_t* w, int out, int in, float scale,
                     const float* bias, int exp_out, int exp_in, bool want_bias) {
  check_linear(name, out, in, bias, exp_out, exp_in, want_bias);
  for (size_t i = 0, n = static_cast<size_t>(out) * in; i < n; ++i)
    if (w[i] < -1 || w[i] > 1) throw std::invalid_argument("linear '" + name + "' holds a non-ternary weight");
  if (!(scale > 0.0f) || !std::isfinite(scale))
    throw std::invalid_argument("linear '" + name + "' has a non-positive or non-finite scale");
  l.w = pack_ternary(w, out, in, scale);
  l.w8 = PackedInt8();
  l.is_int8 = false;
  finish_linear(l, bias, out);
}

void set_linear_int8_impl(QuantLinear& l, const std::string& name, const int8_t* q, int out, int in,
                          const float* scale, const float* bias, int exp_out, int exp_in, bool want_bias) {
  check_linear(name, out, in, bias, exp_out, exp_in, want_bias);
  l.w8 = pack_int8(q, scale, out, in);
  l.w = PackedTernary();
  l.is_int8 = true;
  finish_linear(l, bias, out);
}

Pooling parse_pooling(const std::string& name) {
  if (name == "none") return Pooling::None;
  if (name == "mean") return Pooling::Mean;
  if (name == "cls") return Pooling::Cls;
  if (name == "last") return Pooling::Last;
  throw std::invalid_argument("unknown pooling '" + name + "'; expected none, mean, cls or last");
}

// ---------------------------------------------------------------------------------------------------------------
// ModelBase

ModelBase::ModelBase(int hidden, int head_dim) : hidden_(hidden), head_dim_attn_(head_dim), isa_(best_isa()) {}

void ModelBase::set_spin_us(int us) {
  if (us < 0) throw std::invalid_argument("spin_us must be >= 0");
  std::lock_guard<std::mutex> lock(call_mu_);
  spin_us_ = us;
  if (pool_) pool_->set_spin_us(us);
}

void ModelBase::set_threads(int threads) {
  if (threads < 1) throw std::invalid_argument("threads must be >= 1");
  std::lock_guard<std::mutex> lock(call_mu_);
  if (threads == this->threads() && acc_.size() >= static_cast<size_t>(threads)) return;
  pool_.reset();
  if (threads > 1) pool_.reset(new ThreadPool(threads, spin_us_));
  acc_.resize(threads);
  attn_.resize(threads);
  capacity_tokens_ = 0;  // per-thread buffers are re-reserved on the next call
  max_seq_ = 0;
}

void ModelBase::set_isa(Isa isa) {
  if (!isa_available(isa)) throw std::invalid_argument(std::string("ISA ") + isa_name(isa) + " is not available");
  isa_ = isa;
}

void ModelBase::note_linear(const QuantLinear& l) {
  if (std::find(all_linears_.begin(), all_linears_.end(), &l) == all_linears_.end()) all_linears_.push_back(&l);
  max_in_padded_ = std::max(max_in_padded_, l.in_padded());
  max_out_ = std::max(max_out_, l.out());
}

size_t ModelBase::weight_bytes() const {
  size_t b = 0;
  for (const auto* l : all_linears_) b += l->bytes();
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
    const size_t attn_floats = static_cast<size_t>(attend_head_padded(max_seq)) * (head_dim_attn_ + 1);
    for (int t = 0; t < nt; ++t) reserve_vec(attn_[t], attn_floats);
    max_seq_ = max_seq;
  }
}

void ModelBase::linears(const float* x, int tokens, const QuantLinear* const* lins, float* const* ys, int count) {
  const int in = lins[0]->in(), in_padded = lins[0]->in_padded();
  quantize_activations(x, tokens, in, in_padded, xq_.data(), x_scale_.data(), x_sum_.data(), isa_);
  int total = 0;
  for (int l = 0; l < count; ++l) total += lins[l]->out();
  const int64_t work = static_cast<int64_t>(tokens) * total * in;
  // Chunks of whole 16-row groups over the concatenated output rows of all the linears.
  const int groups = (total + 15) / 16;
  const int n_chunks = std::min(groups, chunks_per_call());
  parallel(work, n_chunks, [&](int c, int t) {
    int begin = std::min(total, static_cast<int>(static_cast<int64_t>(groups) * c / n_chunks) * 16);
    int end = std::min(total, static_cast<int>(static_cast<int64_t>(groups) * (c + 1) / n_chunks) * 16);
    int offset = 0;
    for (int l = 0; l < count && begin < end; ++l) {
      const QuantLinear& lin = *lins[l];
      int lo = std::max(begin, offset) - offset, hi = std::min(end, offset + lin.out()) - offset;
      const float* bias = lin.bias.empty() ? nullptr : lin.bias.data();
      if (lo < hi && lin.is_int8)
        int8_gemm_f32(lin.w8, xq_.data(), x_scale_.data(), bias, tokens, ys[l], acc_[t].data(), lo, hi, isa_);
      else if (lo < hi)
        ternary_gemm_f32(lin.w, xq_.data(), x_sum_.data(), x_scale_.data(), bias, tokens, ys[l], acc_[t].data(),
                         lo, hi, isa_);
      offset += lin.out();
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

}  // namespace bitrl
