// Private to the model translation units (model.cpp, model_bert.cpp, model_bitnet.cpp): the loading and
// bookkeeping helpers both architectures share. Not part of the API; include model.h instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model.h"

namespace bitrl {

// dst = data[0, n), after checking that n == expected (std::invalid_argument naming the tensor otherwise).
void copy_vec(std::vector<float>& dst, const float* data, size_t n, size_t expected, const std::string& name);

// Checks shape [exp_out, exp_in], ternary values, a positive finite scale and the presence of a bias exactly when
// want_bias, then packs w [out, in] into l.
void set_linear_impl(QuantLinear& l, const std::string& name, const int8_t* w, int out, int in, float scale,
                     const float* bias, int exp_out, int exp_in, bool want_bias);
void set_linear_int8_impl(QuantLinear& l, const std::string& name, const int8_t* q, int out, int in,
                          const float* scale, const float* bias, int exp_out, int exp_in, bool want_bias);

template <class T>
size_t vec_bytes(const std::vector<T>& v) {
  return v.size() * sizeof(T);
}

}  // namespace bitrl
