#include <lumen/error.h>
#include <lumen/files.h>
#include <lumen/model.h>
#include <lumen/runtime.h>

#include <caffe2/serialize/inline_container.h>

#include "core/hash.h"
#include "model/archive.h"
#include "model/fold.h"
#include "model/onnx/import.h"
#include "model/tap.h"

#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/interpreter.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <sstream>

namespace lumen {
namespace {

// The submodule whose call failed, from the interpreter's traceback: its first frame marks the failing
// line of lumen's forward ("v98 = self.pool_ReduceMean.forward(v97)" then "~~~ <--- HERE").
std::string failing_submodule(const std::string& message) {
  const auto here = message.find("<--- HERE");
  if (here == std::string::npos) return "";
  const auto marker_line = message.rfind('\n', here);
  if (marker_line == std::string::npos || marker_line == 0) return "";
  const auto code_line = message.rfind('\n', marker_line - 1);
  const std::string code = message.substr(code_line == std::string::npos ? 0 : code_line + 1, marker_line - code_line - 1);
  static const std::regex call(R"(self\.([A-Za-z_][A-Za-z0-9_]*)\.forward)");
  std::smatch m;
  return std::regex_search(code, m, call) ? m[1].str() : "";
}

}  // namespace

namespace detail {
// A rewritten graph compiled for the interpreter. The graph runs unoptimised through
// torch::jit::Code — the same kernels eager PyTorch calls — so profiling-executor specialisations never
// change numerics between the first and later calls. (Named, not anonymous: Model::Impl holds it.)
struct Compiled {
  torch::jit::Module self;  // the module the graph runs on: the model's, or its batch-norm-folded copy
  std::shared_ptr<torch::jit::Graph> graph;
  std::unique_ptr<torch::jit::Code> code;
  std::vector<std::string> tapped;
  std::map<std::string, std::string> skipped;
};
}  // namespace detail
using detail::Compiled;

struct Model::Impl {
  torch::jit::Module module;
  std::string name;
  std::vector<std::string> paths;
  // What an ONNX file adds (empty for TorchScript); models derived from this one keep it.
  struct Names {
    std::map<std::string, std::string> aliases;    // ONNX node/value names -> module path
    std::map<std::string, std::string> described;  // module path -> ONNX output value names
    std::vector<int64_t> input_shape;
    bool one_image = false;  // the graph's input has no batch axis
    detail::OnnxImport::Canvas canvas;  // a detector's padded canvas (content_fraction)
  } onnx;
  bool fused_attention = false;  // the graphs hold aten::_native_multi_head_attention (tap.h)
  // How the forward takes its batch: as one tensor, or as a List[Tensor] of images (torchvision's
  // detectors, which resize and normalise each image themselves); and the defaults of the arguments
  // after it (a detector's `targets=None`), which lumen never sets.
  bool list_input = false;
  std::vector<torch::IValue> trailing;
  ForwardMode mode = ForwardMode::Plain;
  // ChannelsLast: `module` with its batch norms folded into the convolutions before them. Forwards that
  // tap or replace none of `folded->paths`, under any rule but LRP's (which treats a batch norm as a
  // layer of its own), run on it; the rest run on `module`. `module` itself stays the file's.
  std::optional<detail::FoldedModule> folded;
  std::string fingerprint;
  std::mutex mutex;  // guards the caches below; the modules themselves are never mutated after load
  std::map<std::string, std::shared_ptr<Compiled>> cache;
  std::map<std::string, int64_t> convolutions_after;  // by module path; guarded by `mutex`
  std::map<std::vector<int64_t>, ActivationBytes> activation_bytes;  // by input shape; guarded by `mutex`
  std::map<std::pair<int64_t, int64_t>, std::pair<double, double>> onnx_content;  // by input size; guarded by `mutex`
  mutable std::atomic<int64_t> passes{0};
  // Wall time inside executions. Executions that overlap (extra passes side by side, serve's jobs)
  // count once, so that the total stays a share of the elapsed time.
  struct BusyClock {
    std::mutex mutex;
    int running = 0;
    std::chrono::steady_clock::time_point since;
    std::atomic<int64_t> ns{0};
    void enter() {
      std::lock_guard<std::mutex> lock(mutex);
      if (running++ == 0) since = std::chrono::steady_clock::now();
    }
    void leave() {
      std::lock_guard<std::mutex> lock(mutex);
      if (--running == 0) ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - since).count();
    }
  };
  mutable BusyClock forward_clock;

