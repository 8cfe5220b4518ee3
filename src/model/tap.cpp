// Layer capture by graph rewriting.
//
// Why a rewrite: C++ forward hooks never fire on a loaded TorchScript module (hooks are compiled into
// call sites at script time), so the only way to reach an intermediate output of an unmodified model is
// to change lumen's own copy of its forward graph. The copy is never written back to the module: two
// submodules of one class share one method graph, so editing it in place would tap both.
#include "model/tap.h"

#include <lumen/error.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/jit.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

namespace lumen::detail {
namespace {

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

// The tap op. Under inference mode nothing can require grad, so the value passes through; when the
// input already requires grad (pixel-space methods ask for input gradients) the value itself is the
// capture, so gradients still flow through it to the input. Integer tensors (an ONNX graph's shape
// arithmetic) have no gradient and pass through too.
at::Tensor tap(const at::Tensor& x) {
  if (c10::InferenceMode::is_enabled() || x.requires_grad() || !x.is_floating_point()) return x;
  return x.detach().requires_grad_(true);
}

// clamp(x, lo, hi) whose backward follows a rule (Springenberg et al. 2015; Zeiler & Fergus 2013):
//   guided:    g_in = max(g_out, 0) * [lo < x < hi]   (positive gradient, and only where the unit passed)
//   deconvnet: g_in = max(g_out, 0)                   (positive gradient, whatever the forward input)
//   rescale:   g_in = g_out * m, m = (f(x) - f(x0)) / (x - x0) against the reference row x0 (DeepLIFT,
//              Shrikumar et al. 2017, sec. 3.5.1; the batch is [inputs; references]); where |x - x0| is
//              below 1e-10 (Captum's eps), m is the plain gradient. Both halves get the inputs' m, as
//              Captum's DeepLift does; only the inputs' half carries the target's gradient.
// relu is clamp(x, 0, inf), ReLU6 / hardtanh(0, 6) is clamp(x, 0, 6).
at::Tensor clamp_between(const at::Tensor& x, double lo, double hi) {
  return at::clamp(x, std::isinf(lo) ? c10::optional<at::Scalar>() : c10::optional<at::Scalar>(lo),
                   std::isinf(hi) ? c10::optional<at::Scalar>() : c10::optional<at::Scalar>(hi));
}

thread_local RescaleTape::Units* g_rescale_tape = nullptr;

// The multiplier against references from a tape: x0 is one row or one per row of x. In place where it
// can be (the same reasoning as the identity rule below).
at::Tensor taped_rescale_multiplier(const at::Tensor& x, const at::Tensor& x0, double lo, double hi) {
  auto din = x - x0;
  auto m = clamp_between(x, lo, hi);
  m.sub_(clamp_between(x0, lo, hi)).div_(din);
  const auto tiny = din.abs_() < 1e-10;
  auto plain = x > lo;
  if (!std::isinf(hi)) plain.logical_and_(x < hi);
  return at::where(tiny, plain.to(m.scalar_type()), m);
}

// out = f(g, x, x0) element by element, in one pass over tensors of one shape; x0 has that shape, or
// is one row of it that every row shares. Why by hand: ATen has no fused op for the rules' backward,
// and as chains of ATen ops they took several passes over each activation of the network (the rescale
// multiplier about a dozen), most of the rule graphs' backward. Float and double on the CPU; for
// anything else it returns an undefined tensor and the caller takes the ATen chain.
template <typename F>
at::Tensor pointwise(const at::Tensor& g, const at::Tensor& x, const at::Tensor& x0, F f) {
  const auto type = x.scalar_type();
  if (!x.is_cpu() || x.dim() == 0 || (type != at::kFloat && type != at::kDouble) || g.scalar_type() != type || x0.scalar_type() != type ||
      g.sizes() != x.sizes())
    return {};
  // One memory format for all three, so that element i of a row is the same unit in each.
  const auto format = x.suggest_memory_format();
  const auto xc = x.contiguous(format), x0c = x0.contiguous(format), gc = g.contiguous(format);
  auto out = at::empty_like(xc);
  const int64_t per_row = std::max<int64_t>(1, xc.numel() / std::max<int64_t>(1, xc.size(0)));
  const bool shared = x0c.size(0) == 1 && xc.size(0) != 1;
  AT_DISPATCH_FLOATING_TYPES(type, "lumen_rule_backward", [&] {
    const scalar_t *px = xc.data_ptr<scalar_t>(), *p0 = x0c.data_ptr<scalar_t>(), *pg = gc.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, xc.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {
        const int64_t row = i / per_row, row_end = std::min(end, (row + 1) * per_row), shift = shared ? row * per_row : 0;
        for (; i < row_end; ++i) po[i] = f(pg[i], px[i], p0[i - shift]);
      }
    });
  });
  return out;
}

