// One layer's hidden-state statistics in one call on the CPU (helpers/core/kernels/__init__.py builds and loads it).
//
// What metrics.hidden_state_statistics computes with about thirty torch operations, here in two parallel
// sweeps over the token rows of hidden (B, T, D), padding rows skipped:
//   sweep 1, one read of each row: the row's sum, sum of squares (as ||h||^2), sum of |h|, max |h| and the
//           counts |h| < eps for every absolute threshold;
//   then each prompt's mean and std (the relative thresholds eps * std need every row of the prompt first);
//   sweep 2, a second read of each row (mostly from cache): the counts |h| < eps * std and the Hoyer terms.
// Exactness: the per-row sums follow the order of torch's own CPU kernels at the same vector width
// (ATen/native/cpu/SumKernel.cpp's cascade sum for `sum` and `abs().sum`, ReduceOpsKernel.cpp's lane
// accumulation for `linalg.vector_norm`; BSD licence), so they equal torch's bit for bit; the square roots of
// the Hoyer terms (torch's float32 sqrt is not always correctly rounded) and the reductions over tokens are the
// reference's own ATen calls on tensors of the same shape. Every statistic, the relative thresholds included,
// is then the reference's number exactly; the Python wrapper checks the per-row sums against torch once per
// process (`torch_sums=true` has torch compute them instead).
// The mean-pooled vectors (metrics.mean_pooled) are torch's batched product, called from here: a float64 sum in
// sweep 1 was within float32 rounding of it, but changed ~0.03% of the float16 vectors the study stores by one
// float16 step; the product costs one more read of the tensor.
// Inputs float32, bfloat16 or float16 (converted to float32 exactly, as the reference's `hidden.float()`).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
// torch's float32 `sum` and `linalg.vector_norm` run 8 lanes wide on x86 whether it dispatches to AVX2 or AVX512
// (their AVX512 kernels are not registered); the replicas use GCC's vector types of exactly that width.
typedef float Lanes __attribute__((vector_size(32)));
constexpr int64_t kWidth = 8;
constexpr int64_t kIlp = 4;     // SumKernel.cpp: ilp_factor
constexpr int64_t kLevels = 4;  // SumKernel.cpp: num_levels

inline Lanes load_lanes(const float* x) {
  Lanes v;
  __builtin_memcpy(&v, x, sizeof v);
  return v;
}

inline Lanes abs_lanes(Lanes v) {
  typedef int32_t Bits __attribute__((vector_size(32)));
  return reinterpret_cast<Lanes>(reinterpret_cast<Bits>(v) & 0x7fffffff);
}

int64_t ceil_log2(int64_t x) {  // ATen/native/cpu/utils.h CeilLog2
  if (x <= 2) return 1;
  return 64 - __builtin_clzll(static_cast<uint64_t>(x - 1));
}