  std::string resolve(const std::string& layer) const;
  std::pair<double, double> padded_canvas(int64_t height, int64_t width);

  std::shared_ptr<Compiled> compiled(detail::RewriteOptions options) {
    // Fused inference attention has no backward: lumen's graphs always compute it written out.
    options.decompose_attention = fused_attention;
    bool use_folded = folded.has_value() && options.rule != BackwardRule::Lrp && !folded->paths.count(options.replace);
    for (const auto& l : options.taps) use_folded = use_folded && !folded->paths.count(l);
    std::string key = std::string(use_folded ? "F" : "U") + std::to_string(options.lenient) + std::to_string(static_cast<int>(options.rule)) +
                      std::to_string(options.strict_nonlinearities) + std::to_string(options.attention) + options.replace + "\n" +
                      (options.rule == BackwardRule::Lrp ? options.lrp.signature() + "\n" : std::string());
    for (const auto& l : options.taps) key += l + "\n";
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    const torch::jit::Module& self = use_folded ? folded->module : module;
    auto result = detail::rewrite_forward(self, options);
    auto c = std::make_shared<Compiled>();
    c->self = self;
    c->graph = result.graph;
    c->code = std::make_unique<torch::jit::Code>(result.graph, "lumen_forward");
    c->tapped = std::move(result.tapped);
    c->skipped = std::move(result.skipped);
    cache.emplace(key, c);
    return c;
  }

  // `counted`: the pass counts in passes() (lumen's own probes do not).
  torch::IValue run(const Compiled& c, const torch::Tensor& input, const torch::Tensor& extra = {}, bool counted = true) const {
    auto layout = [this](const torch::Tensor& t) {
      return mode == ForwardMode::ChannelsLast && t.dim() == 4 ? t.contiguous(at::MemoryFormat::ChannelsLast) : t;
    };
    torch::jit::Stack stack{c.self._ivalue()};
    if (list_input)
      stack.emplace_back(c10::List<torch::Tensor>(layout(input).unbind(0)));
    else
      stack.emplace_back(layout(input));
    stack.insert(stack.end(), trailing.begin(), trailing.end());
    if (extra.defined()) stack.push_back(layout(extra));
    torch::jit::InterpreterState state(*c.code);
    if (counted) ++passes;
    struct Running {  // counts the time also when the run throws
      BusyClock& clock;
      explicit Running(BusyClock& c) : clock(c) { clock.enter(); }
      ~Running() { clock.leave(); }
    } running(forward_clock);
    auto failure = [&](const std::string& message) {
      const std::string where = failing_submodule(message);
      return Error("model '" + name + "' failed on an input of shape " + c10::str(input.sizes()) +
                   (where.empty() ? "" : " in '" + where + "'") + ": " + first_line(message));
    };
    try {
      state.run(stack);
    } catch (const c10::Error& e) {
      throw failure(e.what_without_backtrace());
    } catch (const std::runtime_error& e) {  // the interpreter rethrows kernel errors as JITException
      throw failure(e.what());
    }
    return stack.back();
  }
};

Model Model::from_module(torch::jit::Module module, std::string name) {
  Model m;
  m.impl_ = std::make_shared<Impl>();
  {
    // Under no-grad the cloned parameters are leaves, whose requires_grad flag may be changed.
    torch::NoGradGuard no_grad;
    module = module.clone();
  }
  // lumen's copy never needs parameter gradients: with none requiring grad, nothing below a captured
  // layer records autograd history, and backward passes stop at the layer.
  for (auto p : module.parameters()) p.requires_grad_(false);
  module.eval();
  for (const auto& sub : module.named_modules()) {
    if (!sub.name.empty()) m.impl_->paths.push_back(sub.name);
  }
  m.impl_->fused_attention = detail::has_fused_attention(module);
  if (auto forward = module.find_method("forward")) {
    const auto& args = forward->function().getSchema().arguments();
    if (args.size() >= 2) m.impl_->list_input = args[1].type()->isSubtypeOf(*c10::ListType::ofTensors());
    for (size_t i = 2; i < args.size(); ++i) {
      if (!args[i].default_value())
        throw Error("model '" + name + "': its forward takes more than the image batch ('" + args[i].name() + "' has no default)");
      m.impl_->trailing.push_back(*args[i].default_value());
    }
  }
  m.impl_->module = std::move(module);
  m.impl_->name = std::move(name);
  return m;
}