// The taped multiplier times the incoming gradient g.
at::Tensor taped_rescale_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& x0, double lo, double hi) {
  auto out = pointwise(g, x, x0, [lo, hi](auto gi, auto a, auto a0) {
    using T = decltype(a);
    const T l = static_cast<T>(lo), h = static_cast<T>(hi), d = a - a0;
    return gi * (std::abs(d) < T(1e-10) ? T(a > l && a < h) : (std::min(std::max(a, l), h) - std::min(std::max(a0, l), h)) / d);
  });
  return out.defined() ? out : taped_rescale_multiplier(x, x0, lo, hi).mul_(g);
}

// The paired form: rows are [inputs; references], and both halves take the inputs' multiplier.
at::Tensor paired_rescale_backward(const at::Tensor& g, const at::Tensor& x, double lo, double hi) {
  TORCH_CHECK(x.size(0) % 2 == 0, "lumen: the rescale rule needs rows as inputs then references, got ", x.size(0), " rows");
  const auto halves = x.chunk(2), gs = g.chunk(2);
  return at::cat({taped_rescale_backward(gs[0], halves[0], halves[1], lo, hi), taped_rescale_backward(gs[1], halves[0], halves[1], lo, hi)});
}

class RuleClamp : public torch::autograd::Function<RuleClamp> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, double lo, double hi, int64_t rule) {
    ctx->saved_data["lo"] = lo;
    ctx->saved_data["hi"] = hi;
    ctx->saved_data["rule"] = rule;
    auto* tape = rule == static_cast<int64_t>(BackwardRule::Rescale) ? g_rescale_tape : nullptr;
    if (tape && !tape->replaying) {
      // Cloned: the network may later write into its own pre-activations in place.
      tape->inputs.push_back(x.detach().clone());
    } else if (tape) {
      const at::Tensor* x0 = tape->next < tape->inputs.size() ? &tape->inputs[tape->next] : nullptr;
      ++tape->next;
      const bool fits = x0 && x0->dim() == x.dim() && x.dim() > 0 && (x0->size(0) == 1 || x0->size(0) == x.size(0)) &&
                        x0->sizes().slice(1) == x.sizes().slice(1);
      if (fits) {
        ctx->save_for_backward({x, *x0});
        return clamp_between(x, lo, hi);
      }
      tape->mismatch = true;
      ctx->saved_data["rule"] = static_cast<int64_t>(BackwardRule::Plain);  // discarded by the caller, but finite
    }
    ctx->save_for_backward({x});
    return clamp_between(x, lo, hi);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list g) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    double lo = ctx->saved_data["lo"].toDouble(), hi = ctx->saved_data["hi"].toDouble();
    const auto rule = ctx->saved_data["rule"].toInt();
    if (rule == static_cast<int64_t>(BackwardRule::Rescale) && saved.size() == 2)
      return {taped_rescale_backward(g[0], x, saved[1], lo, hi), at::Tensor(), at::Tensor(), at::Tensor()};
    if (rule == static_cast<int64_t>(BackwardRule::Rescale)) return {paired_rescale_backward(g[0], x, lo, hi), at::Tensor(), at::Tensor(), at::Tensor()};
    if (rule == static_cast<int64_t>(BackwardRule::Plain)) {
      auto open = (x > lo);
      if (!std::isinf(hi)) open.logical_and_(x < hi);
      return {g[0] * open, at::Tensor(), at::Tensor(), at::Tensor()};
    }
    const auto none = at::Tensor();
    if (rule == static_cast<int64_t>(BackwardRule::Lrp)) {
      // The identity rule: f(x) / x, which for ReLU is its derivative; at x = 0 the unit's slope there.
      const double at_zero = lo < 0 && hi > 0 ? 1.0 : 0.0;
      if (auto out = pointwise(g[0], x, x, [lo, hi, at_zero](auto gi, auto a, auto) {
            using T = decltype(a);
            return a == T(0) ? gi * T(at_zero) : gi * (std::min(std::max(a, T(lo)), T(hi)) / a);
          });
          out.defined())
        return {out, none, none, none};
      auto ratio = clamp_between(x, lo, hi);
      ratio.div_(x).masked_fill_(x == 0, at_zero);
      return {ratio.mul_(g[0]), none, none, none};
    }
    if (rule == static_cast<int64_t>(BackwardRule::Guided)) {
      // Positive gradient where the unit passed.
      if (auto out = pointwise(g[0], x, x, [lo, hi](auto gi, auto a, auto) {
            using T = decltype(a);
            return gi > T(0) && a > T(lo) && a < T(hi) ? gi : T(0);
          });
          out.defined())
        return {out, none, none, none};
      auto open = (x > lo).logical_and_(x < hi);
      return {g[0].clamp_min(0).mul_(open), none, none, none};
    }
    return {g[0].clamp_min(0), none, none, none};
  }
};

at::Tensor rule_clamp(const at::Tensor& x, double lo, double hi, int64_t rule) { return RuleClamp::apply(x, lo, hi, rule); }

