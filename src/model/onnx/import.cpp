// ONNX -> TorchScript module (see import.h for the shape of the result): the file read and checked,
// then every node written as a submodule (node_writer.h) and called in graph order by the root's
// forward. Only the generated protobuf message classes of Debian's libonnx-dev are used, not ONNX's
// checker or shape inference, which would add a second interpretation of the graph beside the one
// that runs.
#include "model/onnx/import.h"

#include "model/onnx/node_writer.h"
#include "model/onnx/tensors.h"

#include <lumen/error.h>

#include <onnx/onnx_pb.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace lumen::detail {
namespace fs = std::filesystem;
namespace {

// The IR versions lumen reads (those of ONNX 1.6 to 1.14).
constexpr int64_t kMinIr = 3, kMaxIr = 9;

// lumen::first_line lives in the main library, which this one must not depend on (link order).
// The first non-blank line: TorchScript's compiler messages may start with an empty one.
std::string headline(const std::string& message) {
  std::stringstream lines(message);
  for (std::string line; std::getline(lines, line);)
    if (line.find_first_not_of(" \t") != std::string::npos) return line;
  return message;
}

std::string listed(const std::vector<std::string>& problems, size_t shown) {
  std::string list;
  for (size_t i = 0; i < problems.size() && i < shown; ++i) list += (i ? "; " : "") + problems[i];
  if (problems.size() > shown) list += "; and " + std::to_string(problems.size() - shown) + " more";
  return list;
}

onnx::ModelProto parse(const std::string& bytes, const std::string& name, OnnxImport& out) {
  onnx::ModelProto proto;
  if (bytes.empty()) throw Error("model " + name + " is empty");
  if (!proto.ParseFromString(bytes) || !proto.has_graph())
    throw Error("model " + name + " is not an ONNX model (the protobuf does not parse; truncated or another format?)");
  out.ir_version = proto.ir_version();
  if (out.ir_version < kMinIr || out.ir_version > kMaxIr)
    throw Error("model " + name + " has ONNX IR version " + std::to_string(out.ir_version) + "; lumen reads versions " +
                std::to_string(kMinIr) + " to " + std::to_string(kMaxIr));
  for (const auto& o : proto.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") out.opset = o.version();
  if (out.opset < kOnnxMinOpset || out.opset > kOnnxMaxOpset)
    throw Error("model " + name + " uses ONNX opset " + std::to_string(out.opset) + "; lumen reads opsets " +
                std::to_string(kOnnxMinOpset) + " to " + std::to_string(kOnnxMaxOpset) + " (re-export with one of those)");
  return proto;
}

// Every operator lumen cannot run, named at once, before anything is built (in If branches too).
void unsupported(const onnx::GraphProto& graph, int64_t opset, std::vector<std::string>& problems) {
  for (const auto& node : graph.node()) {
    const std::string where = "'" + node.name() + "' (" + node.op_type() + ", opset " + std::to_string(opset) + ")";
    if (!node.domain().empty() && node.domain() != "ai.onnx")
      problems.push_back("operator " + node.domain() + "." + node.op_type() + " at node " + where);
    else if (node.op_type() == "If")
      for (const auto& a : node.attribute()) {
        if (a.has_g()) unsupported(a.g(), opset, problems);
      }
    else if (node.op_type() != "Constant" && !op_writers().count(node.op_type()))
      problems.push_back("operator " + node.op_type() + " at node " + where);
  }
}

void check_operators(const onnx::GraphProto& graph, int64_t opset, const std::string& name) {
  std::vector<std::string> problems;
  unsupported(graph, opset, problems);
  if (!problems.empty())
    throw Error("model " + name + " has " + std::to_string(problems.size()) + " node(s) lumen cannot run: " + listed(problems, 12));
}

// The graph's run-time input: the one declared input that is not an initialiser.
const onnx::ValueInfoProto& image_input(const onnx::GraphProto& graph, const std::map<std::string, torch::Tensor>& constants,
                                        const std::string& name, OnnxImport& out) {
  std::vector<const onnx::ValueInfoProto*> inputs;
  for (const auto& in : graph.input())
    if (!constants.count(in.name())) inputs.push_back(&in);
  if (inputs.size() != 1) {
    std::string names;
    for (auto* in : inputs) names += (names.empty() ? "" : ", ") + in->name();
    throw Error("model " + name + " has " + std::to_string(inputs.size()) + " inputs (" + names + "); lumen explains models with one image input");
  }
  if (inputs[0]->type().has_tensor_type())
    for (const auto& d : inputs[0]->type().tensor_type().shape().dim()) out.input_shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
  if (graph.output_size() < 1) throw Error("model " + name + " has no outputs");
  return *inputs[0];
}

// TorchScript's own names ("torch.relu"), and lumen's operators as "lumen.greedy_nms" (the C++
// frontend has no torch.ops).
struct OpResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name, torch::jit::GraphFunction& m,
                                                         const torch::jit::SourceRange& loc) override {
    if (name == "lumen") return std::make_shared<torch::jit::BuiltinModule>("lumen");
    return torch::jit::nativeResolver()->resolveValue(name, m, loc);
  }
};