namespace {
// A TorchScript zip whose tensor records were cut short still loads: each storage is allocated at the
// size its pickle declares and filled with what the record holds. So every storage of a parameter or
// buffer must have a record of its own size in the archive's data/ folder (matched as multisets: the
// record each storage came from is the unpickler's secret).
void check_storages(const torch::jit::Module& module, const std::string& path) {
  std::map<size_t, int64_t> need;  // storage bytes -> count
  std::set<const void*> seen;
  auto add = [&](const at::Tensor& t) {
    if (t.defined() && t.has_storage() && t.storage().nbytes() > 0 && seen.insert(t.storage().data()).second) ++need[t.storage().nbytes()];
  };
  for (const auto& p : module.named_parameters(/*recurse=*/true)) add(p.value);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) add(b.value);
  caffe2::serialize::PyTorchStreamReader reader(path);
  for (const auto& name : reader.getAllRecords()) {
    if (name.rfind("data/", 0) != 0) continue;
    const size_t bytes = std::get<1>(reader.getRecord(name));
    if (auto it = need.find(bytes); it != need.end() && it->second > 0) --it->second;
  }
  for (const auto& [bytes, missing] : need)
    if (missing > 0)
      throw Error("model " + path + " is damaged: " + std::to_string(missing) + " of its tensors need " + std::to_string(bytes) +
                  " bytes of data that the file does not hold (a record was cut short)");
}
}  // namespace

namespace {

// An operator no library registered (torchvision::nms in a scripted detector) comes from a library the
// user can load; say how.
std::string ops_hint(const std::string& message) {
  const auto at = message.find("Unknown builtin op: ");
  if (at == std::string::npos) return "";
  std::string op = message.substr(at + 20);
  op = op.substr(0, op.find_first_of(".\n"));
  const std::string ns = op.substr(0, op.find("::"));
  return " (the model calls " + ns + "'s own operators: load the library that registers them with --ops-library" +
         (ns == "torchvision" ? ", e.g. python3-torchvision's torchvision/_C*.so)" : ")");
}

// Size and 64-bit FNV-1a of the bytes: a cache key that changes whenever the file does (not a
// security hash; nothing is trusted on its strength).
std::string fingerprint_of(const std::string& bytes) {
  const uint64_t h = detail::fnv1a(bytes);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%zu-%016llx", bytes.size(), static_cast<unsigned long long>(h));
  return buf;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

Model Model::load(const std::string& path) {
  require_regular_file(path, "model file");
  auto ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".onnx") {
    auto imported = detail::import_onnx(path);
    Model m = from_module(imported.module, std::filesystem::path(path).filename().string());
    // A graph taking one image [3, H, W] runs a batch of one, which is what the rest of lumen sees.
    auto shape = std::move(imported.input_shape);
    const bool one_image = detail::one_image(shape);
    if (one_image) shape.insert(shape.begin(), 1);
    m.impl_->onnx = {std::move(imported.aliases), std::move(imported.described), std::move(shape), one_image, std::move(imported.canvas)};
    m.impl_->fingerprint = fingerprint_of(file_bytes(path));
    return m;
  }
  std::string fingerprint;
  {
    const std::string bytes = file_bytes(path);
    detail::check_archive(bytes, path);
    fingerprint = fingerprint_of(bytes);
  }
  auto load = [&path] {
    torch::jit::Module module;
    try {
      module = torch::jit::load(path, torch::kCPU);
    } catch (const c10::Error& e) {
      throw Error("cannot load model " + path + " as TorchScript: " + first_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw Error("cannot load model " + path + " as TorchScript: " + first_line(e.what()) + ops_hint(e.what()));
    }
    if (!module.find_method("forward")) throw Error("model " + path + " has no forward() method");
    try {
      check_storages(module, path);
    } catch (const c10::Error& e) {
      throw Error("cannot read model " + path + ": " + first_line(e.what_without_backtrace()));
    }
    return module;
  };
  // First in a child process: what LibTorch's reader does with a hostile file stays there.
  detail::try_in_child("model " + path, [&] { load(); });
  torch::jit::Module module = load();
  Model m = from_module(module, std::filesystem::path(path).filename().string());
  m.impl_->fingerprint = fingerprint;
  return m;
}

const std::string& Model::name() const { return impl_->name; }
std::vector<int64_t> Model::declared_input_shape() const { return impl_->onnx.input_shape; }
std::string Model::layer_path(const std::string& layer) const { return impl_->resolve(layer); }
// An ONNX export that pads its resized image (OnnxImport::Canvas) holds the sizes in its graph: one
// uncounted forward of a zero image at this input size measures the resized image against the canvas,
// once per size. Pads anywhere but at the end of each axis leave the map as it is.
std::pair<double, double> Model::Impl::padded_canvas(int64_t height, int64_t width) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = onnx_content.find({height, width}); it != onnx_content.end()) return it->second;
  }
  std::pair<double, double> fraction{1.0, 1.0};
  const auto& c = onnx.canvas;
  try {
    detail::RewriteOptions options;
    options.taps = {c.resized, c.padded};
    if (!c.pads.empty()) options.taps.push_back(c.pads);
    const auto code = compiled(options);
    torch::NoGradGuard no_grad;
    const auto out = run(*code, torch::zeros({1, 3, height, width}), {}, /*counted=*/false).toTuple();
    const auto resized = out->elements().at(1).toTensor(), padded = out->elements().at(2).toTensor();
    std::vector<int64_t> pads = c.constant_pads;
    if (!c.pads.empty()) {
      const auto t = out->elements().at(3).toTensor().to(torch::kLong).flatten().contiguous();
      pads.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    }
    const int64_t rank = padded.dim();
    bool at_end = rank >= 2 && resized.dim() == rank && static_cast<int64_t>(pads.size()) == 2 * rank;
    for (int64_t i = 0; at_end && i < rank; ++i) at_end = pads[static_cast<size_t>(i)] == 0;
    if (at_end && padded.size(-2) > 0 && padded.size(-1) > 0)
      fraction = {static_cast<double>(resized.size(-2)) / static_cast<double>(padded.size(-2)),
                  static_cast<double>(resized.size(-1)) / static_cast<double>(padded.size(-1))};
  } catch (const std::exception&) {
    // A graph lumen misread: its maps are stretched over the whole canvas, as before it was read.
  }
  std::lock_guard<std::mutex> lock(mutex);
  onnx_content[{height, width}] = fraction;
  return fraction;
}