thread_local double g_lrp_epsilon = 1e-9;

// The LRP-epsilon rule at a linear-like layer's output z (the identity forward): the gradient times
// z / (z + eps sign z), sign 0 counted positive. In gradient-times-input form this is relevance
// R_j = a_j sum_k w_jk R_k / (z_k + eps sign z_k) (Bach et al. 2015; Montavon et al. 2019, eq. 2).
// `copy`: the forward's output is a copy of z, for a graph that may later write into it in place (a
// residual's add_), which would change the z the backward reads; otherwise an alias of z (the graph
// pass mark_lrp_copies decides). Not z itself: autograd then wraps the output as a view of the input,
// and a batch-1 LRP ran 20 % slower than with the copy (measured on MobileNetV2 here).
class LrpEpsilonFn : public torch::autograd::Function<LrpEpsilonFn> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& z, bool copy) {
    ctx->saved_data["eps"] = g_lrp_epsilon;
    ctx->save_for_backward({z});
    return copy ? z.clone() : z.alias();
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list g) {
    const auto z = ctx->get_saved_variables()[0];
    const double eps = ctx->saved_data["eps"].toDouble();
    // z / (z + eps sign z) = |z| / (|z| + eps); 0 where z = 0, which eps = 0 would make 0 / 0.
    if (auto out = pointwise(g[0], z, z, [eps](auto gi, auto zi, auto) {
          using T = decltype(zi);
          const T a = std::abs(zi);
          return a == T(0) ? T(0) : gi * (a / (a + T(eps)));
        });
        out.defined())
      return {out, at::Tensor()};
    auto factor = z.abs();
    factor.div_(factor + eps);
    if (eps == 0) factor.masked_fill_(z == 0, 0.0);
    return {factor.mul_(g[0]), at::Tensor()};
  }
};

at::Tensor lrp_epsilon(const at::Tensor& z, bool copy) {
  if (!z.is_floating_point()) return z;
  return LrpEpsilonFn::apply(z, copy);
}

thread_local LrpRuleSet g_lrp_rules;

// rho(w) of the gamma (rule 1) and alpha1beta0 (rule 2) rules. gamma is in the graph, not read when it
// runs: weights stored as constants (ONNX imports) are folded with it when the graph is made.
at::Tensor lrp_weight(const at::Tensor& w, double gamma, int64_t rule) {
  const auto positive = w.detach().clamp_min(0);
  return rule == 1 ? w.detach() + gamma * positive : positive;
}

// A layer under a rule with modified weights: forward z (the network's own output), backward through
// z' (the same layer with rho(w), built beside it) with the gradient times z / (z' + eps sign z'):
// in gradient-times-input form R_j = a_j sum_k rho(w_jk) R_k / (z'_k + eps sign z'_k). Nothing flows
// back through z itself. `copy` as for the epsilon rule (mark_lrp_copies decides).
class LrpMixFn : public torch::autograd::Function<LrpMixFn> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& z, const at::Tensor& modified, bool copy) {
    ctx->saved_data["eps"] = g_lrp_epsilon;
    ctx->save_for_backward({z.detach(), modified.detach()});
    return copy ? z.detach().clone() : z.detach().alias();
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list g) {
    const auto saved = ctx->get_saved_variables();
    const auto &z = saved[0], &zm = saved[1];
    const double eps = ctx->saved_data["eps"].toDouble();
    // z / (z' + eps sign z'), sign 0 counted positive; 0 where the denominator is.
    if (auto out = pointwise(g[0], z, zm, [eps](auto gi, auto zi, auto mi) {
          using T = decltype(zi);
          const T d = mi + (mi >= T(0) ? T(eps) : T(-eps));
          return d == T(0) ? T(0) : gi * (zi / d);
        });
        out.defined())
      return {at::Tensor(), out, at::Tensor()};
    const auto stabilised = zm + eps * at::where(zm >= 0, at::ones_like(zm), -at::ones_like(zm));
    auto factor = z / at::where(stabilised == 0, at::ones_like(stabilised), stabilised);
    factor.masked_fill_(stabilised == 0, 0.0);
    return {at::Tensor(), factor * g[0], at::Tensor()};
  }
};

at::Tensor lrp_mix(const at::Tensor& z, const at::Tensor& modified, bool copy) { return LrpMixFn::apply(z, modified, copy); }

// Where lumen::attention_tap records, per thread: a forward that records attention opens it.
thread_local AttentionMaps* g_attention = nullptr;

// Follows every softmax in an attention forward. A square last pair of dimensions ([..., T, T]) is an
// attention map; it is recorded as a leaf that requires grad (or as itself when it already requires
// grad), like a layer tap, so that gradients with respect to it can be taken.
at::Tensor attention_tap(const at::Tensor& x, std::string scope) {
  if (!g_attention || c10::InferenceMode::is_enabled() || x.dim() < 3 || x.size(-1) != x.size(-2) || !x.is_floating_point()) return x;
  at::Tensor out = x.requires_grad() || !at::GradMode::is_enabled() ? x : x.detach().requires_grad_(true);
  g_attention->maps.push_back(out);
  g_attention->scopes.push_back(std::move(scope));
  return out;
}

