// The Python module of the CPU kernels (helpers/core/kernels/__init__.py builds it from the four sources).
#include <torch/extension.h>

#include <vector>

std::vector<at::Tensor> entropy_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                          const at::Tensor& mask, bool is_causal, double scale,
                                          const at::Tensor& key_ranges, int64_t range_block);
bool uses_blas();
std::vector<at::Tensor> hidden_statistics(const at::Tensor& hidden, const at::Tensor& is_real,
                                          const at::Tensor& pool_weights, const std::vector<double>& epsilons,
                                          bool torch_sums);
std::vector<at::Tensor> row_sums(const at::Tensor& rows);
std::vector<at::Tensor> attention_statistics(const at::Tensor& rows, const at::Tensor& query_mask,
                                             const at::Tensor& n_keys);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("entropy_attention", &entropy_attention,
        "One-pass attention: output (B, Q, H, Dv), log-sum-exp and row entropy (B, H, Q)");
  m.def("uses_blas", &uses_blas, "True when the tile products go to the BLAS sgemm_ torch links");
  m.def("hidden_statistics", &hidden_statistics,
        "One layer's hidden-state statistics (S, B) float64 and mean-pooled vectors (B, D) float32");
  m.def("attention_statistics", &attention_statistics,
        "One layer's per-head entropy sums (B, H) and normalised sums and counts (B,) from its row entropies");
  m.def("row_sums", &row_sums, "Per-row sum, squared L2 norm and sum of |x| of a (N, D) float32 tensor, as torch");
}
