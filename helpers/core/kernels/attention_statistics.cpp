// One layer's attention statistics from its row entropies, in one call on the CPU (built with the other kernels).
//
// What streaming's recorder did with a dozen torch operations per layer (metrics.attention_entropy_per_head and
// metrics.normalized_row_entropy_sums): the sum over real query rows of each head's row entropies, and the sum and
// count of row entropy / log(keys the row may attend to) over real rows with more than one key. In float64, rows
// in order (torch sums in its cascade order: the two agree to float64 rounding).
#include <torch/extension.h>

#include <ATen/record_function.h>

#include <cmath>
#include <vector>

// rows (B, H, Q) float32|float64; query_mask (B, Q) bool: the real query rows; n_keys (B, 1|H, Q) float64: the keys
// each row may attend to. Returns per-head sums (B, H), normalised sums (B,) and their counts (B,), float64.
std::vector<at::Tensor> attention_statistics(const at::Tensor& rows, const at::Tensor& query_mask,
                                             const at::Tensor& n_keys) {
  RECORD_FUNCTION("compendium::attention_statistics", std::vector<c10::IValue>());
  TORCH_CHECK(rows.dim() == 3 && (rows.scalar_type() == at::kFloat || rows.scalar_type() == at::kDouble),
              "rows must be float32 or float64 (B, H, Q)");
  const int64_t B = rows.size(0), H = rows.size(1), Q = rows.size(2);
  TORCH_CHECK(query_mask.scalar_type() == at::kBool && query_mask.dim() == 2 && query_mask.size(0) == B &&
                  query_mask.size(1) == Q,
              "query_mask must be bool (B, Q)");
  TORCH_CHECK(n_keys.scalar_type() == at::kDouble && n_keys.dim() == 3 && n_keys.size(0) == B &&
                  (n_keys.size(1) == 1 || n_keys.size(1) == H) && n_keys.size(2) == Q,
              "n_keys must be float64 (B, 1|H, Q)");
  const auto values = rows.to(at::kDouble).contiguous();
  const auto real = query_mask.contiguous();
  const auto keys = n_keys.contiguous();
  const double* v = values.data_ptr<double>();
  const bool* r = real.data_ptr<bool>();
  const double* k = keys.data_ptr<double>();
  const int64_t key_heads = keys.size(1);
  auto options = rows.options().dtype(at::kDouble);
  auto heads = at::empty({B, H}, options), sums = at::empty({B}, options), counts = at::empty({B}, options);
  double* heads_data = heads.data_ptr<double>();
  for (int64_t b = 0; b < B; ++b) {
    double normalized = 0.0, kept = 0.0;
    for (int64_t h = 0; h < H; ++h) {
      const double* row = v + (b * H + h) * Q;
      const double* allowed = k + (b * key_heads + (key_heads > 1 ? h : 0)) * Q;
      double total = 0.0;
      for (int64_t q = 0; q < Q; ++q) {
        if (!r[b * Q + q]) continue;
        total += row[q];
        if (allowed[q] > 1.0) {
          normalized += row[q] / std::log(allowed[q]);
          kept += 1.0;
        }
      }
      heads_data[b * H + h] = total;
    }
    sums.data_ptr<double>()[b] = normalized;
    counts.data_ptr<double>()[b] = kept;
  }
  return {heads, sums, counts};
}