TORCH_LIBRARY(lumen, m) {
  m.def("tap(Tensor x) -> Tensor", tap);
  m.def("rule_clamp(Tensor x, float lo, float hi, int rule) -> Tensor", rule_clamp);
  m.def("attention_tap(Tensor x, str scope) -> Tensor", attention_tap);
  m.def("lrp_epsilon(Tensor z, bool copy=True) -> Tensor", lrp_epsilon);
  m.def("lrp_weight(Tensor w, float gamma, int rule) -> Tensor", lrp_weight);
  m.def("lrp_mix(Tensor z, Tensor modified, bool copy=True) -> Tensor", lrp_mix);
}

const c10::Symbol kTap = c10::Symbol::fromQualString("lumen::tap");
const c10::Symbol kRuleClamp = c10::Symbol::fromQualString("lumen::rule_clamp");
const c10::Symbol kAttentionTap = c10::Symbol::fromQualString("lumen::attention_tap");
const c10::Symbol kLrpEpsilon = c10::Symbol::fromQualString("lumen::lrp_epsilon");
const c10::Symbol kLrpWeight = c10::Symbol::fromQualString("lumen::lrp_weight");
const c10::Symbol kLrpMix = c10::Symbol::fromQualString("lumen::lrp_mix");
const c10::Symbol kFusedAttention = c10::Symbol::fromQualString("aten::_native_multi_head_attention");

// aten::_native_multi_head_attention written out, with its argument list, so that it can stand in its
// place: the projections, softmax(q k^T / sqrt(d)) per head, the weighted values, the output
// projection. Only the batch-first unmasked form the fused path takes is supported.
const char* kFusedAttentionSource = R"(
def lumen_attention(query: Tensor, key: Tensor, value: Tensor, embed_dim: int, num_heads: int, qkv_weight: Tensor,
                    qkv_bias: Tensor, proj_weight: Tensor, proj_bias: Tensor, mask: Optional[Tensor], need_weights: bool,
                    average_attn_weights: bool, mask_type: Optional[int]) -> Tuple[Tensor, Tensor]:
    assert mask is None, "lumen: masked fused attention is not supported"
    b = query.size(0)
    t = query.size(1)
    d = embed_dim // num_heads
    w = qkv_weight.chunk(3, 0)
    c = qkv_bias.chunk(3, 0)
    q = torch.linear(query, w[0], c[0]).reshape([b, t, num_heads, d]).transpose(1, 2)
    k = torch.linear(key, w[1], c[1]).reshape([b, key.size(1), num_heads, d]).transpose(1, 2)
    v = torch.linear(value, w[2], c[2]).reshape([b, value.size(1), num_heads, d]).transpose(1, 2)
    attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / (float(d) ** 0.5), -1)
    out = torch.matmul(attn, v).transpose(1, 2).reshape([b, t, embed_dim])
    out = torch.linear(out, proj_weight, proj_bias)
    if not need_weights:
        return out, torch.empty([0])
    if average_attn_weights:
        return out, attn.mean(1)
    return out, attn
)";

std::shared_ptr<Graph> fused_attention_graph() {
  static const std::shared_ptr<Graph> graph = [] {
    auto cu = torch::jit::compile(kFusedAttentionSource);
    auto g = torch::jit::toGraphFunction(cu->get_function("lumen_attention")).graph()->copy();
    torch::jit::Inline(*g);
    return g;
  }();
  return graph;
}

bool block_has(const Block* block, c10::Symbol kind) {
  for (const Node* n : block->nodes()) {
    if (n->kind() == kind) return true;
    for (const Block* b : n->blocks())
      if (block_has(b, kind)) return true;
  }
  return false;
}

bool is_scalar_type(const c10::TypePtr& t) {
  return t->kind() == c10::TypeKind::BoolType || t->kind() == c10::TypeKind::IntType ||
         t->kind() == c10::TypeKind::FloatType;
}

std::string join(const std::string& parent, const std::string& name) {
  return parent.empty() ? name : parent + "." + name;
}

class Rewriter {
 public:
  Rewriter(const torch::jit::Module& root, const RewriteOptions& options)
      : root_(root), lenient_(options.lenient), rule_(options.rule), lrp_(options.lrp), strict_(options.strict_nonlinearities),
        replace_(options.replace), attention_(options.attention), decompose_(options.decompose_attention),
        inline_all_(options.rule != BackwardRule::Plain || options.attention || options.decompose_attention) {
    std::vector<std::string> all = options.taps;
    if (!replace_.empty()) all.push_back(replace_);
    for (const auto& p : all) {
      targets_.insert(p);
      // Every proper prefix of a target is a call that must be inlined to reach it.
      for (size_t i = p.find('.'); i != std::string::npos; i = p.find('.', i + 1)) ancestors_.insert(p.substr(0, i));
    }
  }

