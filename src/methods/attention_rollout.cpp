// Attention rollout (Abnar & Zuidema, ACL 2020, "Quantifying Attention Flow in Transformers"): how much
// each token's information reaches the class token through all blocks, from attention alone. Per block,
// the heads' attention is fused (--head-fusion: mean, as in the paper, or max or min, the alternatives
// of the common implementations), the residual path is accounted for as the identity, Â = (A + I) / 2,
// with rows renormalised to sum to 1; the blocks are multiplied in order, R = Â_L ... Â_1, and the map is
// the class token's row of R over the patch grid. Class-agnostic: every target gets the same map.
//
// --discard-ratio (jacobgil/vit-explain's option, 0 by default) sets the lowest fraction of each fused
// attention's entries to zero before the identity is added, keeping the class token's attention to
// itself. Unlike vit-explain, rows are renormalised (that code divides by column sums, through a
// broadcast) and every image of a batch is discarded on its own.
#include "methods/kit/attention.h"

LUMEN_METHOD(attention_rollout) {
  Method m("attention-rollout", "Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers", Family::Attention, Space::Attention);
  m.needs.attention = AttentionNeed::Maps;
  m.params = {choice("head_fusion", "mean", {"mean", "max", "min"}, "attention-rollout: how a block's attention heads are fused"),
              number("discard_ratio", 0.0, 0.0, 0.99,
                     "attention-rollout: the fraction of each block's lowest attention entries set to zero before the rollout")};
  m.compute = [](const Evidence& e, size_t) {
    const std::string fusion = e.settings->text("head_fusion");
    const double discard = e.settings->number("discard_ratio");
    torch::Tensor rollout;
    for (const auto& a : e.attention.maps) {
      auto fused = fusion == "mean" ? a.mean(1) : fusion == "max" ? std::get<0>(a.max(1)) : std::get<0>(a.min(1));
      const int64_t n = fused.size(0), t = fused.size(-1);
      const auto drop = static_cast<int64_t>(static_cast<double>(t * t) * discard);
      if (drop > 0) {
        auto flat = fused.reshape({n, t * t}).clone();
        auto lowest = std::get<1>(flat.topk(drop, 1, /*largest=*/false));
        flat.scatter_(1, lowest, 0.0);
        flat.select(1, 0).copy_(fused.reshape({n, t * t}).select(1, 0));  // the class token's own attention stays
        fused = flat.reshape({n, t, t});
      }
      auto hat = (fused + identities(fused)) / 2;
      hat = hat / hat.sum(-1, /*keepdim=*/true);
      rollout = rollout.defined() ? torch::matmul(hat, rollout) : hat;
    }
    return Result{class_row_over_grid(rollout, e.attention.tokens)};
  };
  return m;
}
