// One-pass attention with row entropies on the CPU (helpers/core/kernels/__init__.py builds and loads it).
//
// For every query row i, one blocked pass over its allowed keys (online softmax, as in torch's
// ATen/native/cpu/FlashAttentionKernel.cpp, BSD licence, whose structure this follows) keeps
//   m_i  = running max of the scores s_ij = scale * <q_i, k_j>
//   l_i  = sum_j exp(s_ij - m_i)                     (the softmax denominator)
//   a_i  = sum_j exp(s_ij - m_i) (s_ij - m_i)        (the one extra accumulator, always <= 0)
//   o_i  = sum_j exp(s_ij - m_i) v_j
// and when the max moves from m to m' (delta = m' - m >= 0, alpha = exp(-delta)):
//   l' = alpha l,  a' = alpha (a - delta l),  o' = alpha o      (then the new block is added).
// At the end: output o_i / l_i, log-sum-exp m_i + log l_i, entropy H_i = log l_i - a_i / l_i.
// Both terms of H_i are >= 0: nothing cancels, whatever the size of the scores (no key centring).
//
// Inputs are float32 (the Python wrapper converts bf16/fp16 to float32: fp32 accumulation);
// masks: none, causal (key j <= query i), or a bool mask (B|1, H|1, Q, K), True = may attend,
// plus optional per-block key ranges (first, end) for blocks of `range_block` query rows, so a
// sliding window or padding costs only the keys a block may see. Grouped-query heads: query
// head h reads key/value head h / (H / H_kv). Parallel over batch x heads x query blocks
// (at::parallel_for); the two matrix products per tile go to the BLAS torch links (MKL's sgemm_)
// when it exports one, else to plain loops; the row work uses at::vec.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Column-major C(m x n) = alpha op(A) op(B) + beta C, as BLAS.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (sgemm_ != nullptr) {
    const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    const int mi = m, ni = n, ki = k, lda_i = lda, ldb_i = ldb, ldc_i = ldc;
    sgemm_(&ta, &tb, &mi, &ni, &ki, &alpha, a, &lda_i, b, &ldb_i, &beta, c, &ldc_i);
    return;
  }
  // no BLAS exported by this torch build: plain loops (correct, slower)
  for (int64_t col = 0; col < n; ++col) {
    for (int64_t row = 0; row < m; ++row) {
      float total = 0.f;
      for (int64_t l = 0; l < k; ++l) {
        const float x = trans_a ? a[row * lda + l] : a[l * lda + row];
        const float y = trans_b ? b[l * ldb + col] : b[col * ldb + l];
        total += x * y;
      }
      float& out = c[col * ldc + row];
      out = alpha * total + (beta == 0.f ? 0.f : beta * out);
    }
  }
}

float row_max(const float* x, int64_t n) {
  int64_t j = 0;
  float best = kNegInf;
  if (n >= Vec::size()) {
    Vec acc(kNegInf);
    for (; j + Vec::size() <= n; j += Vec::size()) acc = at::vec::maximum(acc, Vec::loadu(x + j));
    best = at::vec::vec_reduce_all<float>([](Vec& u, Vec& v) { return at::vec::maximum(u, v); }, acc);
  }
  for (; j < n; ++j) best = std::max(best, x[j]);
  return best;
}

// x_j <- exp(x_j - m); returns (sum_j exp(x_j - m), sum_j exp(x_j - m) (x_j - m)); masked x_j = -inf give 0, 0.
std::pair<float, float> exp_and_sums(float* x, int64_t n, float m) {
  const Vec vm(m), lowest(std::numeric_limits<float>::lowest());
  Vec vsum(0.f), vacc(0.f);
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) {
    Vec d = Vec::loadu(x + j) - vm;
    Vec p = d.exp_u20();
    p.store(x + j);
    vsum = vsum + p;
    vacc = at::vec::fmadd(p, at::vec::maximum(d, lowest), vacc);  // -inf -> lowest: 0 * lowest = 0, not NaN
  }
  auto add = [](Vec& u, Vec& v) { return u + v; };
  float sum = at::vec::vec_reduce_all<float>(add, vsum), acc = at::vec::vec_reduce_all<float>(add, vacc);
  for (; j < n; ++j) {
    const float d = x[j] - m, p = std::exp(d);
    x[j] = p;
    sum += p;
    acc += p * std::max(d, std::numeric_limits<float>::lowest());
  }
  return {sum, acc};
}

void scale_row(float* x, int64_t n, float factor) {
  const Vec f(factor);
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) (Vec::loadu(x + j) * f).store(x + j);
  for (; j < n; ++j) x[j] *= factor;
}

}  // namespace