  TapResult run(const std::vector<std::string>& paths) {
    TapResult result;
    auto graph = root_.get_method("forward").graph()->copy();
    paths_[graph->inputs().at(0)] = "";
    scan(graph->block());
    if (decompose_) decompose_fused_attention(graph->block());
    if (attention_) tap_attention(graph->block());
    if (rule_ != BackwardRule::Plain) apply_rule(graph->block());
    // Module attributes folded to constants above make `if self.use_res_connect:` branches constant;
    // constant propagation removes them, which lifts taps out of those blocks.
    torch::jit::ConstantPropagation(graph);

    if (!replace_.empty()) {
      Node* last = nullptr;
      for (Node* n : taps_[replace_])
        if (n->owningBlock() == graph->block() && (!last || last->isBefore(n))) last = n;
      if (!last) throw Error("layer '" + replace_ + "' is not called at the top level of forward(); cannot run the network from it");
      // `last` is the tap inserted after the layer; its clone feeds the rest of the network.
      Value* clone = nullptr;
      for (const auto& use : last->output()->uses())
        if (use.user->kind() == c10::aten::clone) clone = use.user->output();
      Value* input = graph->addInput("lumen_replacement")->setType(c10::TensorType::get());
      clone->replaceAllUsesWith(input);
    }
    std::vector<Value*> outputs{graph->outputs().at(0)};
    for (const auto& p : paths) {
      // A module called several times (e.g. a shared ReLU) is captured at its last call, like a forward
      // hook that overwrites what it stored.
      Node* last = nullptr;
      bool nested = false;
      for (Node* n : taps_[p]) {
        if (n->owningBlock() != graph->block()) {
          nested = true;
          continue;
        }
        if (!last || last->isBefore(n)) last = n;
      }
      if (!last) {
        if (lenient_) {
          result.skipped[p] = kinds_.count(p) ? kinds_[p] : nested ? "inside control flow" : "not called";
          continue;
        }
        if (kinds_.count(p)) throw Error("layer '" + p + "' returns " + kinds_[p] + ", not a tensor");
        if (nested)
          throw Error("layer '" + p + "' is called inside input-dependent control flow (if/loop); lumen cannot capture it");
        throw Error("layer '" + p + "' exists but is never called by the model's forward()");
      }
      outputs.push_back(last->output());
      result.tapped.push_back(p);
    }
    while (graph->outputs().size() > 0) graph->eraseOutput(0);
    torch::jit::WithInsertPoint guard(graph->return_node());
    graph->registerOutput(graph->insertNode(graph->createTuple(outputs))->output());
    torch::jit::EliminateDeadCode(graph);
    if (rule_ == BackwardRule::Lrp) mark_lrp_copies(graph->block());
    if (!replace_.empty()) {
      // DCE keeps method calls (they could mutate module state). A module's forward in eval mode is
      // pure, so calls whose results nobody reads any more — the network before the layer — go too.
      for (bool removed = true; removed;) {
        removed = false;
        for (Node* n = graph->block()->return_node()->prev(); n != graph->block()->param_node();) {
          Node* prev = n->prev();
          if ((n->kind() == c10::prim::CallMethod || n->kind() == c10::prim::CallFunction) && !n->hasUses()) {
            n->destroy();
            removed = true;
          }
          n = prev;
        }
        torch::jit::EliminateDeadCode(graph);
      }
    }
    result.graph = graph;
    return result;
  }

 private:
  void scan(Block* block) {
    for (Node* n = block->nodes().front(); n != block->return_node();) {
      Node* next = n->next();
      if (n->kind() == c10::prim::GetAttr) {
        get_attr(n);
      } else if (n->kind() == c10::prim::CallMethod) {
        next = call_method(n, next);
      } else if (n->kind() == c10::prim::CallFunction && inline_all_) {
        next = call_function(n, next);
      } else {
        for (Block* b : n->blocks()) scan(b);
      }
      n = next;
    }
  }

  void get_attr(Node* n) {
    auto it = paths_.find(n->input(0));
    if (it == paths_.end()) return;
    const std::string name = n->s(c10::attr::name);
    auto type = n->output()->type();
    if (auto cls = type->cast<c10::ClassType>(); cls && cls->is_module()) {
      paths_[n->output()] = join(it->second, name);
    } else if (is_scalar_type(type)) {
      // Scalar module attributes are configuration (use_res_connect, stride flags): fold them.
      auto value = submodule(root_, it->second).attr(name);
      torch::jit::WithInsertPoint guard(n);
      Value* c = n->owningGraph()->insertConstant(value);
      n->output()->replaceAllUsesWith(c);
      n->destroy();
    }
  }