std::pair<double, double> Model::content_fraction(int64_t height, int64_t width) const {
  if (!impl_->onnx.canvas.padded.empty()) return height > 0 && width > 0 ? impl_->padded_canvas(height, width) : std::make_pair(1.0, 1.0);
  const auto& root = impl_->module;
  if (!impl_->list_input || !root.hasattr("transform") || !root.attr("transform").isObject()) return {1.0, 1.0};
  const auto transform = root.attr("transform").toObject();
  const auto has = [&](const char* name) { return transform->type()->hasAttribute(name); };
  if (!has("min_size") || !has("max_size") || !has("size_divisible")) return {1.0, 1.0};
  const auto divisible = transform->getAttr("size_divisible");
  if (!divisible.isInt() || divisible.toInt() < 1 || height < 1 || width < 1) return {1.0, 1.0};
  double rows = static_cast<double>(height), cols = static_cast<double>(width);
  if (has("fixed_size") && !transform->getAttr("fixed_size").isNone()) {  // (width, height), no aspect kept
    const auto fixed = transform->getAttr("fixed_size").toTupleRef().elements();
    if (fixed.size() != 2) return {1.0, 1.0};
    rows = static_cast<double>(fixed[1].toInt()), cols = static_cast<double>(fixed[0].toInt());
  } else {
    // torchvision's _resize_image_and_masks at inference: the last min_size, the scale that fits both
    // sides, and interpolate's floor of the scaled size.
    const auto min_sizes = transform->getAttr("min_size");
    const auto max_size = transform->getAttr("max_size");
    int64_t min_size = 0;
    if (min_sizes.isTuple() && !min_sizes.toTupleRef().elements().empty()) min_size = min_sizes.toTupleRef().elements().back().toInt();
    else if (min_sizes.isIntList() && !min_sizes.toIntVector().empty()) min_size = min_sizes.toIntVector().back();
    if (min_size < 1 || !max_size.isInt()) return {1.0, 1.0};
    const double scale = std::min(static_cast<double>(min_size) / std::min(rows, cols), static_cast<double>(max_size.toInt()) / std::max(rows, cols));
    rows = std::floor(rows * scale), cols = std::floor(cols * scale);
  }
  const double d = static_cast<double>(divisible.toInt());
  return {rows / (std::ceil(rows / d) * d), cols / (std::ceil(cols / d) * d)};
}
int64_t Model::images_per_forward() const { return impl_->onnx.one_image ? 1 : 0; }