// A node as the op writers see it.
Node plain(const onnx::NodeProto& node) {
  Node n;
  n.name = node.name();
  n.op_type = node.op_type();
  n.outputs.assign(node.output().begin(), node.output().end());
  for (const auto& a : node.attribute()) {
    Attribute attr;
    attr.i = a.i();
    attr.f = a.f();
    attr.s = a.s();
    attr.ints.assign(a.ints().begin(), a.ints().end());
    attr.tensor = [t = std::make_shared<onnx::TensorProto>(a.t())](const std::string& what) { return decode_tensor(*t, "", what); };
    n.attributes.emplace(a.name(), std::move(attr));  // the first of repeated names, as a search would find
  }
  return n;
}

// The value of a Constant node.
torch::Tensor constant_value(const onnx::NodeProto& node, const std::string& folder, const std::string& where) {
  const onnx::AttributeProto* a = node.attribute_size() == 1 ? &node.attribute(0) : nullptr;
  if (!a || node.output_size() != 1) throw Error("a Constant needs exactly one value attribute");
  if (a->name() == "value") return decode_tensor(a->t(), folder, where);
  if (a->name() == "value_float") return torch::tensor(a->f(), torch::kFloat);
  if (a->name() == "value_floats") return torch::tensor(std::vector<float>(a->floats().begin(), a->floats().end()), torch::kFloat);
  if (a->name() == "value_int") return torch::tensor(a->i(), torch::kLong);
  if (a->name() == "value_ints") return torch::tensor(std::vector<int64_t>(a->ints().begin(), a->ints().end()), torch::kLong);
  throw Error("its " + a->name() + " attribute is not supported");
}

std::string unique_path(const onnx::NodeProto& node, size_t index, std::set<std::string>& used) {
  std::string base = node.name();
  for (auto& c : base)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') c = '_';
  // Exporters name nodes by scope ("/layer4/layer4.1/relu_1/Relu"); the path drops the leading slash.
  base.erase(0, base.find_first_not_of('_'));
  if (base.empty()) base = node.op_type() + "_" + std::to_string(index);
  if (!is_identifier(base)) base = "n_" + base;
  if (!is_identifier(base)) base = "n_" + std::to_string(index);
  std::string path = base;
  for (int k = 2; used.count(path); ++k) path = base + "_" + std::to_string(k);
  used.insert(path);
  return path;
}

// The root module being built: one submodule per node, and the root's forward calling them.
class GraphWriter {
 public:
  GraphWriter(OnnxImport& out, std::map<std::string, torch::Tensor>& constants, const std::string& folder)
      : out_(out), constants_(constants), folder_(folder), cu_(std::make_shared<torch::jit::CompilationUnit>()) {
    out_.module = torch::jit::Module(c10::QualifiedName("__torch__.lumen_onnx.Model"), cu_);
  }

  void input(const std::string& value) {
    value_var_[value] = "x";
    root_ << "def forward(self, x):\n";
    // An input of one image [3, H, W] (torchvision's detectors exported) is given a batch of one.
    if (one_image(out_.input_shape)) root_ << "    x = x[0]\n";
  }