  // Returns the node to continue scanning from.
  Node* call_method(Node* n, Node* next) {
    auto it = paths_.find(n->input(0));
    if (it == paths_.end()) return next;
    const std::string path = it->second;
    const std::string method = n->s(c10::attr::name);
    const bool is_target = method == "forward" && (targets_.count(path) || path == replace_);
    // The root's own helpers (torchvision's scripted ResNet calls self._forward_impl) and every call on
    // the way down to a target are inlined; everything else stays a call.
    if (path.empty() || ancestors_.count(path) || inline_all_) {
      Node* before = n->prev();
      auto& fn = submodule(root_, path).get_method(method).function();
      auto* graph_fn = torch::jit::tryToGraphFunction(fn);
      if (!graph_fn) throw Error("cannot inline module '" + path + "' (method " + method + " is not a graph)");
      auto outs = torch::jit::inlineCallTo(n, graph_fn, graph_fn->graph().get());
      // Remember which module each inlined node came from, to name layers in messages; deeper inlines
      // later overwrite this with the deeper path.
      for (Node* m = before->next(); m != next; m = m->next()) set_scope(m, path);
      if (is_target && outs.size() == 1) insert_tap(path, outs[0], next);
      return before->next();  // scan the inlined body too
    }
    if (is_target) insert_tap(path, n->output(), next);
    return next;
  }

  // Scripted activations often sit in functions (nn.ReLU6 -> F.relu6 -> hardtanh); a backward rule
  // must reach them, so those calls are inlined too.
  Node* call_function(Node* n, Node* next) {
    auto fn_type = n->input(0)->type()->cast<c10::FunctionType>();
    if (!fn_type) return next;
    auto* graph_fn = torch::jit::tryToGraphFunction(*fn_type->function());
    if (!graph_fn) return next;
    Node* before = n->prev();
    auto it = scope_.find(n);
    const std::string scope = it == scope_.end() ? "" : it->second;
    n->removeInput(0);  // the function value; what remains are the arguments (as JIT's Inliner does)
    torch::jit::inlineCallTo(n, graph_fn, graph_fn->graph().get());
    for (Node* m = before->next(); m != next; m = m->next()) set_scope(m, scope);
    return before->next();
  }

  void insert_tap(const std::string& path, Value* y, Node* insert_before) {
    if (!y->type()->cast<c10::TensorType>()) {
      kinds_[path] = y->type()->str();
      return;
    }
    Graph* g = y->owningGraph();
    torch::jit::WithInsertPoint guard(insert_before);
    Value* t = g->insert(kTap, {y});
    Value* copy = g->insert(c10::aten::clone, {t});
    y->replaceAllUsesAfterNodeWith(copy->node(), copy);
    taps_[path].push_back(t->node());
  }

  void decompose_fused_attention(Block* block) {
    for (Node* n = block->nodes().front(); n != block->return_node();) {
      Node* next = n->next();
      for (Block* b : n->blocks()) decompose_fused_attention(b);
      if (n->kind() == kFusedAttention) {
        Node* before = n->prev();
        torch::jit::WithInsertPoint guard(n);
        auto outs = torch::jit::unpackOutputs(torch::jit::insertGraph(*n->owningGraph(), *fused_attention_graph(), n->inputs()));
        for (size_t i = 0; i < n->outputs().size(); ++i) n->output(i)->replaceAllUsesWith(outs.at(i));
        auto it = scope_.find(n);
        for (Node* m = before->next(); m != n; m = m->next()) set_scope(m, it == scope_.end() ? "" : it->second);
        n->destroy();
      }
      n = next;
    }
  }

  void tap_attention(Block* block) {
    for (Node* n = block->nodes().front(); n != block->return_node(); n = n->next()) {
      for (Block* b : n->blocks()) tap_attention(b);
      if (n->kind() != c10::aten::softmax && n->kind() != c10::aten::_softmax) continue;
      auto it = scope_.find(n);
      Graph* g = n->owningGraph();
      torch::jit::WithInsertPoint guard(n->next());
      Value* scope = g->insertConstant(it == scope_.end() ? std::string() : it->second);
      Value* tapped = g->insert(kAttentionTap, {n->output(), scope});
      n->output()->replaceAllUsesAfterNodeWith(tapped->node(), tapped);
      n = tapped->node();
    }
  }

  void set_scope(Node* n, const std::string& path) {
    scope_[n] = path;
    for (Block* b : n->blocks())
      for (Node* m : b->nodes()) set_scope(m, path);
  }

  // Swaps every ReLU-like activation for lumen::rule_clamp, whose backward follows the rule. Runs on
  // the fully inlined graph, so every activation of every submodule is reached.
  void apply_rule(Block* block) {
    for (Node* n = block->nodes().front(); n != block->return_node();) {
      Node* next = n->next();
      for (Block* b : n->blocks()) apply_rule(b);
      replace_activation(n);
      n = next;
    }
  }