namespace {

// A constant int list in a graph (prim::Constant, or a ListConstruct of constants); empty otherwise.
std::vector<int64_t> constant_ints(torch::jit::Value* v) {
  if (auto c = torch::jit::toIValue(v); c && c->isIntList()) return c->toIntVector();
  std::vector<int64_t> out;
  if (v->node()->kind() != c10::prim::ListConstruct) return out;
  for (auto* in : v->node()->inputs()) {
    auto c = torch::jit::toIValue(in);
    if (!c || !c->isInt()) return {};
    out.push_back(c->toInt());
  }
  return out;
}

// A convolution module's stride: its attribute (scripted, ONNX-imported), or the constant its graph
// passes to the convolution (a trace keeps no attributes but parameters, a module written as
// TorchScript has none).
std::vector<int64_t> conv_stride(const torch::jit::Module& m) {
  if (m.hasattr("stride")) {
    const auto v = m.attr("stride");
    std::vector<int64_t> out;
    if (v.isTuple())
      for (const auto& e : v.toTupleRef().elements()) out.push_back(e.isInt() ? e.toInt() : 0);
    else if (v.isIntList())
      out = v.toIntVector();
    if (!out.empty()) return out;
  }
  auto method = m.find_method("forward");
  if (!method) return {};
  for (auto* n : method->graph()->nodes())
    if (n->kind() == c10::aten::_convolution || n->kind() == c10::aten::conv2d) return constant_ints(n->input(3));
  return {};
}

}  // namespace

int64_t Model::patch_stride() const {
  for (const auto& sub : impl_->module.named_modules()) {
    // Any module with a 4-D weight that it convolves with: nn.Conv2d, an imported ONNX Conv, or a
    // model's own patch embedding written as torch.conv2d.
    if (!sub.value.hasattr("weight") || !sub.value.attr("weight").isTensor() || sub.value.attr("weight").toTensor().dim() != 4) continue;
    const auto kernel = sub.value.attr("weight").toTensor().sizes().slice(2).vec();
    const auto stride = conv_stride(sub.value);
    if (stride.size() == 2 && stride == kernel && stride[0] == stride[1] && stride[0] > 1) return stride[0];
  }
  return 0;
}

Model Model::with_module(torch::jit::Module module, std::string name) const {
  Model m = from_module(std::move(module), std::move(name));
  m.impl_->onnx = impl_->onnx;
  return m;
}

ForwardMode parse_forward_mode(const std::string& name) {
  if (name == "plain") return ForwardMode::Plain;
  if (name == "channels-last") return ForwardMode::ChannelsLast;
  throw Error("unknown forward mode '" + name + "' (expected auto, plain or channels-last)");
}

std::string to_string(ForwardMode mode) { return mode == ForwardMode::ChannelsLast ? "channels-last" : "plain"; }

Model Model::with_forward_mode(ForwardMode mode) const {
  Model m = with_module(impl_->module, impl_->name);  // a clone of the weights
  m.impl_->fingerprint = impl_->fingerprint;
  m.impl_->mode = mode;
  if (mode == ForwardMode::ChannelsLast) {
    torch::NoGradGuard no_grad;
    m.impl_->folded = detail::fold_batch_norms(m.impl_->module);
    auto to_channels_last = [](const torch::jit::Module& root) {
      for (auto sub : root.modules())
        for (const auto& p : sub.named_parameters(/*recurse=*/false))
          if (p.value.dim() == 4) sub.register_parameter(p.name, p.value.contiguous(at::MemoryFormat::ChannelsLast), /*is_buffer=*/false);
    };
    to_channels_last(m.impl_->module);
    if (m.impl_->folded) to_channels_last(m.impl_->folded->module);
  }
  return m;
}

ForwardMode Model::forward_mode() const { return impl_->mode; }
int64_t Model::folded_batch_norms() const { return impl_->folded ? static_cast<int64_t>(impl_->folded->paths.size() / 2) : 0; }
const std::string& Model::fingerprint() const { return impl_->fingerprint; }