  void add(const onnx::NodeProto& node) {
    const size_t index = ++nodes_;
    const std::string where = "node '" + node.name() + "' (" + node.op_type() + ")";
    if (node.op_type() == "If") return add_if(node, where);
    if (node.op_type() == "Constant") {
      try {
        constants_[node.output(0)] = constant_value(node, folder_, where);
      } catch (const Error& e) {
        problems_.push_back(where + ": " + e.what());
      }
      return;
    }
    const std::string path = unique_path(node, index, used_);
    torch::jit::Module sub(c10::QualifiedName("__torch__.lumen_onnx.n" + std::to_string(index) + "." + node.op_type()), cu_);
    const Node plain_node = plain(node);
    NodeWriter w{plain_node, out_.opset, sub, {}, {}, {}, 0};
    std::vector<std::string> args, call;
    for (int i = 0; i < node.input_size(); ++i) bind_input(node.input(i), i, where, w, args, call);
    try {
      op_writers().at(node.op_type())(w);
      std::string signature = "def forward(self";
      for (const auto& a : args) signature += ", " + a;
      sub.define(signature + "):\n" + w.body.str(), resolver_);
    } catch (const Error& e) {
      problems_.push_back(where + ": " + e.what());
      return;
    } catch (const std::exception& e) {
      problems_.push_back(where + ": " + headline(e.what()));
      return;
    }
    out_.module.register_module(path, sub);
    call_in_root(node, path, call);
  }

  // Scoped node names ("/layer4/layer4.1/relu_1/Relu", as torch.onnx writes them) also answer to each
  // module path on the way ("layer4", "layer4.1"): the module's output is its scope's last node, so
  // `--layer layer4` means the same layer in a model and in its ONNX export.
  void alias_scopes(const onnx::GraphProto& graph) {
    std::map<std::string, std::string> scope_last;
    for (const auto& node : graph.node()) {
      if (node.name().empty() || node.name()[0] != '/') continue;
      auto alias = out_.aliases.find(node.name());
      if (alias == out_.aliases.end()) continue;
      std::stringstream parts(node.name().substr(1));
      std::vector<std::string> scopes;
      for (std::string part; std::getline(parts, part, '/');) scopes.push_back(part);
      // A scope is named by its module path ("layer4.1" under "layer4") or by its attribute name alone
      // ("ln_1" under "/encoder/layers/encoder_layer_3"): both answer, and the path is rebuilt for the latter.
      std::string path;
      for (size_t i = 0; i + 1 < scopes.size(); ++i) {
        path = path.empty() || scopes[i].rfind(path + ".", 0) == 0 ? scopes[i] : path + "." + scopes[i];
        scope_last[scopes[i]] = alias->second;
        scope_last[path] = alias->second;
      }
    }
    for (const auto& [scope, path] : scope_last)
      if (!out_.aliases.count(scope) && !used_.count(scope)) out_.aliases[scope] = path;
  }

  void finish(const onnx::GraphProto& graph, const std::string& name) {
    if (!problems_.empty()) throw Error("model " + name + " cannot be imported: " + listed(problems_, 8));
    std::string results;
    for (const auto& o : graph.output()) {
      auto it = value_var_.find(o.name());
      if (it == value_var_.end()) throw Error("model " + name + ": output '" + o.name() + "' is not computed from the input");
      results += (results.empty() ? "" : ", ") + it->second;
    }
    root_ << indent_ << "return " << results << "\n";
    try {
      out_.module.define(root_.str());
    } catch (const std::exception& e) {
      throw Error("model " + name + " cannot be imported: " + headline(e.what()));
    }
    out_.module.eval();
  }

 private:
  // Input i of a node: a load-time constant, an earlier node's output (an argument), or absent.
  void bind_input(const std::string& v, int i, const std::string& where, NodeWriter& w, std::vector<std::string>& args,
                  std::vector<std::string>& call) {
    w.present.push_back(!v.empty());
    w.constant.push_back(nullptr);
    if (v.empty()) return;
    if (auto c = constants_.find(v); c != constants_.end()) {
      w.constant.back() = &c->second;
    } else if (auto r = value_var_.find(v); r != value_var_.end()) {
      args.push_back("a" + std::to_string(i));
      call.push_back(r->second);
    } else {
      problems_.push_back(where + ": input '" + v + "' is not produced by any earlier node (the graph is not in topological order?)");
      w.present.back() = false;
    }
  }

  std::string fresh_var() { return "v" + std::to_string(vars_++); }

  // A branch's own initialisers and nodes, written where the branch is.
  void add_graph(const onnx::GraphProto& graph) {
    for (const auto& init : graph.initializer()) constants_[init.name()] = decode_tensor(init, folder_, "initializer '" + init.name() + "'");
    for (const auto& n : graph.node()) add(n);
  }

