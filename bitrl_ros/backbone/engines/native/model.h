// Whole forward passes of the two backbone architectures on the ternary x int8 kernels (kernels.h).
//
// BertModel: BERT-style post-LN encoder (word + position + type embeddings, LayerNorm, MHA, GELU (erf) FFN).
// BitNetModel: BitNet b1.58 decoder (RMSNorm, RoPE rotate-half, GQA, causal attention, attn/ffn subln,
// gated squared ReLU, final RMSNorm).
//
// Every linear runs as quantize_activations -> ternary_gemm_f32 (per-token absmax int8 activations, one absmean
// scale per weight tensor, + bias for BERT); embeddings, norms, softmax, GELU, RoPE stay in fp32.
//
// Batches are given as token ids [batch, stride] plus one length per sequence (right padding). Internally the
// real tokens of all sequences are packed back to back (no padding work); attention only mixes tokens of the same
// sequence, which is exactly what a padding mask computes at the real tokens.
//
// Scratch memory is owned by the model and grows only when a call needs more tokens than any call before it, so
// repeated calls of the same or smaller size allocate nothing (see scratch_grows()).
//
// ModelBase is implemented in model.cpp, BertModel in model_bert.cpp, BitNetModel in model_bitnet.cpp; the fp32
// operations they share are in ops.h, the thread pool in threadpool.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels.h"
#include "threadpool.h"

namespace bitrl {

// A linear layer of the model: ternary weights (w), or per-channel int8 ones (w8, is_int8: the INT8 critic).
struct QuantLinear {
  PackedTernary w;
  PackedInt8 w8;
  bool is_int8 = false;
  std::vector<float> bias;  // empty: no bias
  bool set = false;
  int out() const { return is_int8 ? w8.out : w.out; }
  int in() const { return is_int8 ? w8.in : w.in; }
  int in_padded() const { return is_int8 ? w8.in_padded : w.in_padded; }
  size_t bytes() const { return is_int8 ? w8.bytes() : w.bytes(); }
};

// A token-embedding table [rows, width]: float32, or int8 with one float32 scale per row (a quarter of the
// memory; each looked-up row is dequantized as q * scale, exactly what the model file's loader computes).
struct EmbeddingTable {
  std::vector<float> f32;
  std::vector<int8_t> q;
  std::vector<float> row_scale;
  std::vector<uint8_t> row_set;  // int8 rows handed over so far (1 = set)
  size_t rows = 0, width = 0, rows_missing = 0;

  bool empty() const { return rows == 0 || (f32.empty() && rows_missing != 0); }
  void set_f32(const float* data, size_t n, size_t rows, size_t width, const std::string& name);
  // Rows [first_row, first_row + n_scales) as int8 with their scales; the table (rows x width) is allocated on
  // the first call, so a big vocabulary can be handed over in chunks without a second full copy.
  void set_int8(const int8_t* data, size_t n, const float* scales, size_t n_scales, size_t rows, size_t width,
                size_t first_row, const std::string& name);
  void row(int32_t id, float* out) const;  // width values
  size_t bytes() const { return f32.size() * sizeof(float) + q.size() + row_scale.size() * sizeof(float); }
};

enum class Pooling { None = 0, Mean = 1, Cls = 2, Last = 3 };
Pooling parse_pooling(const std::string& name);

// Everything shared by both architectures: threads, scratch, the linear-layer driver.
class ModelBase {
 public:
  virtual ~ModelBase() = default;

  int hidden_size() const { return hidden_; }
  int threads() const { return pool_ ? pool_->size() : 1; }
  void set_threads(int threads);
  // How long an idle pool thread spins before it sleeps (threadpool.h); 0: sleep at once.
  int spin_us() const { return spin_us_; }
  void set_spin_us(int us);
  Isa isa() const { return isa_; }
  void set_isa(Isa isa);

  // Bytes of scratch currently reserved, and how many times it grew (constant once warmed up).
  size_t scratch_bytes() const;
  uint64_t scratch_grows() const { return grows_; }
  size_t weight_bytes() const;  // packed ternary weights only
  virtual size_t embedding_bytes() const = 0;  // the token-embedding table as stored
  // Rows of work a GEMM must have per call before threads are used (tokens * out * in MACs).
  void set_parallel_threshold(int64_t macs) { parallel_threshold_ = macs; }