// SumKernel.cpp's row_sum over `size` elements load(0..size-1) (multi_row_sum with ilp rows, then the tail, then
// the partial sums left to right), for a float or a Lanes accumulator.
template <typename Acc, typename Load>
Acc cascade_sum(const Load& load, int64_t size) {
  const int64_t rows = size / kIlp;
  const int64_t level_power = std::max<int64_t>(4, ceil_log2(rows) / kLevels);
  const int64_t level_step = int64_t(1) << level_power;
  const int64_t level_mask = level_step - 1;
  Acc acc[kLevels][kIlp];
  for (auto& level : acc)
    for (auto& value : level) value = Acc{};
  int64_t i = 0;
  for (; i + level_step <= rows;) {
    for (int64_t j = 0; j < level_step; ++j, ++i)
      for (int64_t k = 0; k < kIlp; ++k) acc[0][k] = acc[0][k] + load(i * kIlp + k);
    for (int64_t j = 1; j < kLevels; ++j) {
      for (int64_t k = 0; k < kIlp; ++k) {
        acc[j][k] = acc[j][k] + acc[j - 1][k];
        acc[j - 1][k] = Acc{};
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

// torch's sum of a contiguous row of n floats (of |x| when absolute): SumKernel.cpp's vectorized_inner_sum
// when n >= the vector width, else its scalar_inner_sum.
template <bool absolute>
float torch_row_sum(const float* x, int64_t n) {
  if (n < kWidth) {
    return 0.f + cascade_sum<float>([x](int64_t i) { return absolute ? std::abs(x[i]) : x[i]; }, n);
  }
  const int64_t vectors = n / kWidth;
  const Lanes total = cascade_sum<Lanes>(
      [x](int64_t i) {
        const Lanes v = load_lanes(x + i * kWidth);
        return absolute ? abs_lanes(v) : v;
      },
      vectors);
  float result = 0.f;
  for (int64_t k = vectors * kWidth; k < n; ++k) result += absolute ? std::abs(x[k]) : x[k];
  for (int64_t k = 0; k < kWidth; ++k) result += total[k];
  return 0.f + result;  // CastStoreAccumulate: the output starts at 0
}

// torch's linalg.vector_norm(x, 2) of a contiguous row of n floats, squared as the reference squares it:
// ReduceOpsKernel.cpp's last-dim route (lanes acc += x * x, the lanes added left to right, then the tail) as
// torch's x86 build compiled it: the tail's first four squares rounded and added in turn, any further ones fused
// into the sum (fma).
float torch_row_norm_squared(const float* x, int64_t n) {
  Lanes acc{};
  int64_t d = 0;
  for (; d < n - (n % kWidth); d += kWidth) {
    const Lanes v = load_lanes(x + d);
    acc = acc + v * v;
  }
  float total = acc[0];
  for (int64_t j = 1; j < kWidth; ++j) total = total + acc[j];
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

// max |x| over a row (NaN if any entry is NaN, as torch's amax) and the counts |x| < threshold[k], k < n_thresholds
// (at most kMaxThresholds).
constexpr int64_t kMaxThresholds = 8;

float row_max_and_counts(const float* x, int64_t n, const float* thresholds, int64_t n_thresholds, int32_t* counts) {
  constexpr int64_t width = Vec::size();
  const Vec one(1.f);
  Vec best(0.f), limits[kMaxThresholds], tallies[kMaxThresholds];
  for (int64_t k = 0; k < n_thresholds; ++k) {
    limits[k] = Vec(thresholds[k]);
    tallies[k] = Vec(0.f);
  }
  int64_t d = 0;
  for (; d + width <= n; d += width) {
    const Vec magnitude = Vec::loadu(x + d).abs();
    best = at::vec::maximum(best, magnitude);  // propagates NaN
    for (int64_t k = 0; k < n_thresholds; ++k) tallies[k] = tallies[k] + ((magnitude < limits[k]) & one);
  }
  alignas(64) float lanes[width];
  float result = 0.f;
  bool nan = false;
  best.store(lanes);
  for (int64_t j = 0; j < width; ++j) {
    nan |= std::isnan(lanes[j]);
    result = std::max(result, lanes[j]);
  }
  for (int64_t k = 0; k < n_thresholds; ++k) {
    tallies[k].store(lanes);
    float total = 0.f;  // whole numbers below 2^24: exact
    for (int64_t j = 0; j < width; ++j) total += lanes[j];
    counts[k] = static_cast<int32_t>(total);
  }
  for (; d < n; ++d) {
    const float magnitude = std::abs(x[d]);
    nan |= std::isnan(magnitude);
    result = std::max(result, magnitude);
    for (int64_t k = 0; k < n_thresholds; ++k) counts[k] += magnitude < thresholds[k] ? 1 : 0;
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : result;
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
  for (int64_t i = 0; i < N; ++i) {
    sums.data_ptr<float>()[i] = torch_row_sum<false>(data + i * D, D);
    squares.data_ptr<float>()[i] = torch_row_norm_squared(data + i * D, D);
    magnitudes.data_ptr<float>()[i] = torch_row_sum<true>(data + i * D, D);
  }
  return {sums, squares, magnitudes};
}

// hidden (B, T, D) float32|bfloat16|float16, contiguous; token_mask (B, T), nonzero = a real token;
// epsilons: the thresholds, each used absolutely (|h| < eps) and relatively (|h| < eps * the prompt's std).
// Returns stats (4 + 2 E + 2, B) float64 in the order of metrics.hidden_state_statistics' keys (mean, mean_abs,
// std, max_abs, near_zero_<eps>..., near_zero_relative_<eps>..., hoyer, nonfinite_tokens) and, if pool, the mean
// over real tokens of each prompt's rows (B, D) float32 (else an empty tensor).
std::vector<at::Tensor> hidden_statistics(const at::Tensor& hidden, const at::Tensor& token_mask,
                                          const std::vector<double>& epsilons, bool pool, bool torch_sums) {
  TORCH_CHECK(hidden.dim() == 3 && hidden.is_contiguous(), "hidden must be a contiguous (B, T, D) tensor");
  TORCH_CHECK(token_mask.dim() == 2 && token_mask.size(0) == hidden.size(0) && token_mask.size(1) == hidden.size(1),
              "token_mask must be (B, T) like hidden");
  const auto dtype = hidden.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "hidden must be float32, bfloat16 or float16");
  const int64_t B = hidden.size(0), T = hidden.size(1), D = hidden.size(2);
  const int64_t E = static_cast<int64_t>(epsilons.size());
  TORCH_CHECK(E <= kMaxThresholds, "at most ", kMaxThresholds, " thresholds");
  const void* base = hidden.data_ptr();
  const auto is_real = token_mask.to(at::kBool).contiguous();
  const bool* real = is_real.data_ptr<bool>();
  auto f64 = hidden.options().dtype(at::kDouble);

  // torch's own per-row sums, if asked (the wrapper found the replicas differ from this torch build)
  at::Tensor given_sums, given_squares;
  const float *sums_given = nullptr, *squares_given = nullptr;
  if (torch_sums) {
    const auto values = hidden.to(at::kFloat);
    given_sums = values.sum(-1).contiguous();
    given_squares = at::linalg_vector_norm(values, 2, {-1}).square().contiguous();
    sums_given = given_sums.data_ptr<float>();
    squares_given = given_squares.data_ptr<float>();
  }

  // sweep 1: first = (sum, ||h||^2, sum |h|, counts |h| < eps...) per row, zero on padding, as the reference stacks it
  auto first = at::zeros({3 + E, B, T}, f64);
  auto row_max = at::zeros({B, T}, hidden.options().dtype(at::kFloat));
  auto row_squares = at::zeros({B, T}, hidden.options().dtype(at::kFloat));
  double* first_data = first.data_ptr<double>();
  float* max_data = row_max.data_ptr<float>();
  float* squares_data = row_squares.data_ptr<float>();
  std::vector<float> absolute(E);
  for (int64_t k = 0; k < E; ++k) absolute[k] = static_cast<float>(epsilons[k]);  // torch compares in float32
  const int64_t threads = at::get_num_threads();
  const bool convert = dtype != at::kFloat;
  std::vector<float> scratch(convert ? threads * D : 0);
  const int64_t plane = B * T;
  at::parallel_for(0, plane, grain(D), [&](int64_t begin, int64_t end) {
    const int64_t thread = at::get_thread_num();
    float* row_buffer = convert ? scratch.data() + thread * D : nullptr;
    int32_t counts[kMaxThresholds];
    for (int64_t row = begin; row < end; ++row) {
      if (!real[row]) continue;
      const float* x = float_row(base, dtype, row, D, row_buffer);
      const float sum = torch_sums ? sums_given[row] : torch_row_sum<false>(x, D);
      const float squares = torch_sums ? squares_given[row] : torch_row_norm_squared(x, D);
      first_data[row] = sum;
      first_data[plane + row] = squares;
      squares_data[row] = squares;
      first_data[2 * plane + row] = torch_row_sum<true>(x, D);
      max_data[row] = row_max_and_counts(x, D, absolute.data(), E, counts);
      for (int64_t k = 0; k < E; ++k) first_data[(3 + k) * plane + row] = counts[k];
    }
  });

  // over tokens, with the reference's own calls: (sum over real tokens) / (real tokens x D)
  const auto count = is_real.sum(1).to(at::kDouble) * D;
  const auto over_first = first.sum(-1) / count;
  const auto mean = over_first[0], mean_square = over_first[1];
  const auto std_dev = at::sqrt((mean_square - mean * mean).clamp_min(0.0));

  // each row's L2 norm for the Hoyer term, as the reference's squares.sqrt(): torch's float32 sqrt (not always
  // correctly rounded: it is not std::sqrt) on the same (B, T) tensor
  const auto row_norms = at::sqrt(row_squares);
  const float* norms_data = row_norms.data_ptr<float>();

  // sweep 2: second = (counts |h| < eps * std..., Hoyer x D, non-finite x D) per row
  std::vector<float> relative(B * E);
  const double* std_data = std_dev.contiguous().data_ptr<double>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < E; ++k) relative[b * E + k] = static_cast<float>(epsilons[k] * std_data[b]);
  auto second = at::zeros({E + 2, B, T}, f64);
  double* second_data = second.data_ptr<double>();
  const double root = std::sqrt(static_cast<double>(D));
  at::parallel_for(0, plane, grain(D), [&](int64_t begin, int64_t end) {
    const int64_t thread = at::get_thread_num();
    float* row_buffer = convert ? scratch.data() + thread * D : nullptr;
    int32_t counts[kMaxThresholds];
    for (int64_t row = begin; row < end; ++row) {
      if (!real[row]) continue;
      const float* x = float_row(base, dtype, row, D, row_buffer);
      row_max_and_counts(x, D, relative.data() + (row / T) * E, E, counts);
      for (int64_t k = 0; k < E; ++k) second_data[k * plane + row] = counts[k];
      // metrics.hoyer_sparsity(sum |h|, sqrt(||h||^2), D) * D and the non-finite flag x D, as the reference
      const float l1 = static_cast<float>(first_data[2 * plane + row]);
      const double l2 = norms_data[row];
      const double ratio = l2 > 0 ? static_cast<double>(l1) / l2 : 1.0;
      second_data[E * plane + row] = (root - ratio) / (root - 1.0) * static_cast<double>(D);
      second_data[(E + 1) * plane + row] = std::isfinite(l1) ? 0.0 : static_cast<double>(D);
    }
  });
  const auto over_second = second.sum(-1) / count;
  const auto max_abs = row_max.to(at::kDouble).amax(1);

  std::vector<at::Tensor> parts = {mean, over_first[2], std_dev, max_abs};
  for (int64_t k = 0; k < E; ++k) parts.push_back(over_first[3 + k]);
  for (int64_t k = 0; k < E + 2; ++k) parts.push_back(over_second[k]);
  auto stats = at::stack(parts);

  at::Tensor pooled = at::empty({0}, hidden.options().dtype(at::kFloat));
  if (pool) {  // metrics.mean_pooled, call for call
    const auto values = hidden.to(at::kFloat);
    auto weights = token_mask.to(at::kFloat);
    weights = weights / weights.sum(1, true).clamp_min(1.0);
    pooled = at::bmm(weights.unsqueeze(1), values).select(1, 0);
    if (!at::isfinite(pooled).all().item<bool>()) {  // a non-finite value, on a real token or on padding
      pooled = at::bmm(weights.unsqueeze(1), at::where(is_real.unsqueeze(-1), values, 0.0)).select(1, 0);
    }
  }
  return {stats, pooled};
}
