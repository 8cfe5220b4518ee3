// Internal: what the attention methods share — a relevance matrix over the tokens read as a map. Both
// rollout and transformer attribution end with R [N,T,T], the tokens' relevance to each other through
// the blocks, and read the class token's row over the patch grid.
#pragma once

#include "methods/kit/method.h"

namespace lumen::detail {

// The class token's row of R ([N,T,T]) over the grid's tokens, as [N,grid_h,grid_w]. The class token is
// the first token (torchvision, timm, DeiT: the prefix tokens are class, distillation, registers, in
// that order). A model without prefix tokens pools its tokens: the grid tokens' rows are averaged.
torch::Tensor class_row_over_grid(const torch::Tensor& relevance, const TokenLayout& tokens);

// The identity over T tokens, one per image: [N,T,T], in `like`'s dtype.
torch::Tensor identities(const torch::Tensor& like);

}  // namespace lumen::detail