  // ids [batch, stride] (row-major), lengths [batch] (1 <= length <= stride), out: pooled [batch, hidden] or,
  // for Pooling::None, [batch, stride, hidden] with zeros at padding positions. Calls on one model serialize.
  void forward(const int32_t* ids, const int32_t* lengths, int batch, int stride, Pooling pooling, float* out);

  virtual void check_ready() const = 0;
  virtual int max_positions() const = 0;
  virtual int vocab_size() const = 0;

 protected:
  ModelBase(int hidden, int head_dim);
  // Runs the stack on the packed tokens: x [n_tokens, hidden] must be written with the final hidden states.
  virtual void run_stack(int n_tokens) = 0;
  virtual void ensure_model_scratch(int n_tokens) = 0;

  // y [tokens, out_l] = linear_l(x) for each of the `count` linears sharing the input x [tokens, in] (one
  // activation quantization, one parallel region splitting all output rows).
  void linears(const float* x, int tokens, const QuantLinear* const* lins, float* const* ys, int count);
  void linear(const float* x, int tokens, const QuantLinear& lin, float* y) {
    const QuantLinear* l[1] = {&lin};
    float* o[1] = {y};
    linears(x, tokens, l, o, 1);
  }
  // f(chunk, worker) for chunk in [0, n_chunks), on the pool when `work` (MACs or flops) is worth a wake-up.
  template <class F>
  void parallel(int64_t work, int n_chunks, F&& f) {
    if (pool_ && work >= parallel_threshold_) {
      pool_->run(n_chunks, f);
    } else {
      for (int c = 0; c < n_chunks; ++c) f(c, 0);
    }
  }
  int chunks_per_call() const { return pool_ ? 4 * pool_->size() : 1; }

  // Grows `v` to at least n elements, counting the growth.
  template <class T>
  void reserve_vec(std::vector<T>& v, size_t n) {
    if (v.size() < n) {
      v.assign(n, T());
      ++grows_;
    }
  }

  int hidden_;
  int head_dim_attn_;  // per-thread attention scratch: a head's keys transposed plus one row of scores
  int max_in_padded_ = 0;  // widest padded input of any linear
  int max_out_ = 0;        // widest output of any linear
  int capacity_tokens_ = 0;
  int max_seq_ = 0;
  int batch_ = 0;
  std::mutex call_mu_;  // one forward at a time per model (callers release the GIL)
  Isa isa_;
  std::unique_ptr<ThreadPool> pool_;
  int spin_us_ = ThreadPool::kDefaultSpinUs;
  // ~262k MACs (a 1-token GEMM stays on one thread; 8- and 30-token GEMMs and the 30-token attention split):
  // with the spinning pool a split costs about a microsecond, bench/README.md "A second thread".
  int64_t parallel_threshold_ = int64_t(1) << 18;
  uint64_t grows_ = 0;

  // Shared scratch.
  std::vector<int32_t> tok_ids_, seq_start_, seq_len_, tok_pos_;
  std::vector<int8_t> xq_;
  std::vector<float> x_scale_;
  std::vector<int32_t> x_sum_;
  std::vector<std::vector<int32_t>> acc_;    // one per thread: [tokens, max_out]
  std::vector<std::vector<float>> attn_;     // one per thread: [max_seq] scores
  std::vector<float> x_;                     // [tokens, hidden]: the residual stream / output
  virtual size_t model_scratch_bytes() const = 0;

  void note_linear(const QuantLinear& l);
  std::vector<const QuantLinear*> all_linears_;

 private:
  void ensure_scratch(int n_tokens, int max_seq);
};

struct BertConfig {
  int vocab_size = 30522, hidden_size = 384, num_layers = 6, num_heads = 12, intermediate_size = 1536;
  int max_position = 512, type_vocab_size = 2;
  float layer_norm_eps = 1e-12f;
};

class BertModel : public ModelBase {
 public:
  explicit BertModel(const BertConfig& cfg, int threads = 1);
  const BertConfig& config() const { return cfg_; }

