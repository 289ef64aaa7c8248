// Python bindings of the ternary kernels (kernels.h); bindings.cpp calls register_kernels(m) from the module's
// PYBIND11_MODULE. Arrays are numpy; the compute calls release the GIL. ISA arguments are names ("scalar",
// "avx2", "avx512vnni", "neon") or None for best_isa().
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kernels.h"

namespace py = pybind11;

namespace bitrl {
namespace {

using I8 = py::array_t<int8_t, py::array::c_style | py::array::forcecast>;
using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using U8 = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

Isa isa_arg(const std::optional<std::string>& isa) { return isa ? parse_isa(*isa) : best_isa(); }

// xq as [tokens, in_padded] int8 (a 1-D array is one token). Rows of length `in` are zero padded to in_padded.
I8 activations_arg(const PackedTernary& p, const I8& xq, int* tokens) {
  if (xq.ndim() != 1 && xq.ndim() != 2) throw std::invalid_argument("xq must be 1-D or 2-D");
  const py::ssize_t t = xq.ndim() == 1 ? 1 : xq.shape(0);
  const py::ssize_t n = xq.shape(xq.ndim() - 1);
  *tokens = static_cast<int>(t);
  if (n == p.in_padded) return xq;
  if (n != p.in)
    throw std::invalid_argument("xq rows have " + std::to_string(n) + " values; expected in=" +
                                std::to_string(p.in) + " or in_padded=" + std::to_string(p.in_padded));
  I8 out({t, static_cast<py::ssize_t>(p.in_padded)});
  std::memset(out.mutable_data(), 0, static_cast<size_t>(t) * p.in_padded);
  for (py::ssize_t i = 0; i < t; ++i) std::memcpy(out.mutable_data() + i * p.in_padded, xq.data() + i * n, n);
  return out;
}

const int32_t* x_sum_arg(const std::optional<I32>& x_sum, int tokens) {
  if (!x_sum) return nullptr;
  if (x_sum->size() != tokens) throw std::invalid_argument("x_sum must have one value per token");
  return x_sum->data();
}

template <class T>
py::array_t<T> result(bool one_d, int tokens, int out) {
  if (one_d) return py::array_t<T>({static_cast<py::ssize_t>(out)});
  return py::array_t<T>({static_cast<py::ssize_t>(tokens), static_cast<py::ssize_t>(out)});
}

}  // namespace
}  // namespace bitrl