  // An If: a condition known at load time (exporters write such Ifs for shape checks) takes its branch
  // in line; a run-time one becomes a TorchScript if/else in the root's forward, each branch's nodes
  // submodules like any other, assigning the If's outputs. Branches see the enclosing graph's values.
  void add_if(const onnx::NodeProto& node, const std::string& where) {
    const onnx::GraphProto* branches[2] = {nullptr, nullptr};
    for (const auto& a : node.attribute()) {
      if (a.name() == "then_branch" && a.has_g()) branches[0] = &a.g();
      if (a.name() == "else_branch" && a.has_g()) branches[1] = &a.g();
    }
    if (!branches[0] || !branches[1] || node.input_size() != 1) {
      problems_.push_back(where + ": an If needs one condition, a then_branch and an else_branch");
      return;
    }
    for (const auto* b : branches)
      if (b->output_size() != node.output_size()) {
        problems_.push_back(where + ": a branch has " + std::to_string(b->output_size()) + " outputs, the If " +
                            std::to_string(node.output_size()));
        return;
      }
    if (auto c = constants_.find(node.input(0)); c != constants_.end()) {
      if (c->second.numel() != 1) {
        problems_.push_back(where + ": its condition holds " + std::to_string(c->second.numel()) + " values, not one");
        return;
      }
      const auto& branch = *branches[c->second.item<double>() != 0 ? 0 : 1];
      add_graph(branch);
      for (int k = 0; k < node.output_size(); ++k) {
        const std::string& o = branch.output(k).name();
        if (auto v = value_var_.find(o); v != value_var_.end()) value_var_[node.output(k)] = v->second;
        else if (auto t = constants_.find(o); t != constants_.end()) constants_[node.output(k)] = t->second;
        else problems_.push_back(where + ": branch output '" + o + "' is not computed");
      }
      return;
    }
    auto cond = value_var_.find(node.input(0));
    if (cond == value_var_.end()) {
      problems_.push_back(where + ": condition '" + node.input(0) + "' is not produced by any earlier node");
      return;
    }
    std::vector<std::string> outputs;
    for (int k = 0; k < node.output_size(); ++k) outputs.push_back(fresh_var());
    root_ << indent_ << "if bool(" << cond->second << "):\n";
    write_branch(*branches[0], outputs, where);
    root_ << indent_ << "else:\n";
    write_branch(*branches[1], outputs, where);
    for (int k = 0; k < node.output_size(); ++k)
      if (!node.output(k).empty()) value_var_[node.output(k)] = outputs[k];
  }

  void write_branch(const onnx::GraphProto& branch, const std::vector<std::string>& outputs, const std::string& where) {
    const auto outer = value_var_;  // the branch's own values are not seen after it
    indent_ += "    ";
    add_graph(branch);
    root_ << indent_ << "pass\n";
    for (size_t k = 0; k < outputs.size(); ++k) {
      const std::string& o = branch.output(static_cast<int>(k)).name();
      if (auto v = value_var_.find(o); v != value_var_.end()) {
        root_ << indent_ << outputs[k] << " = " << v->second << "\n";
      } else if (auto t = constants_.find(o); t != constants_.end()) {
        std::string name;  // a name no node's submodule takes
        do name = "branch_value_" + std::to_string(vars_++);
        while (used_.count(name) || out_.module.hasattr(name));
        used_.insert(name);
        out_.module.register_buffer(name, t->second);
        root_ << indent_ << outputs[k] << " = self." << name << "\n";
      } else {
        problems_.push_back(where + ": branch output '" + o + "' is not computed");
      }
    }
    indent_.resize(indent_.size() - 4);
    value_var_ = outer;
  }

  void call_in_root(const onnx::NodeProto& node, const std::string& path, const std::vector<std::string>& call) {
    std::string results, outputs;
    for (int k = 0; k < node.output_size(); ++k) {
      const std::string var = fresh_var();
      results += (k ? ", " : "") + (node.output(k).empty() ? "_" : var);
      if (!node.output(k).empty()) {
        value_var_[node.output(k)] = var;
        outputs += (outputs.empty() ? "" : ", ") + node.output(k);
        if (!out_.aliases.count(node.output(k))) out_.aliases[node.output(k)] = path;
      }
    }
    if (!node.name().empty() && node.name() != path) out_.aliases[node.name()] = path;
    out_.described[path] = outputs;
    std::string joined;
    for (size_t i = 0; i < call.size(); ++i) joined += (i ? ", " : "") + call[i];
    root_ << indent_ << results << " = self." << path << ".forward(" << joined << ")\n";
  }

