// Transformer attribution (Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model Explainability for
// Interpreting Bi-Modal and Encoder-Decoder Transformers", eqs. 5-6 for self-attention): the relevance
// of the tokens to each other starts as the identity, R = I, and each block in order adds its
// gradient-weighted attention, R += Ā R with Ā = mean over heads of max(0, ∇A ⊙ A), A the block's
// attention probabilities and ∇A the gradient of the target with respect to them. The map is the class
// token's row of R over the patch grid. Class-specific through ∇A: one forward, one backward.
#include "methods/kit/attention.h"

LUMEN_METHOD(transformer_attribution) {
  Method m("transformer-attribution", "Chefer, Gur & Wolf 2021, Generic Attention-model Explainability", Family::Attention, Space::Attention);
  m.needs.attention = AttentionNeed::MapsAndGradients;
  m.compute = [](const Evidence& e, size_t) {
    const auto& maps = e.attention.maps;
    torch::Tensor relevance = identities(maps[0]).clone();
    for (size_t b = 0; b < maps.size(); ++b) {
      auto weighted = torch::relu(e.attention.gradients[b] * maps[b]).mean(1);
      relevance = relevance + torch::matmul(weighted, relevance);
    }
    return Result{class_row_over_grid(relevance, e.attention.tokens)};
  };
  return m;
}
