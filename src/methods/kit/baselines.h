// Internal: the reference inputs of path and Shapley methods (DeepLIFT-SHAP, GradientSHAP) as a
// distribution: --baselines K references of kind --baseline, the k-th drawn with seed + k. Only noise
// is random; any other kind is one reference, so its distribution has one member.
#pragma once

#include "methods/kit/method.h"

namespace lumen::detail {

Param baselines_param();  // "baselines": K
// [K,N,C,H,W] (K = 1 unless the kind is noise).
torch::Tensor baseline_distribution(const Evidence& e);

}  // namespace lumen::detail
