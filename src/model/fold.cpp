#include "model/fold.h"

#include <torch/csrc/jit/passes/fold_conv_bn.h>

#include <map>
#include <vector>

namespace lumen::detail {
namespace {

std::string type_name(const torch::jit::Module& m) {
  const auto name = m._ivalue()->type()->name();
  return name ? name->name() : "";
}

std::string below(const std::string& parent, const std::string& child) { return parent.empty() ? child : parent + "." + child; }

// The child a module-typed value is, as a path below the method's `self` ("" when it is not one).
std::string child_path(torch::jit::Value* v, torch::jit::Value* self) {
  std::vector<std::string> parts;
  while (v != self) {
    auto* n = v->node();
    if (n->kind() != c10::prim::GetAttr) return "";
    parts.insert(parts.begin(), n->s(c10::attr::name));
    v = n->input(0);
  }
  std::string path;
  for (const auto& p : parts) path = below(path, p);
  return path;
}

// Every call of a submodule's forward in the methods of every module: parent path -> (callee path ->
// the call's output uses, its input's producer callee path).
struct Call {
  std::string callee, input_callee;
  size_t uses = 0;
};
std::vector<Call> submodule_calls(const torch::jit::Module& root) {
  std::vector<Call> calls;
  for (const auto& sub : root.named_modules()) {
    for (const auto& method : sub.value.get_methods()) {
      auto graph = method.graph();
      auto* self = graph->inputs().at(0);
      std::map<torch::jit::Value*, std::string> produced_by;  // call output -> callee path
      for (auto* node : graph->nodes()) {  // top-level only: the pass matches no call inside a branch
        if (node->kind() != c10::prim::CallMethod || node->s(c10::attr::name) != "forward" || node->inputs().size() < 2) continue;
        const std::string callee = child_path(node->input(0), self);
        if (callee.empty()) continue;
        Call c;
        c.callee = below(sub.name, callee);
        if (auto it = produced_by.find(node->input(1)); it != produced_by.end()) c.input_callee = it->second;
        c.uses = node->output()->uses().size();
        produced_by[node->output()] = c.callee;
        calls.push_back(c);
      }
    }
  }
  return calls;
}

}  // namespace

std::optional<FoldedModule> fold_batch_norms(const torch::jit::Module& module) {
  std::map<std::string, std::string> kinds;
  for (const auto& sub : module.named_modules()) kinds[sub.name] = type_name(sub.value);
  std::map<std::string, const Call*> before;  // batch norm path -> its call fed by a convolution
  std::map<std::string, int> times_called;   // by module path
  const auto calls = submodule_calls(module);
  for (const auto& c : calls) {
    ++times_called[c.callee];
    if (kinds[c.callee] == "BatchNorm2d" && kinds[c.input_callee] == "Conv2d") before[c.callee] = &c;
  }
  if (before.empty()) return std::nullopt;
  FoldedModule out;
  try {
    torch::NoGradGuard no_grad;
    out.module = torch::jit::FoldConvBatchNorm(module);
    for (auto p : out.module.parameters()) p.requires_grad_(false);  // as lumen's copy (Model::from_module)
  } catch (const std::exception&) {
    return std::nullopt;  // the pass refused this model: the original runs
  }
  std::set<std::string> still_called;
  for (const auto& c : submodule_calls(out.module)) still_called.insert(c.callee);
  for (const auto& [path, kind] : kinds) {
    if (kind != "BatchNorm2d" || still_called.count(path)) continue;
    // A batch norm no longer called: folded. Only into a convolution whose output it alone read, and
    // only if each was called once (a module called twice is two layers that a path cannot tell apart).
    const auto it = before.find(path);
    if (it == before.end() || it->second->uses != 1 || times_called[path] != 1 || times_called[it->second->input_callee] != 1)
      return std::nullopt;
    out.paths.insert(path);
    out.paths.insert(it->second->input_callee);
  }
  if (out.paths.empty()) return std::nullopt;
  return out;
}

}  // namespace lumen::detail