void register_kernels(py::module_& m) {
  using namespace bitrl;

  m.def("isa_names", [] {
    std::vector<std::string> v;
    for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512VNNI, Isa::NEON}) v.emplace_back(isa_name(isa));
    return v;
  }, "All ISA names the kernels know.");
  m.def("available_isas", [] {
    std::vector<std::string> v;
    for (Isa isa : available_isas()) v.emplace_back(isa_name(isa));
    return v;
  }, "ISAs compiled in and supported by this CPU, scalar first.");
  m.def("best_isa", [] { return std::string(isa_name(best_isa())); },
        "The fastest available ISA (BITRL_NATIVE_ISA overrides).");
  m.def("isa_name", [](const std::string& name) { return std::string(isa_name(parse_isa(name))); }, py::arg("isa"),
        "Canonical ISA name (identity on valid names; ISAs are passed around as strings).");
  m.def("isa_available", [](const std::string& name) { return isa_available(parse_isa(name)); }, py::arg("isa"));
  m.attr("BLOCK") = kBlock;

  py::class_<PackedTernary>(m, "PackedTernary", "A ternary matrix packed at 2 bits per weight (see kernels.cpp).")
      .def_readonly("out", &PackedTernary::out)
      .def_readonly("in", &PackedTernary::in)  // a keyword in Python: getattr(p, "in"), or p.in_features
      .def_readonly("out_features", &PackedTernary::out)
      .def_readonly("in_features", &PackedTernary::in)
      .def_readonly("in_padded", &PackedTernary::in_padded)
      .def_readonly("scale", &PackedTernary::scale)
      .def_property_readonly("bytes", &PackedTernary::bytes, "Packed size in bytes.")
      .def_property_readonly("bits_per_weight",
                             [](const PackedTernary& p) {
                               return p.out && p.in ? 8.0 * p.bytes() / (static_cast<double>(p.out) * p.in) : 0.0;
                             })
      .def_property_readonly("codes",
                             [](const PackedTernary& p) {
                               U8 a({static_cast<py::ssize_t>(p.out), static_cast<py::ssize_t>(p.in_padded / 4)});
                               if (p.bytes()) std::memcpy(a.mutable_data(), p.codes.data(), p.bytes());
                               return a;
                             },
                             "Copy of the packed bytes, uint8 [out, in_padded / 4].")
      .def_static(
          "from_codes",
          [](const U8& codes, int out, int in, float scale) {
            PackedTernary p;
            p.out = out;
            p.in = in;
            p.in_padded = padded(in);
            p.scale = scale;
            if (codes.size() != static_cast<py::ssize_t>(out) * p.in_padded / 4)
              throw std::invalid_argument("codes must hold out * padded(in) / 4 bytes");
            p.codes.assign(codes.data(), codes.data() + codes.size());
            return p;
          },
          py::arg("codes"), py::arg("out"), py::arg("in_features"), py::arg("scale"),
          "Rebuild from .codes (no validation of the 2-bit values).")
      .def("__repr__", [](const PackedTernary& p) {
        return "<PackedTernary out=" + std::to_string(p.out) + " in=" + std::to_string(p.in) +
               " bytes=" + std::to_string(p.bytes()) + ">";
      });

  m.def(
      "pack",
      [](const I8& w, float scale) {
        if (w.ndim() != 2) throw std::invalid_argument("w must be int8 [out, in]");
        return pack_ternary(w.data(), static_cast<int>(w.shape(0)), static_cast<int>(w.shape(1)), scale);
      },
      py::arg("w"), py::arg("scale"), "int8 [out, in] in {-1, 0, 1} + per-tensor scale -> PackedTernary.");
  m.def(
      "unpack",
      [](const PackedTernary& p) {
        I8 w({static_cast<py::ssize_t>(p.out), static_cast<py::ssize_t>(p.in)});
        unpack_ternary(p, w.mutable_data());
        return w;
      },
      py::arg("packed"), "PackedTernary -> int8 [out, in].");

  m.def(
      "quantize_activations",
      [](const F32& x, std::optional<int> in_padded, std::optional<std::string> isa) {
        if (x.ndim() != 2) throw std::invalid_argument("x must be float32 [tokens, in]");
        const int tokens = static_cast<int>(x.shape(0)), in = static_cast<int>(x.shape(1));
        const int inp = in_padded ? *in_padded : padded(in);
        const Isa which = isa_arg(isa);
        I8 xq({static_cast<py::ssize_t>(tokens), static_cast<py::ssize_t>(inp)});
        F32 sc({static_cast<py::ssize_t>(tokens)});
        I32 sum({static_cast<py::ssize_t>(tokens)});
        {
          py::gil_scoped_release nogil;
          quantize_activations(x.data(), tokens, in, inp, xq.mutable_data(), sc.mutable_data(), sum.mutable_data(),
                               which);
        }
        return std::make_tuple(xq, sc, sum);
      },
      py::arg("x"), py::arg("in_padded") = py::none(), py::arg("isa") = py::none(),
      "float32 [tokens, in] -> (xq int8 [tokens, in_padded], x_scale float32 [tokens], x_sum int32 [tokens]).");

  m.def(
      "gemm_i32",
      [](const PackedTernary& p, const I8& xq_in, std::optional<I32> x_sum, std::optional<std::string> isa) {
        int tokens = 0;
        I8 xq = activations_arg(p, xq_in, &tokens);
        const Isa which = isa_arg(isa);
        const int32_t* xs = x_sum_arg(x_sum, tokens);
        auto acc = result<int32_t>(xq_in.ndim() == 1, tokens, p.out);
        {
          py::gil_scoped_release nogil;
          ternary_gemm_i32(p, xq.data(), xs, tokens, acc.mutable_data(), 0, p.out, which);
        }
        return acc;
      },
      py::arg("packed"), py::arg("xq"), py::arg("x_sum") = py::none(), py::arg("isa") = py::none(),
      "Exact int32 xq [tokens, in(_padded)] . W^T -> int32 [tokens, out].");

  m.def(
      "gemm_f32",
      [](const PackedTernary& p, const I8& xq_in, std::optional<I32> x_sum, const F32& x_scale,
         std::optional<F32> bias, std::optional<std::string> isa) {
        int tokens = 0;
        I8 xq = activations_arg(p, xq_in, &tokens);
        const Isa which = isa_arg(isa);
        const int32_t* xs = x_sum_arg(x_sum, tokens);
        if (x_scale.size() != tokens) throw std::invalid_argument("x_scale must have one value per token");
        if (bias && bias->size() != p.out) throw std::invalid_argument("bias must have `out` values");
        auto y = result<float>(xq_in.ndim() == 1, tokens, p.out);
        {
          py::gil_scoped_release nogil;
          ternary_gemm_f32(p, xq.data(), xs, x_scale.data(), bias ? bias->data() : nullptr, tokens,
                           y.mutable_data(), nullptr, 0, p.out, which);
        }
        return y;
      },
      py::arg("packed"), py::arg("xq"), py::arg("x_sum"), py::arg("x_scale"), py::arg("bias") = py::none(),
      py::arg("isa") = py::none(), "y [tokens, out] = (xq . W^T) * packed.scale / x_scale[t] + bias.");
}