  // Float tensors: "word" [vocab, H], "position" [max_pos, H], "token_type" [types, H], "emb_norm.weight",
  // "emb_norm.bias" [H]; per layer i: "attn_norm.weight/bias", "ffn_norm.weight/bias" [H].
  void set_tensor(const std::string& name, int layer, const float* data, size_t n);
  // A normalization tensor as set (one of set_tensor's norm names), e.g. to perturb and restore its gains.
  const std::vector<float>& norm_tensor(const std::string& name, int layer) const;
  // A linear layer with int8 weights q [out, in] in [-127, 127] and one scale per output row (the INT8 critic).
  void set_linear_int8(const std::string& name, int layer, const int8_t* q, int out, int in, const float* scale,
                       const float* bias);
  // "word" as int8 rows [vocab, H] with one scale per row [vocab].
  void set_embedding_int8(const std::string& name, const int8_t* q, size_t n, const float* scales, size_t n_scales,
                          size_t first_row = 0);
  size_t embedding_bytes() const override { return word_.bytes(); }
  // Linears per layer: "q", "k", "v", "o", "up", "down"; w int8 [out, in] in {-1,0,1}, bias [out] or null.
  void set_linear(const std::string& name, int layer, const int8_t* w, int out, int in, float scale,
                  const float* bias);
  void check_ready() const override;
  int max_positions() const override { return cfg_.max_position; }
  int vocab_size() const override { return cfg_.vocab_size; }

 protected:
  void run_stack(int n_tokens) override;
  void ensure_model_scratch(int n_tokens) override;
  size_t model_scratch_bytes() const override;

 private:
  struct Layer {
    QuantLinear q, k, v, o, up, down;
    std::vector<float> attn_norm_w, attn_norm_b, ffn_norm_w, ffn_norm_b;
  };
  // The linear `name` of `layer`, with its expected [out, in] shape.
  QuantLinear& linear_slot(const std::string& name, int layer, int& exp_out, int& exp_in);
  BertConfig cfg_;
  EmbeddingTable word_;
  std::vector<float> position_, token_type_, emb_norm_w_, emb_norm_b_;
  std::vector<Layer> layers_;
  std::vector<float> q_, k_, v_, ctx_, tmp_, ff_;
};

struct BitNetConfig {
  int vocab_size = 128256, hidden_size = 2560, intermediate_size = 6912, num_layers = 30, num_heads = 20,
      num_kv_heads = 5;
  float rms_norm_eps = 1e-5f;
  double rope_theta = 500000.0;
  int max_position = 4096;
};

class BitNetModel : public ModelBase {
 public:
  explicit BitNetModel(const BitNetConfig& cfg, int threads = 1);
  const BitNetConfig& config() const { return cfg_; }

  // "embed_tokens" [vocab, H], "norm" [H]; per layer: "input_layernorm", "post_attention_layernorm",
  // "attn_sub_norm" [H], "ffn_sub_norm" [I].
  void set_tensor(const std::string& name, int layer, const float* data, size_t n);
  // A normalization gain as set (one of set_tensor's norm names), e.g. to perturb and restore it.
  const std::vector<float>& norm_tensor(const std::string& name, int layer) const;
  // "embed_tokens" as int8 rows [vocab, H] with one scale per row [vocab].
  void set_embedding_int8(const std::string& name, const int8_t* q, size_t n, const float* scales, size_t n_scales,
                          size_t first_row = 0);
  size_t embedding_bytes() const override { return embed_.bytes(); }
  // Linears per layer: "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" (no bias).
  void set_linear(const std::string& name, int layer, const int8_t* w, int out, int in, float scale,
                  const float* bias);
  void check_ready() const override;
  int max_positions() const override { return cfg_.max_position; }
  int vocab_size() const override { return cfg_.vocab_size; }

 protected:
  void run_stack(int n_tokens) override;
  void ensure_model_scratch(int n_tokens) override;
  size_t model_scratch_bytes() const override;

 private:
  struct Layer {
    QuantLinear q, k, v, o, gate, up, down;
    std::vector<float> input_norm, post_attn_norm, attn_sub_norm, ffn_sub_norm;
  };
  BitNetConfig cfg_;
  int head_dim_;
  EmbeddingTable embed_;
  std::vector<float> norm_;
  std::vector<Layer> layers_;
  std::vector<float> rope_cos_, rope_sin_;  // [max_position, head_dim / 2]
  std::vector<float> h_, q_, k_, v_, ctx_, g_, u_;
};

}  // namespace bitrl
