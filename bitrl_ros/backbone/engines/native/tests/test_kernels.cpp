// Standalone test of the native engine's ternary kernels (no Python, no framework): every ISA this CPU runs must
// give exactly the scalar path's int32 results, the scalar path must match a naive product on unpacked weights,
// packing must round-trip, and quantize_activations must match a straightforward reference.
// Build (x86): g++ -O2 -std=c++17 -I.. kernels.cpp kernels_x86.cpp kernels_neon.cpp tests/test_kernels.cpp
// ARM: see `make test-arm`. Usage: test_kernels [--seed N] [--bench]. Last line: "N passed, N failed".
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../kernels.h"

using namespace bitrl;

static int g_passed = 0, g_failed = 0;

static void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

static std::vector<int8_t> random_ternary(std::mt19937& rng, int out, int in) {
  std::vector<int8_t> w(static_cast<size_t>(out) * in);
  std::uniform_int_distribution<int> d(-1, 1);
  for (auto& v : w) v = static_cast<int8_t>(d(rng));
  return w;
}

// Activations as the engine makes them, except that -128 and extreme runs are allowed too (kernels must be exact
// for any int8 input): the padding stays zero.
static std::vector<int8_t> random_xq(std::mt19937& rng, int tokens, int in, int in_padded, int mode) {
  std::vector<int8_t> x(static_cast<size_t>(tokens) * in_padded, 0);
  std::uniform_int_distribution<int> full(-128, 127);
  for (int t = 0; t < tokens; ++t)
    for (int i = 0; i < in; ++i) {
      int v;
      if (mode == 1) v = -128;                       // worst case for int16 partial sums
      else if (mode == 2) v = 127;
      else v = full(rng);
      x[static_cast<size_t>(t) * in_padded + i] = static_cast<int8_t>(v);
    }
  return x;
}

static std::string shape_str(int out, int in, int tokens) {
  return "out=" + std::to_string(out) + " in=" + std::to_string(in) + " tokens=" + std::to_string(tokens);
}

