// Internal: batch norms folded into the convolutions before them, for lumen's fast forward.
#pragma once

#include <torch/script.h>

#include <optional>
#include <set>
#include <string>

namespace lumen::detail {

// A copy of `module` (eval mode) in which every BatchNorm2d that only reads a Conv2d's output is folded
// into that convolution's weight and bias (LibTorch's FoldConvBatchNorm pass), one op per pair fewer.
// `paths` are the module paths of every folded convolution and batch norm: the folded copy cannot show
// a folded convolution's own output, so a forward that taps or replaces one of them runs the original.
struct FoldedModule {
  torch::jit::Module module;
  std::set<std::string> paths;
};
// Empty when there is nothing to fold, or when the pass folded a pair this check cannot vouch for (a
// convolution whose output is read elsewhere too): the original then runs as it is.
std::optional<FoldedModule> fold_batch_norms(const torch::jit::Module& module);

}  // namespace lumen::detail
