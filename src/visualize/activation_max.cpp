#include <lumen/error.h>
#include <lumen/visualize.h>

#include <torch/csrc/autograd/autograd.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace lumen {

cv::Mat to_image(const torch::Tensor& input, const Preprocess& pre) {
  auto x = input.dim() == 4 ? input[0] : input;
  auto mean = torch::tensor(pre.mean).view({-1, 1, 1}), std = torch::tensor(pre.std).view({-1, 1, 1});
  auto pix = (x.detach() * std + mean).clamp(0, 255).round().to(torch::kUInt8);
  if (pre.rgb) pix = pix.flip({0});  // to BGR for OpenCV
  pix = pix.permute({1, 2, 0}).contiguous();
  cv::Mat img(static_cast<int>(pix.size(0)), static_cast<int>(pix.size(1)), CV_8UC3);
  std::memcpy(img.data, pix.data_ptr<uint8_t>(), static_cast<size_t>(pix.numel()));
  return img;
}

Visualization visualize(const Model& model, const Preprocess& pre, const VisualizeOptions& o) {
  const bool unit = !o.layer.empty();
  if (!unit && o.cls < 0) throw Error("visualize needs --class, or --layer with --channel");
  if (unit && o.channel < 0) throw Error("--layer needs --channel (the unit to visualise)");
  if (o.steps < 1) throw Error("--steps must be at least 1");
  if (unit) model.check_layer(o.layer);
  auto gen = at::detail::createCPUGenerator(o.seed);
  auto mean = torch::tensor(pre.mean).view({1, -1, 1, 1}), std = torch::tensor(pre.std).view({1, -1, 1, 1});
  const auto lo = (0 - mean) / std, hi = (255 - mean) / std;  // the valid pixel range in model-input units
  // Start from a mid-grey image with a little noise.
  auto x = ((torch::full({1, 3, pre.height, pre.width}, 127.5) - mean) / std) + 0.1 * torch::randn({1, 3, pre.height, pre.width}, gen);
  const double rho = o.rho > 0 ? o.rho : 0.5 * std::sqrt(static_cast<double>(x.numel()));

  auto objective = [&](const torch::Tensor& in, torch::Tensor* logits) {
    auto cap = model.forward(in, unit ? std::vector<std::string>{o.layer} : std::vector<std::string>{});
    if (unit) {
      const auto& a = cap.layers[0];
      if (a.dim() < 2 || o.channel >= a.size(1))
        throw Error("layer '" + o.layer + "' has " + (a.dim() < 2 ? std::string("no channels") : std::to_string(a.size(1)) + " channels") +
                    "; channel " + std::to_string(o.channel) + " does not exist");
      return a.select(1, o.channel).mean();
    }
    auto l = default_logits(cap.output);
    if (l.dim() != 2 || o.cls >= l.size(1))
      throw Error("class " + std::to_string(o.cls) + " out of range: the model outputs " + c10::str(l.sizes()));
    if (logits) *logits = l.detach();
    return l[0][o.cls];
  };

  Visualization v;
  {
    torch::NoGradGuard ng;
    v.scores.push_back(objective(x, nullptr).item<double>());
  }
  for (int step = 1; step <= o.steps; ++step) {
    torch::AutoGradMode grad(true);
    // Jitter: the image is shifted before the forward pass and the gradient shifted back, so the ascent
    // cannot rely on exact pixel positions (high-frequency patterns).
    int64_t dy = 0, dx = 0;
    if (o.jitter > 0) {
      dy = torch::randint(-o.jitter, o.jitter + 1, {1}, gen).item<int64_t>();
      dx = torch::randint(-o.jitter, o.jitter + 1, {1}, gen).item<int64_t>();
    }
    auto xi = torch::roll(x, {dy, dx}, {2, 3}).detach().requires_grad_(true);
    auto s = objective(xi, nullptr);
    auto goal = s;
    if (!unit && o.l2 > 0) goal = goal - o.l2 * xi.pow(2).sum();
    if (o.tv > 0) {
      auto tv = (xi.slice(2, 1) - xi.slice(2, 0, -1)).abs().sum() + (xi.slice(3, 1) - xi.slice(3, 0, -1)).abs().sum();
      goal = goal - o.tv * tv;
    }
    auto g = torch::autograd::grad({goal}, {xi})[0];
    g = torch::roll(g, {-dy, -dx}, {2, 3});
    // Normalised step: the same progress per step whatever the objective's scale.
    x = x + o.lr * g / (g.abs().mean() + 1e-12);
    {
      torch::NoGradGuard ng;
      if (o.blur_every > 0 && step % o.blur_every == 0 && o.blur_sigma > 0) x = gaussian_blur(x, o.blur_sigma);
      if (unit) x = x * (rho / (x.norm().item<double>() + 1e-12));  // Erhan et al.: ||x|| = rho
      x = torch::max(torch::min(x, hi), lo);
      v.scores.push_back(objective(x, nullptr).item<double>());
    }
    if (o.progress) o.progress(step, v.scores.back());
  }
  v.input = x.detach();
  v.initial = v.scores.front();
  v.final = v.scores.back();
  if (!unit) {
    torch::NoGradGuard ng;
    torch::Tensor logits;
    objective(x, &logits);
    v.top1 = logits[0].argmax().item<int64_t>();
  }
  if (!std::isfinite(v.final)) throw Error("activation maximisation diverged (the score is not finite); lower --lr");
  return v;
}

}  // namespace lumen
