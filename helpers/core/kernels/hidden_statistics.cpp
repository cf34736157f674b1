// One layer's hidden-state statistics in one call on the CPU (helpers/core/kernels/__init__.py builds and loads it).
//
// What metrics.hidden_state_statistics computes with about thirty torch operations, here in two parallel
// sweeps over the token rows of hidden (B, T, D), padding rows skipped:
//   sweep 1, one read of each row, every 8-wide vector of it loaded once: the row's sum, ||h||^2, sum of |h|,
//            max |h| and the counts |h| < eps for every absolute threshold;
//   then each prompt's mean and std (a relative threshold eps * std needs every row of its prompt first);
//   sweep 2, a second read of each row (from cache for the usual batches): the counts |h| < eps * std, the Hoyer
//            term and the non-finite flag.
// Exactness: the per-row sums follow the order of torch's own CPU kernels (ATen/native/cpu/SumKernel.cpp's
// cascade sum for `sum` and `abs().sum`, ReduceOpsKernel.cpp's lane accumulation for `linalg.vector_norm`, as
// torch's x86 build compiles them; BSD licence), so they equal torch's bit for bit; the reductions over tokens,
// the std and the square roots of the Hoyer terms (torch's float32 sqrt is not always correctly rounded) are
// torch's own calls on tensors of the reference's shapes; the rest is IEEE arithmetic in the reference's order
// (no fused multiply-adds but the one torch's build makes: the pragma below). Every statistic, the relative thresholds included, is then the reference's
// number exactly. The Python wrapper checks the per-row sums against torch once per process (`torch_sums`
// has torch compute the two that decide the thresholds otherwise: another CPU, another torch build).
// The mean-pooled vectors (metrics.mean_pooled) are torch's batched product, called from here: a float64 sum in
// sweep 1 was within float32 rounding of it but changed ~0.03% of the float16 vectors the study stores by one
// float16 step; the product reads the tensor once more.
// Inputs float32, bfloat16 or float16 (converted to float32 exactly, as the reference's `hidden.float()`).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

// Every a * b + c below is rounded twice, as torch's own kernels round it, unless std::fma says otherwise.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace {

// torch's float32 `sum` and `linalg.vector_norm` run 8 lanes wide on x86 whether it dispatches to AVX2 or AVX512
// (they have no AVX512 kernels); the replicas use GCC's vector types of exactly that width.
typedef float Lanes __attribute__((vector_size(32)));
typedef int32_t Bits __attribute__((vector_size(32)));
constexpr int64_t kWidth = 8;
constexpr int64_t kIlp = 4;     // SumKernel.cpp: ilp_factor
constexpr int64_t kLevels = 4;  // SumKernel.cpp: num_levels
constexpr int64_t kMaxThresholds = 8;

inline Lanes load_lanes(const float* x) {
  Lanes v;
  __builtin_memcpy(&v, x, sizeof v);
  return v;
}

inline Lanes abs_lanes(Lanes v) { return reinterpret_cast<Lanes>(reinterpret_cast<Bits>(v) & 0x7fffffff); }

int64_t ceil_log2(int64_t x) {  // ATen/native/cpu/utils.h CeilLog2
  if (x <= 2) return 1;
  return 64 - __builtin_clzll(static_cast<uint64_t>(x - 1));
}

