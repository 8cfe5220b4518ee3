// The explainer: the stages of pipeline.h, top to bottom.
#include <lumen/error.h>
#include <lumen/explain.h>

#include "core/side_by_side.h"
#include "explain/pipeline.h"

#include <tuple>

namespace lumen {
namespace {

using detail::Canvas;
using PerImage = std::vector<std::vector<Map>>;

// evidence -> methods -> finish, for every target, on one forward.
PerImage explain_forward(const Model& model, const detail::Plan& plan, const detail::Forward& forward, const std::vector<Target>& targets,
                         const torch::Tensor& batch, const Preprocess& preprocess, const ExplainOptions& opt, const Canvas& canvas) {
  torch::AutoGradMode grad_mode(true);
  PerImage maps(canvas.images.size());
  // Targets that read this forward's output (a segmentation's predicted pixels) are fixed from it here:
  // aug-smooth's transformed copies bind to their own forward.
  std::vector<Target> bound;
  for (const auto& t : targets) bound.push_back(t.bind ? t.bind(forward.capture.output) : t);
  const auto shared = detail::shared_layer_gradients(model, plan, forward, bound, batch);
  for (size_t t = 0; t < bound.size(); ++t) {
    const detail::TargetPasses passes(model, plan, forward, bound[t], batch, preprocess);
    const auto evidence = detail::gather_evidence(model, plan, forward, bound[t], t + 1 == bound.size(),
                                                  shared.empty() ? torch::Tensor() : shared[t], passes);
    const auto jobs = detail::run_methods(plan, evidence);
    detail::finish_jobs(jobs, plan, forward, bound[t], evidence.target_values, canvas, maps);
  }
  detail::combine_maps(maps, opt, plan, canvas);
  return maps;
}

Canvas canvas_of(const Model& model, const torch::Tensor& batch, const std::vector<cv::Size>& sizes, const ExplainOptions& opt,
                 const std::vector<std::string>& labels) {
  Canvas c;
  const int64_t h = batch.size(-2), w = batch.size(-1);
  c.input = cv::Size(static_cast<int>(w), static_cast<int>(h));
  std::tie(c.content_rows, c.content_cols) = model.content_fraction(h, w);
  if (batch.dim() == 5) c.depth = static_cast<int>(batch.size(2));
  c.images = sizes.empty() ? std::vector<cv::Size>(static_cast<size_t>(batch.size(0)), c.input) : sizes;
  c.box_threshold = opt.box_threshold;
  c.boxes = opt.boxes;
  c.compat = opt.shared.compat == Compat::PytorchGradCam;
  c.labels = &labels;
  return c;
}

// Rows [first, last) of a request as a request of their own: the targets re-indexed to those rows,
// and each row named by its source, or by its index in the whole request.
struct RowsPart {
  ExplainOptions options;
  std::vector<std::string> names;
};
RowsPart rows_part(const ExplainOptions& opt, const std::vector<std::string>& sources, int64_t first, int64_t last) {
  RowsPart part{opt, {}};
  std::vector<int64_t> rows;
  for (int64_t i = first; i < last; ++i) {
    const auto n = static_cast<size_t>(i);
    rows.push_back(i);
    part.names.push_back(n < sources.size() ? sources[n] : "image " + std::to_string(i));
  }
  for (auto& t : part.options.targets) t = target_for_images(t, rows);
  return part;
}

}  // namespace

Explainer::Explainer(Model model, Preprocess preprocess, std::vector<std::string> labels)
    : model_(std::move(model)), preprocess_(std::move(preprocess)), labels_(std::move(labels)), references_(std::make_shared<detail::ReferenceCache>()) {}

std::vector<ImageExplanation> Explainer::explain(const std::vector<cv::Mat>& images, const ExplainOptions& opt,
                                                 const std::vector<std::string>& sources) const {
  if (images.empty()) throw Error("no images to explain");
  check_request(opt);  // before any image is preprocessed
  // A model that takes one image per forward explains the images in turn, each target bound to its
  // image's rows (targets read from the output are read from each image's own).
  if (const auto per = static_cast<size_t>(model_.images_per_forward()); per > 0 && images.size() > per) {
    std::vector<ImageExplanation> all;
    for (size_t first = 0; first < images.size(); first += per) {
      const size_t last = std::min(images.size(), first + per);
      const auto part = rows_part(opt, sources, static_cast<int64_t>(first), static_cast<int64_t>(last));
      for (auto& e : explain({images.begin() + static_cast<std::ptrdiff_t>(first), images.begin() + static_cast<std::ptrdiff_t>(last)}, part.options,
                             part.names))
        all.push_back(std::move(e));
    }
    return all;
  }
  std::vector<cv::Size> sizes;
  for (const auto& img : images) sizes.push_back(img.size());
  return explain_tensor(to_batch(images, preprocess_), opt, sizes, sources);
}

// Each group of rows is a batch of its own, on a thread of its own (core/side_by_side.h); the
// per-image results are joined in order.
std::vector<ImageExplanation> Explainer::explain_groups(const std::vector<std::pair<int64_t, int64_t>>& groups, const torch::Tensor& batch,
                                                        const ExplainOptions& opt, const std::vector<cv::Size>& sizes,
                                                        const std::vector<std::string>& sources) const {
  std::vector<std::vector<ImageExplanation>> parts(groups.size());
  detail::side_by_side(static_cast<int64_t>(groups.size()), [&](int64_t g) {
    const auto [first, last] = groups[static_cast<size_t>(g)];
    const auto part = rows_part(opt, sources, first, last);
    const auto part_sizes = sizes.empty() ? std::vector<cv::Size>()
                                          : std::vector<cv::Size>(sizes.begin() + static_cast<std::ptrdiff_t>(first), sizes.begin() + static_cast<std::ptrdiff_t>(last));
    parts[static_cast<size_t>(g)] = explain_tensor(batch.slice(0, first, last), part.options, part_sizes, part.names);
  });
  std::vector<ImageExplanation> all;
  for (auto& p : parts)
    for (auto& e : p) all.push_back(std::move(e));
  return all;
}

torch::Tensor Explainer::embed(const std::vector<cv::Mat>& images, const OutputSelector& select) const {
  if (images.empty()) throw Error("no images to embed");
  torch::NoGradGuard no_grad;
  const auto output = model_.forward(to_batch(images, preprocess_)).output;
  const torch::Tensor e = (select ? select : OutputSelector(default_logits))(output);
  if (e.dim() < 2 || e.size(0) != static_cast<int64_t>(images.size()))
    throw Error("the model's output " + c10::str(e.sizes()) + " is no embedding of each image ([N, D])");
  return e.detach().flatten(1).to(torch::kFloat32);
}

std::vector<ImageExplanation> Explainer::explain_tensor(const torch::Tensor& batch, const ExplainOptions& opt,
                                                        const std::vector<cv::Size>& sizes,
                                                        const std::vector<std::string>& sources) const {
  if (!sizes.empty() && static_cast<int64_t>(sizes.size()) != batch.size(0)) throw Error("one image size per batch row is needed");
  if (!sizes.empty() && batch.dim() == 5) throw Error("a volume's maps come at the model input's size; give no image sizes for a [N,C,D,H,W] batch");
  const detail::Plan plan = detail::make_plan(model_, opt, batch);
  if (const auto groups = detail::row_groups(plan, opt, batch.size(0)); groups.size() > 1) return explain_groups(groups, batch, opt, sizes, sources);
  const detail::Forward forward = detail::run_forward(model_, plan, batch, preprocess_, references_.get());
  const detail::Targets targets = detail::resolve_targets(opt, forward.capture.output, batch.size(0), labels_);
  const Canvas canvas = canvas_of(model_, batch, sizes, opt, labels_);
  PerImage maps = explain_forward(model_, plan, forward, targets.targets, batch, preprocess_, opt, canvas);
  if (plan.shared.aug_smooth)
    detail::aug_smooth(maps, batch, canvas, [&](const torch::Tensor& augmented) {
      return explain_forward(model_, plan, detail::run_forward(model_, plan, augmented, preprocess_, references_.get()), targets.targets, augmented, preprocess_, opt, canvas);
    });

  std::vector<ImageExplanation> results(static_cast<size_t>(batch.size(0)));
  for (size_t i = 0; i < results.size(); ++i) {
    results[i].source = i < sources.size() ? sources[i] : "image " + std::to_string(i);
    results[i].width = canvas.images[i].width;
    results[i].height = canvas.images[i].height;
    results[i].depth = canvas.depth;
    results[i].top = targets.top[i];
    results[i].maps = std::move(maps[i]);
  }
  return results;
}

}  // namespace lumen