std::string Model::Impl::resolve(const std::string& layer) const {
  auto it = onnx.aliases.find(layer);
  return it == onnx.aliases.end() ? layer : it->second;
}
int64_t Model::passes() const { return impl_->passes.load(); }
// An ONNX graph with a fixed input size computes something else at another size (its reshapes and
// pools hold the numbers it was exported with), so another size is refused unless the dimension is symbolic.
void Model::check_input_size(const torch::Tensor& input) const {
  if (impl_->onnx.one_image && input.size(0) != 1)
    throw Error("model " + impl_->name + " takes one image per forward (its ONNX input [3, H, W] has no batch axis), not " +
                std::to_string(input.size(0)) + "; give it batches of one image");
  const auto& d = impl_->onnx.input_shape;
  if (d.size() != 4 || input.dim() != 4) return;
  for (int64_t i = 2; i < 4; ++i)
    if (d[i] > 0 && d[i] != input.size(i))
      throw Error("model " + impl_->name + " declares a fixed " + std::to_string(d[2]) + "x" + std::to_string(d[3]) + " input, not " +
                  std::to_string(input.size(2)) + "x" + std::to_string(input.size(3)) + " (from the card or --input-size)");
}

double Model::forward_seconds() const { return static_cast<double>(impl_->forward_clock.ns.load()) * 1e-9; }
const torch::jit::Module& Model::module() const { return impl_->module; }
torch::IValue Model::run_module(const torch::Tensor& batch) const {
  std::vector<torch::IValue> args{impl_->list_input ? torch::IValue(c10::List<torch::Tensor>(batch.unbind(0))) : torch::IValue(batch)};
  args.insert(args.end(), impl_->trailing.begin(), impl_->trailing.end());
  return impl_->module.get_method("forward")(std::move(args));
}
std::vector<std::string> Model::module_paths() const { return impl_->paths; }

void Model::check_layer(const std::string& layer) const {
  const auto& paths = impl_->paths;
  const std::string path = impl_->resolve(layer);
  if (std::find(paths.begin(), paths.end(), path) != paths.end()) return;
  if (paths.empty())
    throw Error("unknown layer '" + layer + "': the model has no submodules (a frozen or fully inlined TorchScript file?)");
  std::vector<std::string> names = paths;
  for (const auto& a : impl_->onnx.aliases) names.push_back(a.first);
  std::string close;
  for (const auto& n : closest_names(layer, names, 5)) close += (close.empty() ? "" : ", ") + n;
  throw Error("unknown layer '" + layer + "'; closest: " + close + " (lumen layers MODEL lists all)");
}

Capture Model::forward(const torch::Tensor& input, const std::vector<std::string>& layers, BackwardRule rule,
                       bool strict, bool attention) const {
  check_input_size(input);
  detail::RewriteOptions options;
  for (const auto& l : layers) {
    check_layer(l);
    options.taps.push_back(impl_->resolve(l));
  }
  options.rule = rule;
  if (rule == BackwardRule::Lrp) options.lrp = LrpRules::current();
  options.strict_nonlinearities = strict;
  options.attention = attention;
  auto compiled = impl_->compiled(options);
  Capture cap;
  detail::AttentionMaps recorded;
  c10::intrusive_ptr<c10::ivalue::Tuple> out;
  {
    std::optional<detail::AttentionRecording> recording;
    if (attention) recording.emplace(recorded);
    out = impl_->run(*compiled, input).toTuple();
  }
  cap.attention = std::move(recorded.maps);
  cap.attention_scopes = std::move(recorded.scopes);
  cap.output = out->elements().at(0);
  for (size_t i = 0; i < layers.size(); ++i) cap.layers.push_back(out->elements().at(i + 1).toTensor());
  return cap;
}

torch::IValue Model::forward_from(const std::string& layer, const torch::Tensor& activation, const torch::Tensor& input) const {
  check_layer(layer);
  detail::RewriteOptions options;
  options.replace = impl_->resolve(layer);
  auto compiled = impl_->compiled(options);
  return impl_->run(*compiled, input, activation).toTuple()->elements().at(0);
}