// SumKernel.cpp's multi_row_sum + row_sum over `size` scalars load(0..size-1): the scalar route of torch's sum
// (rows shorter than the vector width).
template <typename Load>
float cascade_scalar_sum(const Load& load, int64_t size) {
  const int64_t rows = size / kIlp;
  const int64_t level_power = std::max<int64_t>(4, ceil_log2(rows) / kLevels);
  const int64_t level_step = int64_t(1) << level_power;
  const int64_t level_mask = level_step - 1;
  float acc[kLevels][kIlp] = {};
  int64_t i = 0;
  for (; i + level_step <= rows;) {
    for (int64_t j = 0; j < level_step; ++j, ++i)
      for (int64_t k = 0; k < kIlp; ++k) acc[0][k] = acc[0][k] + load(i * kIlp + k);
    for (int64_t j = 1; j < kLevels; ++j) {
      for (int64_t k = 0; k < kIlp; ++k) {
        acc[j][k] = acc[j][k] + acc[j - 1][k];
        acc[j - 1][k] = 0.f;
      }
      if ((i & (level_mask << (j * level_power))) != 0) break;
    }
  }
  for (; i < rows; ++i)
    for (int64_t k = 0; k < kIlp; ++k) acc[0][k] = acc[0][k] + load(i * kIlp + k);
  for (int64_t j = 1; j < kLevels; ++j)
    for (int64_t k = 0; k < kIlp; ++k) acc[0][k] = acc[0][k] + acc[j][k];
  for (int64_t index = rows * kIlp; index < size; ++index) acc[0][0] = acc[0][0] + load(index);
  for (int64_t k = 1; k < kIlp; ++k) acc[0][0] = acc[0][0] + acc[0][k];
  return acc[0][0];
}

// ReduceOpsKernel.cpp's norm tail as torch's x86 build compiled it: the first four squares rounded and added in
// turn, any further ones fused into the sum (fma); then sqrt and the reference's square of the norm.
inline float finish_norm_squared(float total, const float* x, int64_t d, int64_t n) {
  if (n - d >= 4) {
    for (const int64_t stop = d + 4; d < stop; ++d) {
      const float square = x[d] * x[d];
      total = total + square;
    }
  }
  for (; d < n; ++d) total = std::fma(x[d], x[d], total);
  const float norm = std::sqrt(total);
  return norm * norm;
}

struct RowStatistics {
  float sum, squares, magnitude, max_abs;
  int32_t counts[kMaxThresholds];
};