bool uses_blas() { return sgemm_ != nullptr; }

// query (B, H, Q, D), key (B, Hkv, K, D), value (B, Hkv, K, Dv): float32, last dim contiguous.
// mask: empty or bool (B|1, H|1, Q, K), last dim contiguous. key_ranges: empty or int64 (ceil(Q / range_block), 2).
// Returns output (B, Q, H, Dv) float32 contiguous (transformers' layout), lse (B, H, Q), entropy (B, H, Q) float32.
// A row with no allowed key: output 0, lse 0 (as torch's CPU flash kernel), entropy 0.
std::vector<at::Tensor> entropy_attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                          const at::Tensor& mask, bool is_causal, double scale,
                                          const at::Tensor& key_ranges, int64_t range_block) {
  RECORD_FUNCTION("compendium::entropy_attention", std::vector<c10::IValue>());
  TORCH_CHECK(query.dim() == 4 && key.dim() == 4 && value.dim() == 4, "query, key, value must be 4-d");
  TORCH_CHECK(query.scalar_type() == at::kFloat && key.scalar_type() == at::kFloat && value.scalar_type() == at::kFloat,
              "float32 inputs only");
  TORCH_CHECK(query.stride(3) == 1 && key.stride(3) == 1 && value.stride(3) == 1, "last dim must be contiguous");
  const int64_t B = query.size(0), H = query.size(1), Q = query.size(2), D = query.size(3);
  const int64_t Hkv = key.size(1), K = key.size(2), Dv = value.size(3);
  TORCH_CHECK(key.size(0) == B && value.size(0) == B && value.size(1) == Hkv && value.size(2) == K && key.size(3) == D,
              "key/value shapes do not match the query");
  TORCH_CHECK(Hkv > 0 && H % Hkv == 0, "query heads must be a multiple of key heads");
  const int64_t groups = H / Hkv;
  const bool has_mask = mask.defined() && mask.numel() > 0;
  if (has_mask) {
    TORCH_CHECK(mask.scalar_type() == at::kBool && mask.dim() == 4 && mask.stride(3) == 1, "mask: bool, 4-d, last dim contiguous");
    TORCH_CHECK((mask.size(0) == 1 || mask.size(0) == B) && (mask.size(1) == 1 || mask.size(1) == H) &&
                    mask.size(2) == Q && mask.size(3) == K,
                "mask must be (B|1, H|1, Q, K)");
  }
  const bool has_ranges = key_ranges.defined() && key_ranges.numel() > 0;
  if (has_ranges) {
    TORCH_CHECK(key_ranges.scalar_type() == at::kLong && key_ranges.dim() == 2 && key_ranges.size(1) == 2 &&
                    key_ranges.is_contiguous() && range_block > 0 && key_ranges.size(0) == (Q + range_block - 1) / range_block,
                "key_ranges must be int64 (ceil(Q / range_block), 2)");
  }

  auto output = at::zeros({B, Q, H, Dv}, query.options());
  auto lse = at::empty({B, H, Q}, query.options());
  auto entropy = at::empty({B, H, Q}, query.options());
  if (B == 0 || H == 0 || Q == 0) return {output, lse, entropy};

  // block sizes as torch's CPU flash kernel (float32)
  int64_t q_split = Q >= 768 ? 256 : (Q >= 192 ? 64 : 32);
  if (has_ranges) q_split = std::min(q_split, range_block);
  const int64_t kv_split = 512;
  const int64_t q_blocks = (Q + q_split - 1) / q_split;

  const float* q_data = query.data_ptr<float>();
  const float* k_data = key.data_ptr<float>();
  const float* v_data = value.data_ptr<float>();
  const bool* m_data = has_mask ? mask.data_ptr<bool>() : nullptr;
  const int64_t* r_data = has_ranges ? key_ranges.data_ptr<int64_t>() : nullptr;
  float* o_data = output.data_ptr<float>();
  float* lse_data = lse.data_ptr<float>();
  float* h_data = entropy.data_ptr<float>();
  const int64_t qsb = query.stride(0), qsh = query.stride(1), qsq = query.stride(2);
  const int64_t ksb = key.stride(0), ksh = key.stride(1), ksk = key.stride(2);
  const int64_t vsb = value.stride(0), vsh = value.stride(1), vsk = value.stride(2);
  const int64_t msb = has_mask && mask.size(0) > 1 ? mask.stride(0) : 0;
  const int64_t msh = has_mask && mask.size(1) > 1 ? mask.stride(1) : 0;
  const int64_t msq = has_mask ? mask.stride(2) : 0;
  const float fscale = static_cast<float>(scale);

  const int64_t threads = at::get_num_threads();
  const int64_t per_thread = q_split * kv_split + q_split * Dv + 3 * q_split;
  std::vector<float> buffer(static_cast<size_t>(threads * per_thread));

  at::parallel_for(0, B * H * q_blocks, 1, [&](int64_t begin, int64_t end) {
    float* scratch = buffer.data() + at::get_thread_num() * per_thread;
    float* qk = scratch;
    float* acc_out = qk + q_split * kv_split;
    float* run_max = acc_out + q_split * Dv;
    float* run_sum = run_max + q_split;
    float* run_acc = run_sum + q_split;
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / (H * q_blocks), h = (index / q_blocks) % H, qb = index % q_blocks;
      const int64_t hk = h / groups;
      const int64_t first = qb * q_split, rows = std::min(q_split, Q - first);
      int64_t key_begin = 0, key_end = K;
      if (has_ranges) {
        key_begin = K;
        key_end = 0;
        for (int64_t r = first / range_block; r <= (first + rows - 1) / range_block; ++r) {
          if (r_data[2 * r + 1] > r_data[2 * r]) {
            key_begin = std::min(key_begin, r_data[2 * r]);
            key_end = std::max(key_end, r_data[2 * r + 1]);
          }
        }
      }
      if (is_causal) key_end = std::min(key_end, first + rows);
      std::fill(run_max, run_max + rows, kNegInf);
      std::fill(run_sum, run_sum + rows, 0.f);
      std::fill(run_acc, run_acc + rows, 0.f);
      std::fill(acc_out, acc_out + rows * Dv, 0.f);
      const float* q_block = q_data + b * qsb + h * qsh + first * qsq;
      for (int64_t kb = key_begin; kb < key_end; kb += kv_split) {
        const int64_t cols = std::min(kv_split, key_end - kb);
        // qk (rows x cols, row-major) = scale * q_block k_block^T
        gemm(true, false, cols, rows, D, fscale, k_data + b * ksb + hk * ksh + kb * ksk, ksk, q_block, qsq, 0.f, qk, cols);
        for (int64_t r = 0; r < rows; ++r) {
          float* row = qk + r * cols;
          const int64_t i = first + r;
          if (is_causal && kb + cols > i + 1) {
            for (int64_t j = std::max<int64_t>(0, i + 1 - kb); j < cols; ++j) row[j] = kNegInf;
          }
          if (has_mask) {
            const bool* allowed = m_data + b * msb + h * msh + i * msq + kb;
            for (int64_t j = 0; j < cols; ++j) row[j] = allowed[j] ? row[j] : kNegInf;
          }
          const float old_max = run_max[r];
          const float new_max = std::max(old_max, row_max(row, cols));
          if (new_max == kNegInf) {  // nothing allowed yet in this row: no probability mass
            std::fill(row, row + cols, 0.f);
            continue;
          }
          const auto [sum, acc] = exp_and_sums(row, cols, new_max);
          if (old_max == kNegInf) {
            run_sum[r] = sum;
            run_acc[r] = acc;
          } else {
            const float delta = new_max - old_max, alpha = std::exp(-delta);
            run_acc[r] = alpha * (run_acc[r] - delta * run_sum[r]) + acc;
            run_sum[r] = alpha * run_sum[r] + sum;
            if (alpha != 1.f) scale_row(acc_out + r * Dv, Dv, alpha);
          }
          run_max[r] = new_max;
        }
        // acc_out (rows x Dv, row-major) += p (rows x cols) v_block (cols x Dv)
        gemm(false, false, Dv, rows, cols, 1.f, v_data + b * vsb + hk * vsh + kb * vsk, vsk, qk, cols, 1.f, acc_out, Dv);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = first + r;
        float* out_row = o_data + ((b * Q + i) * H + h) * Dv;
        const int64_t at = (b * H + h) * Q + i;
        if (run_sum[r] > 0.f) {
          const float log_sum = std::log(run_sum[r]);
          const float inv = 1.f / run_sum[r];
          const float* src = acc_out + r * Dv;
          for (int64_t d = 0; d < Dv; ++d) out_row[d] = src[d] * inv;
          lse_data[at] = run_max[r] + log_sum;
          h_data[at] = log_sum - run_acc[r] * inv;
        } else {  // no allowed key: output stays 0
          lse_data[at] = 0.f;  // as torch's CPU flash kernel returns it
          h_data[at] = 0.f;
        }
      }
    }
  });
  return {output, lse, entropy};
}