  // LRP: the epsilon rule after every linear-like layer's output (Captum's EpsilonRule layers: conv,
  // linear, batch norm, average and max pooling). Residual sums keep their gradient, as in Captum.
  // A convolution or linear layer under the gamma or alpha1beta0 rule gets a copy beside it with
  // rho(w) (lumen::lrp_weight), and lumen::lrp_mix sends its gradient through the copy.
  void mark_lrp_layer(Node* n) {
    static const std::set<std::string> linear_like{
        "aten::_convolution", "aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::linear", "aten::addmm", "aten::batch_norm",
        "aten::avg_pool2d", "aten::adaptive_avg_pool2d", "aten::max_pool2d", "aten::mean"};
    static const std::map<std::string, size_t> weight_at{{"aten::_convolution", 1}, {"aten::conv1d", 1}, {"aten::conv2d", 1},
                                                         {"aten::conv3d", 1},       {"aten::linear", 1}, {"aten::addmm", 2}};
    const std::string kind = n->kind().toQualString();
    if (!linear_like.count(kind) || n->outputs().size() != 1) return;
    Graph* g = n->owningGraph();
    torch::jit::WithInsertPoint guard(n->next());
    const auto weighted = weight_at.find(kind);
    const auto scope = scope_.find(n);
    const std::string rule = weighted == weight_at.end() ? "epsilon" : lrp_.rule_at(scope == scope_.end() ? "" : scope->second);
    Value* out = nullptr;
    if (rule == "epsilon") {
      out = g->insert(kLrpEpsilon, {n->output()});
    } else {
      const size_t w = weighted->second;
      Value* rho = g->insert(kLrpWeight, {n->input(w), lrp_.gamma, static_cast<int64_t>(rule == "gamma" ? 1 : 2)});
      Node* copy = g->insertNode(g->createClone(n, [](Value* v) { return v; }));
      copy->replaceInput(w, rho);
      out = g->insert(kLrpMix, {n->output(), copy->output()});
    }
    n->output()->replaceAllUsesAfterNodeWith(out->node(), out);
  }

  // A rule's output need not be a copy when nothing can write into it: each reader is an op with a
  // schema that neither mutates nor aliases that argument (not a residual's add_, a view, a list or
  // the graph's output). A copy per linear-like layer was a tenth of LRP's time at batch 8.
  void mark_lrp_copies(Block* block) {
    for (Node* n : block->nodes()) {
      for (Block* b : n->blocks()) mark_lrp_copies(b);
      if (n->kind() != kLrpEpsilon && n->kind() != kLrpMix) continue;
      bool safe = true;
      for (const auto& use : n->output()->uses()) {
        const auto* schema = use.user->maybeSchema();
        safe = safe && schema && !schema->is_mutable() && use.offset < schema->arguments().size() &&
               !schema->arguments()[use.offset].alias_info();
      }
      if (!safe) continue;
      torch::jit::WithInsertPoint guard(n);
      n->replaceInput(n->inputs().size() - 1, n->owningGraph()->insertConstant(false));
    }
  }

  void replace_activation(Node* n) {
    if (rule_ == BackwardRule::Lrp) mark_lrp_layer(n);
    const std::string kind = n->kind().toQualString();
    double lo = 0, hi = std::numeric_limits<double>::infinity();
    bool in_place = !kind.empty() && kind.back() == '_';
    const std::string base = in_place ? kind.substr(0, kind.size() - 1) : kind;
    if (base == "aten::relu") {
    } else if (base == "aten::relu6") {
      hi = 6;
    } else if (base == "aten::hardtanh" || base == "aten::clamp") {
      auto lo_v = torch::jit::toIValue(n->input(1)), hi_v = torch::jit::toIValue(n->input(2));
      if (n->inputs().size() != 3 || !lo_v || !hi_v) return unsupported(n, kind + " with bounds computed at run time");
      if (lo_v->isTensor() || hi_v->isTensor()) return unsupported(n, kind + " with tensor bounds");
      lo = lo_v->isNone() ? -std::numeric_limits<double>::infinity() : lo_v->toScalar().toDouble();
      hi = hi_v->isNone() ? std::numeric_limits<double>::infinity() : hi_v->toScalar().toDouble();
    } else if (base == "aten::clamp_min" || base == "aten::threshold") {
      return unsupported(n, kind);
    } else {
      static const std::set<std::string> no_rule{
          "aten::silu", "aten::gelu", "aten::sigmoid", "aten::tanh", "aten::hardswish", "aten::hardsigmoid",
          "aten::leaky_relu", "aten::elu", "aten::selu", "aten::celu", "aten::softplus", "aten::mish",
          "aten::prelu", "aten::glu", "aten::log_sigmoid", "aten::rrelu"};
      if (no_rule.count(base)) unsupported(n, kind);
      return;
    }
    Graph* g = n->owningGraph();
    torch::jit::WithInsertPoint guard(n);
    Value* x = n->input(0);
    Value* out = g->insert(kRuleClamp, {x, lo, hi, static_cast<int64_t>(rule_)});
    if (in_place) {
      // The in-place op changed x for everything after it; point those uses at the new value instead.
      x->replaceAllUsesAfterNodeWith(n, out);
    }
    n->output()->replaceAllUsesWith(out);
    n->destroy();
  }

