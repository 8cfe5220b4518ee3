#include "methods/kit/attention.h"

namespace lumen::detail {

torch::Tensor class_row_over_grid(const torch::Tensor& relevance, const TokenLayout& tokens) {
  const int64_t n = relevance.size(0);
  auto rows = tokens.prefix > 0 ? relevance.select(1, 0) : relevance.slice(1, tokens.prefix).mean(1);
  return rows.slice(1, tokens.prefix).reshape({n, tokens.grid_h, tokens.grid_w});
}

torch::Tensor identities(const torch::Tensor& like) {
  const int64_t n = like.size(0), t = like.size(-1);
  return torch::eye(t, like.options()).expand({n, t, t});
}

}  // namespace lumen::detail
