// Layer capture by graph rewriting.
//
// Why a rewrite: C++ forward hooks never fire on a loaded TorchScript module (hooks are compiled into
// call sites at script time), so the only way to reach an intermediate output of an unmodified model is
// to change lumen's own copy of its forward graph. The copy is never written back to the module: two
// submodules of one class share one method graph, so editing it in place would tap both.
#include "model/tap.h"

#include <lumen/error.h>

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/library.h>

#include <algorithm>
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
// capture, so gradients still flow through it to the input.
at::Tensor tap(const at::Tensor& x) {
  if (c10::InferenceMode::is_enabled() || x.requires_grad()) return x;
  return x.detach().requires_grad_(true);
}

TORCH_LIBRARY(lumen, m) { m.def("tap(Tensor x) -> Tensor", tap); }

const c10::Symbol kTap = c10::Symbol::fromQualString("lumen::tap");

bool is_scalar_type(const c10::TypePtr& t) {
  return t->kind() == c10::TypeKind::BoolType || t->kind() == c10::TypeKind::IntType ||
         t->kind() == c10::TypeKind::FloatType;
}

std::string join(const std::string& parent, const std::string& name) {
  return parent.empty() ? name : parent + "." + name;
}

class Rewriter {
 public:
  Rewriter(const torch::jit::Module& root, const std::vector<std::string>& paths, bool lenient)
      : root_(root), lenient_(lenient) {
    for (const auto& p : paths) {
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
    // Module attributes folded to constants above make `if self.use_res_connect:` branches constant;
    // constant propagation removes them, which lifts taps out of those blocks.
    torch::jit::ConstantPropagation(graph);

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
    const bool is_target = method == "forward" && targets_.count(path);
    // The root's own helpers (torchvision's scripted ResNet calls self._forward_impl) and every call on
    // the way down to a target are inlined; everything else stays a call.
    if (path.empty() || ancestors_.count(path)) {
      Node* before = n->prev();
      auto& fn = submodule(root_, path).get_method(method).function();
      auto* graph_fn = torch::jit::tryToGraphFunction(fn);
      if (!graph_fn) throw Error("cannot inline module '" + path + "' (method " + method + " is not a graph)");
      auto outs = torch::jit::inlineCallTo(n, graph_fn, graph_fn->graph().get());
      if (is_target && outs.size() == 1) insert_tap(path, outs[0], next);
      return before->next();  // scan the inlined body too
    }
    if (is_target) insert_tap(path, n->output(), next);
    return next;
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

  const torch::jit::Module& root_;
  bool lenient_;
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

TapResult tapped_graph(const torch::jit::Module& root, const std::vector<std::string>& paths, bool lenient) {
  return Rewriter(root, paths, lenient).run(paths);
}

}  // namespace lumen::detail