static void test_isa_names() {
  for (Isa isa : {Isa::Scalar, Isa::AVX2, Isa::AVX512VNNI, Isa::NEON})
    check(parse_isa(isa_name(isa)) == isa, std::string("parse_isa(isa_name(") + isa_name(isa) + "))");
  bool threw = false;
  try {
    parse_isa("sse9");
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  check(threw, "parse_isa rejects unknown names");
  check(isa_available(Isa::Scalar), "scalar always available");
  check(isa_available(best_isa()), "best_isa is available");
  auto av = available_isas();
  check(!av.empty() && av.front() == Isa::Scalar, "available_isas starts with scalar");
#if defined(__aarch64__)
  check(isa_available(Isa::NEON) && !isa_available(Isa::AVX2), "aarch64: NEON available, x86 paths not");
#elif defined(__x86_64__)
  check(!isa_available(Isa::NEON), "x86: NEON not available");
#endif
  for (Isa isa : {Isa::AVX2, Isa::AVX512VNNI, Isa::NEON}) {
    if (isa_available(isa)) continue;
    PackedTernary p = pack_ternary(std::vector<int8_t>(128, 0).data(), 1, 128, 1.0f);
    std::vector<int8_t> x(128, 0);
    int32_t acc = 0, xs = 0;
    bool t = false;
    try {
      ternary_gemm_i32(p, x.data(), &xs, 1, &acc, 0, 1, isa);
    } catch (const std::invalid_argument&) {
      t = true;
    }
    check(t, std::string("unavailable ISA ") + isa_name(isa) + " throws");
  }
}

static void test_pack(std::mt19937& rng) {
  const int shapes[][2] = {{1, 1}, {1, 127}, {1, 128}, {1, 129}, {3, 255}, {5, 256}, {7, 300}, {2, 1000}, {4, 384}};
  for (auto& s : shapes) {
    const int out = s[0], in = s[1];
    auto w = random_ternary(rng, out, in);
    PackedTernary p = pack_ternary(w.data(), out, in, 0.25f);
    std::vector<int8_t> back(w.size(), 42);
    unpack_ternary(p, back.data());
    const std::string sh = shape_str(out, in, 0);
    check(back == w, "pack/unpack round trip " + sh);
    check(p.in_padded == padded(in) && p.in_padded % kBlock == 0, "in_padded " + sh);
    check(p.bytes() == static_cast<size_t>(out) * p.in_padded / 4, "2 bits per (padded) weight " + sh);
    check(p.scale == 0.25f && p.out == out && p.in == in, "fields " + sh);
    // Explicit layout check: byte j of block b holds weight b*128 + 32k + j in bits 2k..2k+1; padding is code 1.
    bool layout_ok = true;
    for (int r = 0; r < out; ++r)
      for (int i = 0; i < p.in_padded; ++i) {
        const int b = i / 128, k = (i % 128) / 32, j = i % 32;
        const int code = (p.codes[static_cast<size_t>(r) * p.in_padded / 4 + b * 32 + j] >> (2 * k)) & 3;
        const int want = i < in ? w[static_cast<size_t>(r) * in + i] + 1 : 1;
        layout_ok &= code == want;
      }
    check(layout_ok, "documented packed layout " + sh);
  }
  bool threw = false;
  int8_t bad[2] = {0, 2};
  try {
    pack_ternary(bad, 1, 2, 1.0f);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  check(threw, "pack_ternary rejects non-ternary weights");
}

// Straightforward reference for quantize_activations (explicit round half to even, no nearbyint).
static void quantize_ref(const float* x, int tokens, int in, int in_padded, std::vector<int8_t>& q,
                         std::vector<float>& sc, std::vector<int32_t>& sum, int* ties) {
  q.assign(static_cast<size_t>(tokens) * in_padded, 0);
  sc.assign(tokens, 0.0f);
  sum.assign(tokens, 0);
  for (int t = 0; t < tokens; ++t) {
    float m = 0.0f;
    for (int i = 0; i < in; ++i) m = std::max(m, std::fabs(x[t * in + i]));
    if (m < 1e-5f) m = 1e-5f;
    const float recip = 1.0f / m;
    const float s = recip * 127.0f;
    sc[t] = s;
    for (int i = 0; i < in; ++i) {
      float v = x[t * in + i] * s;
      if (v > 127.0f) v = 127.0f;
      if (v < -128.0f) v = -128.0f;
      const float f = std::floor(v), d = v - f;
      long r;
      if (d > 0.5f) r = static_cast<long>(f) + 1;
      else if (d < 0.5f) r = static_cast<long>(f);
      else {
        ++*ties;
        r = (static_cast<long>(f) % 2 == 0) ? static_cast<long>(f) : static_cast<long>(f) + 1;
      }
      q[static_cast<size_t>(t) * in_padded + i] = static_cast<int8_t>(r);
      sum[t] += static_cast<int32_t>(r);
    }
  }
}

static void test_quantize(std::mt19937& rng) {
  int ties = 0;
  const int shapes[][2] = {{1, 1}, {1, 130}, {3, 384}, {33, 77}, {2, 1000}, {4, 128}, {2, 1536}, {5, 31}};
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& s : shapes) {
    const int tokens = s[0], in = s[1], inp = padded(in);
    std::vector<float> x(static_cast<size_t>(tokens) * in);
    for (auto& v : x) v = nd(rng) * 3.0f;
    if (tokens >= 3) {
      for (int i = 0; i < in; ++i) x[in + i] = 0.0f;                   // an all-zero token
      for (int i = 0; i < in; ++i) x[2 * in + i] = (i % 2 ? -1 : 1) * ((i % 200) + 0.5f) / 127.0f;  // ties
      x[2 * in] = 1.0f;                                                // amax 1 -> scale exactly 127
    }
    std::vector<int8_t> q(static_cast<size_t>(tokens) * inp, 99), qr;
    std::vector<float> sc(tokens), scr;
    std::vector<int32_t> sum(tokens), sumr;
    quantize_activations(x.data(), tokens, in, inp, q.data(), sc.data(), sum.data());
    quantize_ref(x.data(), tokens, in, inp, qr, scr, sumr, &ties);
    const std::string sh = shape_str(0, in, tokens);
    check(q == qr, "quantize_activations values (incl. zero padding) " + sh);
    check(std::memcmp(sc.data(), scr.data(), sizeof(float) * tokens) == 0, "quantize_activations scales " + sh);
    check(sum == sumr, "quantize_activations x_sum " + sh);
    std::vector<int8_t> q2(q.size());
    std::vector<float> sc2(tokens);
    quantize_activations(x.data(), tokens, in, inp, q2.data(), sc2.data(), nullptr);
    check(q2 == q, "quantize_activations with x_sum = null " + sh);
    // Every vector path equals the scalar one bit for bit, NaN and infinities included.
    if (tokens >= 2 && in >= 40) {
      x[3] = std::numeric_limits<float>::quiet_NaN();
      x[in + 37] = std::numeric_limits<float>::infinity();
      x[in + 5] = -std::numeric_limits<float>::infinity();
    }
    std::vector<int8_t> qs(q.size());
    std::vector<float> scs(tokens);
    std::vector<int32_t> sums(tokens);
    quantize_activations(x.data(), tokens, in, inp, qs.data(), scs.data(), sums.data(), Isa::Scalar);
    for (Isa isa : available_isas()) {
      std::vector<int8_t> qi(q.size(), 99);
      std::vector<float> sci(tokens);
      std::vector<int32_t> sumi(tokens);
      quantize_activations(x.data(), tokens, in, inp, qi.data(), sci.data(), sumi.data(), isa);
      const std::string what = std::string(" (") + isa_name(isa) + ") " + sh;
      check(qi == qs, "quantize_activations values" + what);
      check(std::memcmp(sci.data(), scs.data(), sizeof(float) * tokens) == 0, "quantize_activations scales" + what);
      check(sumi == sums, "quantize_activations x_sum" + what);
    }
  }
  check(ties > 0, "quantize test exercised exact .5 ties (" + std::to_string(ties) + ")");
}

static void naive_gemm(const std::vector<int8_t>& w, int out, int in, const std::vector<int8_t>& x, int in_padded,
                       int tokens, std::vector<int32_t>& acc) {
  acc.assign(static_cast<size_t>(tokens) * out, 0);
  for (int t = 0; t < tokens; ++t)
    for (int r = 0; r < out; ++r) {
      int32_t s = 0;
      for (int i = 0; i < in; ++i) s += w[static_cast<size_t>(r) * in + i] * x[static_cast<size_t>(t) * in_padded + i];
      acc[static_cast<size_t>(t) * out + r] = s;
    }
}

static void test_gemm(std::mt19937& rng) {
  std::vector<Isa> isas = available_isas();
  struct Shape {
    int out, in, tokens, xmode;
  };
  std::vector<Shape> shapes = {{1, 1, 1, 0},     {1, 128, 1, 0},   {1, 129, 2, 0},   {2, 200, 3, 0},
                               {3, 255, 4, 0},   {5, 256, 5, 0},   {7, 384, 7, 1},   {9, 1000, 9, 2},
                               {33, 131, 33, 0}, {64, 512, 17, 0}, {17, 1536, 1, 1}, {13, 640, 8, 0},
                               {100, 300, 6, 0}, {31, 2560, 2, 0}, {6, 6912, 3, 1}};
  std::uniform_int_distribution<int> dout(1, 40), din(1, 700), dtok(1, 33);
  for (int i = 0; i < 25; ++i) shapes.push_back({dout(rng), din(rng), dtok(rng), i % 7 == 0 ? 1 : 0});
  for (const Shape& s : shapes) {
    const int inp = padded(s.in);
    const std::string sh = shape_str(s.out, s.in, s.tokens);
    auto w = random_ternary(rng, s.out, s.in);
    PackedTernary p = pack_ternary(w.data(), s.out, s.in, 0.37f);
    auto x = random_xq(rng, s.tokens, s.in, inp, s.xmode);
    std::vector<int32_t> xsum(s.tokens, 0);
    for (int t = 0; t < s.tokens; ++t)
      for (int i = 0; i < inp; ++i) xsum[t] += x[static_cast<size_t>(t) * inp + i];
    std::vector<int32_t> ref;
    naive_gemm(w, s.out, s.in, x, inp, s.tokens, ref);
    std::vector<int32_t> scalar(ref.size(), 0);
    ternary_gemm_i32(p, x.data(), xsum.data(), s.tokens, scalar.data(), 0, s.out, Isa::Scalar);
    check(scalar == ref, "scalar == naive product " + sh);
    for (Isa isa : isas) {
      const std::string tag = std::string(isa_name(isa)) + " " + sh;
      std::vector<int32_t> acc(ref.size(), 12345);
      ternary_gemm_i32(p, x.data(), xsum.data(), s.tokens, acc.data(), 0, s.out, isa);
      check(acc == scalar, "bit-exact vs scalar: " + tag);
      std::vector<int32_t> acc2(ref.size(), 12345);
      ternary_gemm_i32(p, x.data(), nullptr, s.tokens, acc2.data(), 0, s.out, isa);
      check(acc2 == scalar, "x_sum = null: " + tag);
      // A sub-range of rows, as a thread would get: only those rows are written.
      std::uniform_int_distribution<int> dr(0, s.out);
      int rb = dr(rng), re = dr(rng);
      if (rb > re) std::swap(rb, re);
      std::vector<int32_t> part(ref.size(), -7);
      ternary_gemm_i32(p, x.data(), xsum.data(), s.tokens, part.data(), rb, re, isa);
      bool ok = true;
      for (int t = 0; t < s.tokens; ++t)
        for (int r = 0; r < s.out; ++r) {
          const size_t idx = static_cast<size_t>(t) * s.out + r;
          ok &= (r >= rb && r < re) ? part[idx] == scalar[idx] : part[idx] == -7;
        }
      check(ok, "rows [" + std::to_string(rb) + "," + std::to_string(re) + ") only: " + tag);
      // Float epilogue: the same for every ISA and equal to acc * scale / x_scale + bias.
      std::vector<float> xs(s.tokens), bias(s.out), y(ref.size());
      for (int t = 0; t < s.tokens; ++t) xs[t] = 0.5f + t;
      for (int r = 0; r < s.out; ++r) bias[r] = 0.01f * r;
      ternary_gemm_f32(p, x.data(), xsum.data(), xs.data(), bias.data(), s.tokens, y.data(), nullptr, 0, s.out, isa);
      bool fok = true;
      for (int t = 0; t < s.tokens; ++t)
        for (int r = 0; r < s.out; ++r) {
          const size_t idx = static_cast<size_t>(t) * s.out + r;
          const float want = static_cast<float>(scalar[idx]) * (p.scale / xs[t]) + bias[r];
          fok &= std::fabs(y[idx] - want) <= 1e-6f * (1.0f + std::fabs(want));
        }
      check(fok, "ternary_gemm_f32: " + tag);
    }
  }
  bool threw = false;
  try {
    PackedTernary p = pack_ternary(std::vector<int8_t>(4, 0).data(), 2, 2, 1.0f);
    std::vector<int8_t> x(128, 0);
    int32_t acc[4];
    ternary_gemm_i32(p, x.data(), nullptr, 1, acc, 1, 3, Isa::Scalar);
  } catch (const std::out_of_range&) {
    threw = true;
  }
  check(threw, "bad row range throws");
}

// Not a test: GFLOP-equivalent (2 * out * in * tokens per call) of a gemv / small gemm per ISA, one thread.
static void bench() {
  std::mt19937 rng(7);
  const int shapes[][2] = {{6912, 2560}, {2560, 6912}, {1536, 384}};
  for (auto& s : shapes) {
    const int out = s[0], in = s[1], inp = padded(in);
    auto w = random_ternary(rng, out, in);
    PackedTernary p = pack_ternary(w.data(), out, in, 1.0f);
    for (int tokens : {1, 8, 30}) {
      auto x = random_xq(rng, tokens, in, inp, 0);
      std::vector<int32_t> acc(static_cast<size_t>(tokens) * out), xsum(tokens, 0);
      for (Isa isa : available_isas()) {
        ternary_gemm_i32(p, x.data(), xsum.data(), tokens, acc.data(), 0, out, isa);
        double best = 1e30;
        const int reps = isa == Isa::Scalar ? 2 : 5;
        const int inner = std::max(1, static_cast<int>(2e8 / (2.0 * out * in * tokens)));
        for (int rep = 0; rep < reps; ++rep) {
          auto t0 = std::chrono::steady_clock::now();
          for (int i = 0; i < (isa == Isa::Scalar ? 1 : inner); ++i)
            ternary_gemm_i32(p, x.data(), xsum.data(), tokens, acc.data(), 0, out, isa);
          double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                      (isa == Isa::Scalar ? 1 : inner);
          best = std::min(best, dt);
        }
        std::printf("bench out=%d in=%d tokens=%d %-10s %8.3f ms  %7.1f GFLOP/s  (%.3f bits/weight)\n", out, in,
                    tokens, isa_name(isa), best * 1e3, 2.0 * out * in * tokens / best / 1e9,
                    8.0 * p.bytes() / (static_cast<double>(out) * in));
      }
    }
  }
}

// Int8 weights: every ISA's accumulators equal the scalar path's and a direct int32 reference, for odd shapes,
// padding, the extremes (-128 activations, +-127 weights) and a row range; the float rescale matches by formula.
static void test_int8_gemm(std::mt19937& rng) {
  const int shapes[][3] = {{1, 1, 1}, {3, 5, 2}, {16, 128, 1}, {17, 130, 3}, {64, 384, 5}, {33, 1536, 2}};
  std::uniform_int_distribution<int> wd(-127, 127);
  for (const auto& sh : shapes) {
    const int out = sh[0], in = sh[1], tokens = sh[2];
    for (int mode = 0; mode < 3; ++mode) {
      std::vector<int8_t> q(static_cast<size_t>(out) * in);
      for (auto& v : q) v = static_cast<int8_t>(mode == 1 ? 127 : (mode == 2 ? -127 : wd(rng)));
      std::vector<float> scale(out);
      for (int r = 0; r < out; ++r) scale[r] = 0.001f * (r + 1);
      PackedInt8 p = pack_int8(q.data(), scale.data(), out, in);
      const std::string name = "int8 " + shape_str(out, in, tokens) + " mode " + std::to_string(mode);
      check(p.in_padded == padded(in) && p.bytes() == static_cast<size_t>(out) * p.in_padded + 4u * out,
            name + ": layout");
      std::vector<int8_t> x = random_xq(rng, tokens, in, p.in_padded, mode);
      std::vector<int32_t> ref(static_cast<size_t>(tokens) * out);
      for (int t = 0; t < tokens; ++t)
        for (int r = 0; r < out; ++r) {
          int64_t s = 0;
          for (int i = 0; i < in; ++i)
            s += static_cast<int64_t>(q[static_cast<size_t>(r) * in + i]) * x[static_cast<size_t>(t) * p.in_padded + i];
          ref[static_cast<size_t>(t) * out + r] = static_cast<int32_t>(s);
        }
      for (Isa isa : available_isas()) {
        std::vector<int32_t> acc(ref.size(), 7);
        int8_gemm_i32(p, x.data(), tokens, acc.data(), 0, out, isa);
        check(acc == ref, name + " " + isa_name(isa) + ": exact int32");
        if (out > 2) {  // a row range leaves the other rows alone
          std::vector<int32_t> part(ref.size(), 7);
          int8_gemm_i32(p, x.data(), tokens, part.data(), 1, out - 1, isa);
          bool ok = true;
          for (int t = 0; t < tokens; ++t)
            for (int r = 0; r < out; ++r) {
              size_t k = static_cast<size_t>(t) * out + r;
              ok = ok && part[k] == ((r >= 1 && r < out - 1) ? ref[k] : 7);
            }
          check(ok, name + " " + isa_name(isa) + ": row range");
        }
        std::vector<float> xs(tokens, 2.0f), bias(out, 0.5f), y(ref.size());
        int8_gemm_f32(p, x.data(), xs.data(), bias.data(), tokens, y.data(), nullptr, 0, out, isa);
        bool ok = true;
        for (int t = 0; t < tokens; ++t)
          for (int r = 0; r < out; ++r) {
            size_t k = static_cast<size_t>(t) * out + r;
            // Within float rounding: the compiler may fuse the multiply-add here or there (aarch64 does).
            const double want = static_cast<double>(ref[k]) * scale[r] / 2.0 + 0.5;
            ok = ok && std::fabs(y[k] - want) <= 1e-6 * std::fabs(want) + 1e-6;
          }
        check(ok, name + " " + isa_name(isa) + ": float rescale");
      }
    }
  }
  bool threw = false;
  try {
    const int8_t bad[2] = {1, -128};
    const float sc[1] = {1.0f};
    pack_int8(bad, sc, 1, 2);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  check(threw, "pack_int8 rejects -128");
}

int main(int argc, char** argv) {
  unsigned seed = 12345;
  bool do_bench = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) seed = static_cast<unsigned>(std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--bench")) do_bench = true;
  }
  std::printf("available ISAs:");
  for (Isa isa : available_isas()) std::printf(" %s", isa_name(isa));
  try {
    std::printf("; best: %s; seed %u\n", isa_name(best_isa()), seed);
  } catch (const std::exception& e) {
    std::printf("\nFAIL: best_isa: %s\n0 passed, 1 failed\n", e.what());
    return 1;
  }
  if (do_bench) {
    bench();
    return 0;
  }
  std::mt19937 rng(seed);
  try {
    test_isa_names();
    test_pack(rng);
    test_quantize(rng);
    test_gemm(rng);
    test_int8_gemm(rng);
  } catch (const std::exception& e) {
    std::printf("FAIL: unexpected exception: %s\n", e.what());
    ++g_failed;
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