// One read of a row of n floats: torch's sum, ||x||^2 (squared norm) and sum |x| bit for bit, max |x| (NaN if
// any entry is NaN, as torch's amax) and the counts |x| < limits[k] for k < E.
template <int E>
void row_statistics(const float* x, int64_t n, const float* limits, RowStatistics& out) {
  Lanes max_lanes{};
  Bits nan_lanes{}, count_lanes[E > 0 ? E : 1] = {};
  Lanes limit_lanes[E > 0 ? E : 1];
  for (int k = 0; k < E; ++k) limit_lanes[k] = Lanes{} + limits[k];
  auto tally = [&](Lanes magnitude) {
    max_lanes = magnitude > max_lanes ? magnitude : max_lanes;
    nan_lanes |= magnitude != magnitude;
    for (int k = 0; k < E; ++k) count_lanes[k] -= magnitude < limit_lanes[k];  // true is -1
  };
  const int64_t vectors = n / kWidth;
  float sum = 0.f, magnitude = 0.f, squares_total = 0.f;
  if (n < kWidth) {  // torch's scalar route for the sums; the norm is all tail
    sum = 0.f + cascade_scalar_sum([x](int64_t i) { return x[i]; }, n);
    magnitude = 0.f + cascade_scalar_sum([x](int64_t i) { return std::abs(x[i]); }, n);
  } else {
    // SumKernel.cpp's cascade over the vectors (4 interleaved accumulators, 4 levels), for the sum and the sum
    // of |x| at once; the norm's single lane accumulator takes the same vectors in the same order.
    const int64_t rows = vectors / kIlp;
    const int64_t level_power = std::max<int64_t>(4, ceil_log2(rows) / kLevels);
    const int64_t level_step = int64_t(1) << level_power;
    const int64_t level_mask = level_step - 1;
    Lanes sums[kLevels][kIlp] = {}, magnitudes[kLevels][kIlp] = {}, squares{};
    auto visit = [&](int64_t index, Lanes& sum_lanes, Lanes& magnitude_lanes) {
      const Lanes v = load_lanes(x + index * kWidth);
      const Lanes m = abs_lanes(v);
      sum_lanes = sum_lanes + v;
      magnitude_lanes = magnitude_lanes + m;
      squares = squares + v * v;
      tally(m);
    };
    int64_t i = 0;
    for (; i + level_step <= rows;) {
      for (int64_t j = 0; j < level_step; ++j, ++i)
        for (int64_t k = 0; k < kIlp; ++k) visit(i * kIlp + k, sums[0][k], magnitudes[0][k]);
      for (int64_t j = 1; j < kLevels; ++j) {
        for (int64_t k = 0; k < kIlp; ++k) {
          sums[j][k] = sums[j][k] + sums[j - 1][k];
          sums[j - 1][k] = Lanes{};
          magnitudes[j][k] = magnitudes[j][k] + magnitudes[j - 1][k];
          magnitudes[j - 1][k] = Lanes{};
        }
        if ((i & (level_mask << (j * level_power))) != 0) break;
      }
    }
    for (; i < rows; ++i)
      for (int64_t k = 0; k < kIlp; ++k) visit(i * kIlp + k, sums[0][k], magnitudes[0][k]);
    for (int64_t j = 1; j < kLevels; ++j) {
      for (int64_t k = 0; k < kIlp; ++k) {
        sums[0][k] = sums[0][k] + sums[j][k];
        magnitudes[0][k] = magnitudes[0][k] + magnitudes[j][k];
      }
    }
    for (int64_t index = rows * kIlp; index < vectors; ++index) visit(index, sums[0][0], magnitudes[0][0]);
    for (int64_t k = 1; k < kIlp; ++k) {
      sums[0][0] = sums[0][0] + sums[0][k];
      magnitudes[0][0] = magnitudes[0][0] + magnitudes[0][k];
    }
    // vectorized_inner_sum: the scalar tail first, then the lanes left to right, into an output that starts at 0
    for (int64_t k = vectors * kWidth; k < n; ++k) {
      sum += x[k];
      magnitude += std::abs(x[k]);
    }
    for (int64_t k = 0; k < kWidth; ++k) {
      sum += sums[0][0][k];
      magnitude += magnitudes[0][0][k];
    }
    sum = 0.f + sum;
    magnitude = 0.f + magnitude;
    squares_total = squares[0];
    for (int64_t k = 1; k < kWidth; ++k) squares_total = squares_total + squares[k];
  }
  out.sum = sum;
  out.magnitude = magnitude;
  out.squares = finish_norm_squared(squares_total, x, vectors * kWidth, n);
  float best = 0.f;
  bool nan = false;
  for (int64_t k = 0; k < kWidth; ++k) {
    best = std::max(best, max_lanes[k]);
    nan |= nan_lanes[k] != 0;
  }
  for (int k = 0; k < E; ++k) {
    int32_t total = 0;
    for (int64_t j = 0; j < kWidth; ++j) total += count_lanes[k][j];
    out.counts[k] = total;
  }
  for (int64_t d = vectors * kWidth; d < n; ++d) {
    const float m = std::abs(x[d]);
    nan |= std::isnan(m);
    best = std::max(best, m);
    for (int k = 0; k < E; ++k) out.counts[k] += m < limits[k] ? 1 : 0;
  }
  out.max_abs = nan ? std::numeric_limits<float>::quiet_NaN() : best;
}

// The counts |x| < limits[k], k < E, of a row of n floats (sweep 2).
template <int E>
void row_counts(const float* x, int64_t n, const float* limits, int32_t* counts) {
  Bits count_lanes[E > 0 ? E : 1] = {};
  Lanes limit_lanes[E > 0 ? E : 1];
  for (int k = 0; k < E; ++k) limit_lanes[k] = Lanes{} + limits[k];
  int64_t d = 0;
  for (; d + kWidth <= n; d += kWidth) {
    const Lanes m = abs_lanes(load_lanes(x + d));
    for (int k = 0; k < E; ++k) count_lanes[k] -= m < limit_lanes[k];
  }
  for (int k = 0; k < E; ++k) {
    int32_t total = 0;
    for (int64_t j = 0; j < kWidth; ++j) total += count_lanes[k][j];
    counts[k] = total;
  }
  for (; d < n; ++d) {
    const float m = std::abs(x[d]);
    for (int k = 0; k < E; ++k) counts[k] += m < limits[k] ? 1 : 0;
  }
}