int64_t Model::convolutions_after(const std::string& layer) const {
  check_layer(layer);
  const std::string path = impl_->resolve(layer);
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (auto it = impl_->convolutions_after.find(path); it != impl_->convolutions_after.end()) return it->second;
  }
  detail::RewriteOptions options;
  options.replace = path;
  auto graph = impl_->compiled(options)->graph->copy();
  torch::jit::Inline(*graph);  // submodule calls off the rewritten path still hold their convolutions
  int64_t count = 0;
  std::function<void(torch::jit::Block*)> visit = [&](torch::jit::Block* block) {
    for (auto* node : block->nodes()) {
      const std::string kind = node->kind().toQualString();
      count += kind.find("conv") != std::string::npos && kind.rfind("aten::", 0) == 0;
      for (auto* b : node->blocks()) visit(b);
    }
  };
  visit(graph->block());
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->convolutions_after[path] = count;
  return count;
}

std::vector<LayerInfo> Model::layers(const std::vector<int64_t>& input_shape) const {
  detail::RewriteOptions options;
  options.taps = impl_->paths;
  options.lenient = true;
  auto compiled = impl_->compiled(options);
  std::string shape;
  for (int64_t d : input_shape) shape += (shape.empty() ? "[" : ",") + std::to_string(d);
  shape += "]";
  int64_t elements = 1;
  for (int64_t d : input_shape) {
    if (d < 1 || d > (int64_t{1} << 20)) throw Error("input shape " + shape + " is not a size lumen can probe the model with");
    elements = elements > (int64_t{1} << 40) / d ? (int64_t{1} << 40) : elements * d;
  }
  // The probe's input alone, as float; the layers' outputs take a multiple of it.
  const double mib = static_cast<double>(elements) * 4.0 / (1024.0 * 1024.0);
  if (mib > std::max(64.0, available_mib() / 8))
    throw Error("probing the model at input " + shape + " would need " + std::to_string(static_cast<int64_t>(mib)) +
                " MiB for the input alone, more than the memory available allows; give a smaller --input-size");
  torch::NoGradGuard no_grad;
  auto out = impl_->run(*compiled, torch::zeros(input_shape)).toTuple();
  std::map<std::string, torch::Tensor> shapes;
  for (size_t i = 0; i < compiled->tapped.size(); ++i)
    shapes[compiled->tapped[i]] = out->elements().at(i + 1).toTensor();
  std::vector<LayerInfo> infos;
  for (const auto& path : impl_->paths) {
    LayerInfo info;
    info.path = path;
    auto type = detail::submodule(impl_->module, path).type()->name();
    info.type = type ? type->name() : "?";
    if (auto it = shapes.find(path); it != shapes.end()) {
      info.output_kind = "tensor";
      info.shape = it->second.sizes().vec();
    } else {
      info.output_kind = compiled->skipped.count(path) ? compiled->skipped.at(path) : "not called";
    }
    if (auto it = impl_->onnx.described.find(path); it != impl_->onnx.described.end()) info.outputs = it->second;
    infos.push_back(std::move(info));
  }
  return infos;
}

Model::ActivationBytes Model::activation_bytes(const std::vector<int64_t>& row_shape) const {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (auto it = impl_->activation_bytes.find(row_shape); it != impl_->activation_bytes.end()) return it->second;
  }
  ActivationBytes bytes;
  const auto infos = layers(row_shape);
  for (const auto& info : infos) {
    if (info.output_kind != "tensor") continue;
    int64_t b = 4;  // float32; integer outputs are rare and small
    for (int64_t d : info.shape) b *= d;
    bytes.largest = std::max(bytes.largest, b);
    // A leaf: no other module path lies below this one.
    const bool leaf = std::none_of(infos.begin(), infos.end(), [&](const LayerInfo& o) { return o.path.rfind(info.path + ".", 0) == 0; });
    if (leaf) bytes.leaves += b;
  }
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->activation_bytes[row_shape] = bytes;
  return bytes;
}

torch::Tensor default_logits(const torch::IValue& output) {
  if (output.isTensor()) return output.toTensor();
  if (output.isTuple()) {
    for (const auto& e : output.toTuple()->elements())
      if (e.isTensor()) return e.toTensor();
  }
  if (output.isList()) {
    for (const auto& e : output.toList())
      if (static_cast<torch::IValue>(e).isTensor()) return static_cast<torch::IValue>(e).toTensor();
  }
  throw Error("model output is " + output.tagKind() +
              ", not a tensor of class scores; pass a target function that selects the output to explain");
}

}  // namespace lumen