  OnnxImport& out_;
  std::map<std::string, torch::Tensor>& constants_;
  const std::string folder_;
  std::shared_ptr<torch::jit::CompilationUnit> cu_;
  std::map<std::string, std::string> value_var_;  // ONNX value name -> variable in the root forward
  std::ostringstream root_;
  std::string indent_ = "    ";  // of the block being written: deeper inside an If's branches
  const std::shared_ptr<OpResolver> resolver_ = std::make_shared<OpResolver>();
  size_t nodes_ = 0, vars_ = 0;
  std::set<std::string> used_;
  std::vector<std::string> problems_;
};

// The first top-level Pad whose data is a Resize's output, through ops that only pick from it (how
// torchvision's GeneralizedRCNNTransform exports: Resize, Gather of the one image, Pad). Read by
// Model::content_fraction, which measures the two shapes at the input size it is asked about.
OnnxImport::Canvas find_canvas(const onnx::GraphProto& graph, const std::map<std::string, torch::Tensor>& constants,
                               const std::map<std::string, std::string>& aliases) {
  std::map<std::string, const onnx::NodeProto*> producer;
  for (const auto& node : graph.node())
    for (const auto& o : node.output()) producer[o] = &node;
  static const std::set<std::string> picks{"Gather", "Squeeze", "Unsqueeze", "Identity", "Slice", "Cast"};
  for (const auto& node : graph.node()) {
    if (node.op_type() != "Pad" || node.input_size() < 2) continue;
    const onnx::NodeProto* p = producer.count(node.input(0)) ? producer.at(node.input(0)) : nullptr;
    while (p && picks.count(p->op_type()) && p->input_size() > 0) p = producer.count(p->input(0)) ? producer.at(p->input(0)) : nullptr;
    if (!p || p->op_type() != "Resize") continue;
    OnnxImport::Canvas c;
    const auto resized = aliases.find(node.input(0)), padded = node.output_size() > 0 ? aliases.find(node.output(0)) : aliases.end();
    if (resized == aliases.end() || padded == aliases.end()) return {};
    c.resized = resized->second;
    c.padded = padded->second;
    if (auto k = constants.find(node.input(1)); k != constants.end()) {
      const auto t = k->second.to(torch::kLong).flatten();
      c.constant_pads.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    } else if (auto a = aliases.find(node.input(1)); a != aliases.end()) {
      c.pads = a->second;
    } else {
      return {};
    }
    return c;
  }
  return {};
}

}  // namespace

OnnxImport import_onnx_bytes(const std::string& bytes, const std::string& folder, const std::string& name) {
  OnnxImport out;
  const onnx::ModelProto proto = parse(bytes, name, out);
  const auto& graph = proto.graph();
  // Values known at load time: initialisers (and, as the graph is written, Constant nodes).
  std::map<std::string, torch::Tensor> constants;
  for (const auto& init : graph.initializer()) constants[init.name()] = decode_tensor(init, folder, "initializer '" + init.name() + "'");
  check_operators(graph, out.opset, name);
  const auto& input = image_input(graph, constants, name, out);
  GraphWriter writer(out, constants, folder);
  writer.input(input.name());
  for (const auto& node : graph.node()) writer.add(node);
  writer.alias_scopes(graph);
  writer.finish(graph, name);
  out.canvas = find_canvas(graph, constants, out.aliases);
  return out;
}

OnnxImport import_onnx(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw Error("cannot read model file " + path);
  // protobuf's own limit on one message.
  if (size > (uint64_t{2} << 30) - 1) throw Error("model " + path + " is larger than 2 GiB; store its weights as external data");
  std::ifstream in(path, std::ios::binary);
  std::string bytes(size, '\0');
  if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) throw Error("cannot read model file " + path);
  auto folder = fs::path(path).parent_path();
  return import_onnx_bytes(bytes, folder.empty() ? "." : folder.string(), fs::path(path).filename().string());
}

}  // namespace lumen::detail