// The two row functions for a number of thresholds known at run time (0..kMaxThresholds).
struct RowFunctions {
  void (*statistics)(const float*, int64_t, const float*, RowStatistics&);
  void (*counts)(const float*, int64_t, const float*, int32_t*);
};

template <int E>
RowFunctions row_functions_for() {
  return {&row_statistics<E>, &row_counts<E>};
}

RowFunctions row_functions(int64_t thresholds) {
  switch (thresholds) {
    case 0: return row_functions_for<0>();
    case 1: return row_functions_for<1>();
    case 2: return row_functions_for<2>();
    case 3: return row_functions_for<3>();
    case 4: return row_functions_for<4>();
    case 5: return row_functions_for<5>();
    case 6: return row_functions_for<6>();
    case 7: return row_functions_for<7>();
    default: return row_functions_for<8>();
  }
}

// Row `row` of hidden (rows of n entries from `base`) as float32: the row itself, or converted into `scratch`
// (bfloat16, float16: exactly, as the reference's hidden.float()).
const float* float_row(const void* base, at::ScalarType dtype, int64_t row, int64_t n, float* scratch) {
  if (dtype == at::kFloat) return static_cast<const float*>(base) + row * n;
  if (dtype == at::kBFloat16) {
    const auto* source = static_cast<const at::BFloat16*>(base) + row * n;
    for (int64_t d = 0; d < n; ++d) scratch[d] = static_cast<float>(source[d]);
  } else {
    const auto* source = static_cast<const at::Half*>(base) + row * n;
    for (int64_t d = 0; d < n; ++d) scratch[d] = static_cast<float>(source[d]);
  }
  return scratch;
}

int64_t grain(int64_t n) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, n)); }

}  // namespace

// Per-row sums as torch computes them: (sum, ||h||^2, sum |h|) of each row of a contiguous (N, D) float32 tensor,
// each (N,) float32. For the wrapper's once-per-process check against torch, and the tests.
std::vector<at::Tensor> row_sums(const at::Tensor& rows) {
  TORCH_CHECK(rows.dim() == 2 && rows.scalar_type() == at::kFloat && rows.is_contiguous(),
              "rows: a contiguous 2-d float32 tensor");
  const int64_t N = rows.size(0), D = rows.size(1);
  auto sums = at::empty({N}, rows.options()), squares = at::empty({N}, rows.options());
  auto magnitudes = at::empty({N}, rows.options());
  const float* data = rows.data_ptr<float>();
  RowStatistics statistics;
  for (int64_t i = 0; i < N; ++i) {
    row_statistics<0>(data + i * D, D, nullptr, statistics);
    sums.data_ptr<float>()[i] = statistics.sum;
    squares.data_ptr<float>()[i] = statistics.squares;
    magnitudes.data_ptr<float>()[i] = statistics.magnitude;
  }
  return {sums, squares, magnitudes};
}