  void unsupported(Node* n, const std::string& what) {
    if (!strict_) return;
    auto it = scope_.find(n);
    std::string where = it == scope_.end() || it->second.empty() ? "the model's own forward" : "layer '" + it->second + "'";
    const char* rule = rule_ == BackwardRule::Guided    ? "guided-backprop"
                       : rule_ == BackwardRule::Rescale ? "deeplift rescale"
                       : rule_ == BackwardRule::Lrp     ? "lrp"
                                                        : "deconvnet";
    throw Error(where + " uses " + what + ", which has no " + rule +
                " rule; pass --nonlinearity plain to keep its ordinary gradient");
  }

  const torch::jit::Module& root_;
  bool lenient_;
  BackwardRule rule_;
  LrpRuleSet lrp_;
  bool strict_;
  std::string replace_;
  bool attention_, decompose_, inline_all_;
  std::unordered_map<Node*, std::string> scope_;
  std::map<std::string, std::string> kinds_;
  std::set<std::string> targets_, ancestors_;
  std::unordered_map<Value*, std::string> paths_;
  std::map<std::string, std::vector<Node*>> taps_;
};

}  // namespace

torch::jit::Module submodule(const torch::jit::Module& root, const std::string& path) {
  torch::jit::Module m = root;
  size_t start = 0;
  while (start < path.size()) {
    size_t dot = path.find('.', start);
    std::string name = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    m = m.attr(name).toModule();
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return m;
}

bool has_fused_attention(const torch::jit::Module& root) {
  for (const auto& sub : root.named_modules())
    for (const auto& method : sub.value.get_methods())
      if (auto* fn = torch::jit::tryToGraphFunction(method.function()); fn && block_has(fn->graph()->block(), kFusedAttention)) return true;
  return false;
}

AttentionRecording::AttentionRecording(AttentionMaps& maps) : previous_(g_attention) { g_attention = &maps; }
AttentionRecording::~AttentionRecording() { g_attention = previous_; }

TapResult rewrite_forward(const torch::jit::Module& root, const RewriteOptions& options) {
  return Rewriter(root, options).run(options.taps);
}

}  // namespace lumen::detail

namespace lumen {

void check_lrp_rule(const std::string& rule) {
  if (rule != "epsilon" && rule != "gamma" && rule != "alpha1beta0")
    throw Error("unknown LRP rule '" + rule + "' (epsilon, gamma, alpha1beta0)");
}

std::string LrpRuleSet::rule_at(const std::string& scope) const {
  std::string found = rule;
  size_t longest = 0;
  for (const auto& [path, r] : layers) {
    const bool inside = scope == path || (scope.size() > path.size() && scope.compare(0, path.size(), path) == 0 && scope[path.size()] == '.');
    if (inside && path.size() >= longest) found = r, longest = path.size();
  }
  return found;
}

std::string LrpRuleSet::signature() const {
  std::ostringstream g;
  g << std::setprecision(17) << gamma;  // every gamma its own graph
  std::string s = rule + ";gamma=" + g.str();
  for (const auto& [path, r] : layers) s += ";" + path + "=" + r;
  return s;
}

RescaleTape::RescaleTape() : previous_(detail::g_rescale_tape) { detail::g_rescale_tape = &units_; }
RescaleTape::RescaleTape(std::vector<torch::Tensor> recorded) : RescaleTape() {
  units_.inputs = std::move(recorded);
  replay();
}
RescaleTape::~RescaleTape() { detail::g_rescale_tape = previous_; }
void RescaleTape::replay() {
  units_.replaying = true;
  units_.mismatch = false;
  units_.next = 0;
}
bool RescaleTape::matched() const { return units_.replaying && !units_.mismatch && units_.next == units_.inputs.size(); }

LrpRules::LrpRules(LrpRuleSet rules) : previous_(detail::g_lrp_rules) { detail::g_lrp_rules = std::move(rules); }
LrpRules::~LrpRules() { detail::g_lrp_rules = previous_; }
const LrpRuleSet& LrpRules::current() { return detail::g_lrp_rules; }

LrpEpsilon::LrpEpsilon(double epsilon) : previous_(detail::g_lrp_epsilon) { detail::g_lrp_epsilon = epsilon; }
LrpEpsilon::~LrpEpsilon() { detail::g_lrp_epsilon = previous_; }
double LrpEpsilon::current() { return detail::g_lrp_epsilon; }

}  // namespace lumen
