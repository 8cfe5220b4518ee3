// Internal: non-negative matrix factorisation X ≈ W H (W, H >= 0) by Lee & Seung's multiplicative
// updates for the Frobenius loss, step for step as scikit-learn's NMF(solver="mu", beta_loss=2) with no
// regularisation: W first, then H, each iteration; a zero denominator becomes float32's epsilon; every
// 10 iterations the fit stops once (previous error - error) / initial error < tol, the error being
// ||X - W H||_F. Written here because no Debian C++ package ships NMF, and the update is a few matrix
// products that LibTorch already does well.
//
// The start is scikit-learn's init="random" drawn from a torch generator seeded with `seed`:
// avg = sqrt(mean(X) / k); H0 = avg |randn(k, M)|, then W0 = avg |randn(C, k)| (float32 draws, as
// torch.randn(..., generator=torch.Generator().manual_seed(seed)) gives them in Python).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace lumen::detail {

struct Factorisation {
  torch::Tensor w, h;          // [C,k], [k,M], in X's dtype
  int64_t iterations = 0;      // updates run
  double relative_error = 0;   // ||X - W H||_F / ||X||_F (0 when X is 0)
};

// X: [C,M], non-negative, float64 advised (the updates are ratios of small products).
Factorisation nmf(const torch::Tensor& x, int64_t k, int64_t max_iterations, double tol, uint64_t seed);

}  // namespace lumen::detail
