// The `_native` extension module: the kernels (bindings_kernels.cpp) and the two model classes (model.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "model.h"

namespace py = pybind11;

void register_kernels(py::module_& m);  // bindings_kernels.cpp

namespace {

using namespace bitrl;

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I8 = py::array_t<int8_t, py::array::c_style | py::array::forcecast>;
using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

template <class M>
void set_tensor(M& m, const std::string& name, int layer, F32 data) {
  m.set_tensor(name, layer, data.data(), static_cast<size_t>(data.size()));
}

template <class M>
void set_embedding_int8(M& m, const std::string& name, I8 q, F32 scales, size_t first_row) {
  if (q.ndim() != 2 || scales.ndim() != 1 || q.shape(0) != scales.shape(0))
    throw std::invalid_argument("an int8 table chunk must be 2-D [rows, H] with 1-D scales [rows]");
  m.set_embedding_int8(name, q.data(), static_cast<size_t>(q.size()), scales.data(),
                       static_cast<size_t>(scales.size()), first_row);
}

template <class M>
void set_linear(M& m, const std::string& name, int layer, I8 w, float scale, py::object bias) {
  if (w.ndim() != 2) throw std::invalid_argument("linear weight must be 2-D [out, in]");
  const int out = static_cast<int>(w.shape(0)), in = static_cast<int>(w.shape(1));
  if (bias.is_none()) {
    m.set_linear(name, layer, w.data(), out, in, scale, nullptr);
  } else {
    F32 b = bias.cast<F32>();
    if (b.ndim() != 1 || b.shape(0) != out) throw std::invalid_argument("bias must be 1-D [out]");
    m.set_linear(name, layer, w.data(), out, in, scale, b.data());
  }
}

// ids int32 [batch, stride] (or [stride]), lengths int32 [batch] (default: full rows) -> float32 features.
py::array_t<float> forward(ModelBase& m, I32 ids, py::object lengths_obj, const std::string& pooling_name) {
  const Pooling pooling = parse_pooling(pooling_name);
  bool single = ids.ndim() == 1;
  if (ids.ndim() != 1 && ids.ndim() != 2) throw std::invalid_argument("ids must be 1-D or 2-D");
  const int batch = single ? 1 : static_cast<int>(ids.shape(0));
  const int stride = static_cast<int>(single ? ids.shape(0) : ids.shape(1));
  if (batch < 1 || stride < 1) throw std::invalid_argument("empty input");
  I32 lengths;
  if (lengths_obj.is_none()) {
    lengths = I32(batch);
    auto l = lengths.mutable_unchecked<1>();
    for (int b = 0; b < batch; ++b) l(b) = stride;
  } else {
    lengths = lengths_obj.cast<I32>();
    if (lengths.ndim() != 1 || lengths.shape(0) != batch)
      throw std::invalid_argument("lengths must be 1-D with one entry per sequence");
  }
  const int H = m.hidden_size();
  py::array_t<float> out;
  if (pooling == Pooling::None)
    out = single ? py::array_t<float>({stride, H}) : py::array_t<float>({batch, stride, H});
  else
    out = single ? py::array_t<float>({H}) : py::array_t<float>({batch, H});
  const int32_t* ids_p = ids.data();
  const int32_t* len_p = lengths.data();
  float* out_p = out.mutable_data();
  {
    py::gil_scoped_release release;
    m.forward(ids_p, len_p, batch, stride, pooling, out_p);
  }
  return out;
}

template <class M, class Cls>
void common(Cls& c) {
  c.def_property_readonly("hidden_size", &M::hidden_size)
      .def_property("threads", &M::threads, &M::set_threads, "worker threads (1 = no pool)")
      .def_property("spin_us", &M::spin_us, &M::set_spin_us,
                    "microseconds an idle pool thread spins before it sleeps (0: at once)")
      .def_property(
          "isa", [](const M& m) { return std::string(isa_name(m.isa())); },
          [](M& m, const std::string& name) {
            for (Isa i : {Isa::Scalar, Isa::AVX2, Isa::AVX512VNNI, Isa::NEON})
              if (name == isa_name(i)) return m.set_isa(i);
            throw std::invalid_argument("unknown ISA '" + name + "'");
          },
          "kernel path used by the GEMMs")
      .def("scratch_bytes", &M::scratch_bytes, "bytes of scratch reserved (constant once warmed up)")
      .def("scratch_grows", &M::scratch_grows, "how many times a scratch buffer was (re)allocated")
      .def("weight_bytes", &M::weight_bytes, "bytes of packed ternary weights")
      .def("embedding_bytes", &M::embedding_bytes, "bytes of the token-embedding table as stored")
      .def("set_parallel_threshold", &M::set_parallel_threshold, py::arg("macs"))
      .def("check_ready", &M::check_ready)
      .def_property_readonly("max_positions", &M::max_positions)
      .def_property_readonly("vocab_size", &M::vocab_size)
      .def("forward", [](M& m, I32 ids, py::object lengths, const std::string& pooling) {
        return forward(m, ids, lengths, pooling);
      }, py::arg("ids"), py::arg("lengths") = py::none(), py::arg("pooling") = "mean",
         "ids int32 [B, T] (right padded) + lengths [B] -> pooled [B, H] (mean/cls/last) or [B, T, H] (none)")
      .def("set_tensor", &set_tensor<M>, py::arg("name"), py::arg("layer"), py::arg("data"))
      .def("norm_tensor", [](const M& m, const std::string& name, int layer) {
        const std::vector<float>& v = m.norm_tensor(name, layer);
        py::array_t<float> out(static_cast<py::ssize_t>(v.size()));
        std::copy(v.begin(), v.end(), out.mutable_data());
        return out;
      }, py::arg("name"), py::arg("layer"), "a copy of a normalization tensor (one of set_tensor's norm names)")
      .def("set_embedding_int8", &set_embedding_int8<M>, py::arg("name"), py::arg("q"), py::arg("scales"),
           py::arg("first_row") = 0,
           "token-embedding rows as int8 [rows, H] with one float32 scale per row, from first_row on (the whole "
           "table at once, or in chunks)")
      .def("set_linear", &set_linear<M>, py::arg("name"), py::arg("layer"), py::arg("weight"), py::arg("scale"),
           py::arg("bias") = py::none());
}

// Int8 linears exist for the BERT encoder only (the INT8 critic is the BERT teacher).
void register_int8_linear(py::class_<BertModel>& c) {
  c.def("set_linear_int8", [](BertModel& m, const std::string& name, int layer, I8 q, F32 scale, py::object bias) {
    if (q.ndim() != 2 || scale.ndim() != 1 || scale.shape(0) != q.shape(0))
      throw std::invalid_argument("an int8 linear needs weights [out, in] and one scale per row [out]");
    const int out = static_cast<int>(q.shape(0)), in = static_cast<int>(q.shape(1));
    if (bias.is_none()) return m.set_linear_int8(name, layer, q.data(), out, in, scale.data(), nullptr);
    F32 b = bias.cast<F32>();
    if (b.ndim() != 1 || b.shape(0) != out) throw std::invalid_argument("bias must be 1-D [out]");
    m.set_linear_int8(name, layer, q.data(), out, in, scale.data(), b.data());
  }, py::arg("name"), py::arg("layer"), py::arg("weight"), py::arg("scale"), py::arg("bias") = py::none(),
     "a linear with int8 weights [out, in] in [-127, 127] and one float32 scale per output row");
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "bitrl_ros native engine: ternary x int8 kernels and whole BERT / BitNet forward passes";
  register_kernels(m);

  py::class_<BertConfig>(m, "BertConfig")
      .def(py::init<>())
      .def_readwrite("vocab_size", &BertConfig::vocab_size)
      .def_readwrite("hidden_size", &BertConfig::hidden_size)
      .def_readwrite("num_layers", &BertConfig::num_layers)
      .def_readwrite("num_heads", &BertConfig::num_heads)
      .def_readwrite("intermediate_size", &BertConfig::intermediate_size)
      .def_readwrite("max_position", &BertConfig::max_position)
      .def_readwrite("type_vocab_size", &BertConfig::type_vocab_size)
      .def_readwrite("layer_norm_eps", &BertConfig::layer_norm_eps);

  py::class_<BitNetConfig>(m, "BitNetConfig")
      .def(py::init<>())
      .def_readwrite("vocab_size", &BitNetConfig::vocab_size)
      .def_readwrite("hidden_size", &BitNetConfig::hidden_size)
      .def_readwrite("intermediate_size", &BitNetConfig::intermediate_size)
      .def_readwrite("num_layers", &BitNetConfig::num_layers)
      .def_readwrite("num_heads", &BitNetConfig::num_heads)
      .def_readwrite("num_kv_heads", &BitNetConfig::num_kv_heads)
      .def_readwrite("rms_norm_eps", &BitNetConfig::rms_norm_eps)
      .def_readwrite("rope_theta", &BitNetConfig::rope_theta)
      .def_readwrite("max_position", &BitNetConfig::max_position);

  py::class_<BertModel> bert(m, "BertModel", "BERT-style post-LN encoder on the ternary kernels");
  bert.def(py::init<const BertConfig&, int>(), py::arg("config"), py::arg("threads") = 1);
  common<BertModel>(bert);
  register_int8_linear(bert);

  py::class_<BitNetModel> bitnet(m, "BitNetModel", "BitNet b1.58 decoder on the ternary kernels");
  bitnet.def(py::init<const BitNetConfig&, int>(), py::arg("config"), py::arg("threads") = 1);
  common<BitNetModel>(bitnet);
}