// hidden (B, T, D) float32|bfloat16|float16, contiguous; is_real (B, T) bool, contiguous: the real tokens;
// pool_weights: (B, T) float32 (metrics.mean_pooled's weights: 1 / real tokens on real tokens, else 0) to pool,
// or an empty tensor; epsilons: the thresholds, each used absolutely (|h| < eps) and relatively
// (|h| < eps * the prompt's std); torch_sums: take the per-row sum and ||h||^2 from torch's own calls.
// Returns stats (4 + 2 E + 2, B) float64 in the order of metrics.hidden_statistic_names (mean, mean_abs, std,
// max_abs, near_zero_<eps>..., near_zero_relative_<eps>..., hoyer, nonfinite_tokens) and the mean-pooled vectors
// (B, D) float32 (empty without pool_weights).
std::vector<at::Tensor> hidden_statistics(const at::Tensor& hidden, const at::Tensor& is_real,
                                          const at::Tensor& pool_weights, const std::vector<double>& epsilons,
                                          bool torch_sums) {
  RECORD_FUNCTION("compendium::hidden_statistics", std::vector<c10::IValue>());
  const auto dtype = hidden.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "hidden must be float32, bfloat16 or float16");
  TORCH_CHECK(hidden.dim() == 3 && hidden.is_contiguous(), "hidden must be a contiguous (B, T, D) tensor");
  const int64_t B = hidden.size(0), T = hidden.size(1), D = hidden.size(2);
  TORCH_CHECK(is_real.scalar_type() == at::kBool && is_real.is_contiguous() && is_real.dim() == 2 &&
                  is_real.size(0) == B && is_real.size(1) == T,
              "is_real must be a contiguous bool (B, T) tensor like hidden");
  const int64_t E = static_cast<int64_t>(epsilons.size());
  TORCH_CHECK(E <= kMaxThresholds, "at most ", kMaxThresholds, " thresholds");
  const bool pool = pool_weights.numel() > 0;
  const void* base = hidden.data_ptr();
  const bool* real = is_real.data_ptr<bool>();
  const auto f64 = hidden.options().dtype(at::kDouble), f32 = hidden.options().dtype(at::kFloat);
  const RowFunctions functions = row_functions(E);
  const int64_t plane = B * T, threads = at::get_num_threads();
  const bool convert = dtype != at::kFloat;
  std::vector<float> scratch(convert ? threads * D : 0);
  std::vector<int64_t> n_real(B, 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) n_real[b] += real[b * T + t];

  at::Tensor given_sums, given_squares;  // torch's own per-row sums, if asked
  if (torch_sums) {
    const auto values = hidden.to(at::kFloat);
    given_sums = values.sum(-1).contiguous();
    given_squares = at::linalg_vector_norm(values, 2, {-1}).square().contiguous();
  }
  const float* sums_given = torch_sums ? given_sums.data_ptr<float>() : nullptr;
  const float* squares_given = torch_sums ? given_squares.data_ptr<float>() : nullptr;

  // sweep 1: first = (sum, ||h||^2, sum |h|, counts |h| < eps...) per row, 0 on padding, as the reference stacks it
  auto first = at::zeros({3 + E, B, T}, f64);
  auto row_squares = at::zeros({B, T}, f32);
  std::vector<float> row_max(plane, 0.f), absolute(E);
  double* first_data = first.data_ptr<double>();
  float* squares_data = row_squares.data_ptr<float>();
  for (int64_t k = 0; k < E; ++k) absolute[k] = static_cast<float>(epsilons[k]);  // torch compares in float32
  at::parallel_for(0, plane, grain(D), [&](int64_t begin, int64_t end) {
    float* row_buffer = convert ? scratch.data() + at::get_thread_num() * D : nullptr;
    RowStatistics statistics;
    for (int64_t row = begin; row < end; ++row) {
      if (!real[row]) continue;
      const float* x = float_row(base, dtype, row, D, row_buffer);
      functions.statistics(x, D, absolute.data(), statistics);
      const float squares = torch_sums ? squares_given[row] : statistics.squares;
      first_data[row] = torch_sums ? sums_given[row] : statistics.sum;
      first_data[plane + row] = squares;
      first_data[2 * plane + row] = statistics.magnitude;
      for (int64_t k = 0; k < E; ++k) first_data[(3 + k) * plane + row] = statistics.counts[k];
      squares_data[row] = squares;
      row_max[row] = statistics.max_abs;
    }
  });

  // over tokens (the reference's own calls): sum over real tokens / (real tokens x D); std from mean and mean square
  std::vector<double> count(B);
  for (int64_t b = 0; b < B; ++b) count[b] = static_cast<double>(n_real[b]) * static_cast<double>(D);
  const auto first_sums = first.sum(-1).contiguous();
  const auto count_tensor = at::from_blob(count.data(), {B}, at::TensorOptions().dtype(at::kDouble));
  const auto moments = first_sums.narrow(0, 0, 2) / count_tensor;
  const auto mean = moments[0], mean_square = moments[1];
  const auto std_dev = at::sqrt((mean_square - mean * mean).clamp_min(0.0)).contiguous();
  const auto row_norms = at::sqrt(row_squares);  // the reference's squares.sqrt(), torch's float32 sqrt
  const double* std_data = std_dev.data_ptr<double>();
  const float* norms_data = row_norms.data_ptr<float>();

  // sweep 2: second = (counts |h| < eps * std..., Hoyer term x D, non-finite flag x D) per row
  std::vector<float> relative(B * E);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < E; ++k) relative[b * E + k] = static_cast<float>(epsilons[k] * std_data[b]);
  auto second = at::zeros({E + 2, B, T}, f64);
  double* second_data = second.data_ptr<double>();
  const double root = std::sqrt(static_cast<double>(D));
  at::parallel_for(0, plane, grain(D), [&](int64_t begin, int64_t end) {
    float* row_buffer = convert ? scratch.data() + at::get_thread_num() * D : nullptr;
    int32_t counts[kMaxThresholds];
    for (int64_t row = begin; row < end; ++row) {
      if (!real[row]) continue;
      if (E > 0) {
        const float* x = float_row(base, dtype, row, D, row_buffer);
        functions.counts(x, D, relative.data() + (row / T) * E, counts);
        for (int64_t k = 0; k < E; ++k) second_data[k * plane + row] = counts[k];
      }
      // metrics.hoyer_sparsity(sum |h|, sqrt(||h||^2), D) * D and the non-finite flag x D
      const float l1 = static_cast<float>(first_data[2 * plane + row]);
      const double l2 = norms_data[row];
      const double ratio = l2 > 0 ? static_cast<double>(l1) / l2 : 1.0;
      second_data[E * plane + row] = (root - ratio) / (root - 1.0) * static_cast<double>(D);
      second_data[(E + 1) * plane + row] = std::isfinite(l1) ? 0.0 : static_cast<double>(D);
    }
  });
  const auto second_sums = second.sum(-1).contiguous();

  // the (S, B) table: mean, mean_abs, std, max_abs, near_zero..., near_zero_relative..., hoyer, nonfinite_tokens
  auto stats = at::empty({4 + 2 * E + 2, B}, f64);
  double* out = stats.data_ptr<double>();
  const double* over_first = first_sums.data_ptr<double>();
  const double* over_second = second_sums.data_ptr<double>();
  const double* moments_data = moments.contiguous().data_ptr<double>();
  for (int64_t b = 0; b < B; ++b) {
    double best = 0.0;  // max over the prompt's real tokens (padding counts as 0, as the reference's where)
    bool nan = false;
    for (int64_t t = 0; t < T; ++t) {
      const float m = row_max[b * T + t];
      nan |= std::isnan(m);
      best = std::max(best, static_cast<double>(m));
    }
    out[0 * B + b] = moments_data[b];
    out[1 * B + b] = over_first[2 * B + b] / count[b];
    out[2 * B + b] = std_data[b];
    out[3 * B + b] = nan ? std::numeric_limits<double>::quiet_NaN() : best;
    for (int64_t k = 0; k < E; ++k) out[(4 + k) * B + b] = over_first[(3 + k) * B + b] / count[b];
    for (int64_t k = 0; k < E + 2; ++k) out[(4 + E + k) * B + b] = over_second[k * B + b] / count[b];
  }

  at::Tensor pooled = at::empty({0}, f32);
  if (pool) {  // metrics.mean_pooled, call for call
    TORCH_CHECK(pool_weights.scalar_type() == at::kFloat && pool_weights.dim() == 2 && pool_weights.size(0) == B &&
                    pool_weights.size(1) == T,
                "pool_weights must be float32 (B, T)");
    const auto values = hidden.to(at::kFloat);
    pooled = at::bmm(pool_weights.unsqueeze(1), values).select(1, 0);
    const float* p = pooled.data_ptr<float>();
    bool finite = true;
    for (int64_t i = 0; i < B * D; ++i) finite &= std::isfinite(p[i]);
    if (!finite) {  // a non-finite value, on a real token or on padding
      pooled = at::bmm(pool_weights.unsqueeze(1), at::where(is_real.unsqueeze(-1), values, 0.0)).select(1, 0);
    }
  }
  return {stats, pooled};
}
