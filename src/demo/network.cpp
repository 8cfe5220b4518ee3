// The demo network is built as a TorchScript module directly (module.define), so the file lumen trains
// and saves is an ordinary TorchScript model that goes through the same loading and capture path as
// any user's model.
#include <lumen/demo.h>
#include <lumen/image.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adam.h>

#include <chrono>
#include <cmath>

namespace lumen::demo {
namespace {

torch::jit::Module conv_block(const std::string& name, int cin, int cout, torch::Generator& gen) {
  torch::jit::Module m("__torch__.lumen_demo." + name);
  auto w = torch::randn({cout, cin, 3, 3}, gen) * std::sqrt(2.0 / (cin * 9));
  m.register_parameter("weight", w, false);
  m.register_parameter("bias", torch::zeros({cout}), false);
  // Batch norm makes training from scratch reliable within the demo's time budget.
  m.register_parameter("bn_weight", torch::ones({cout}), false);
  m.register_parameter("bn_bias", torch::zeros({cout}), false);
  m.register_buffer("running_mean", torch::zeros({cout}));
  m.register_buffer("running_var", torch::ones({cout}));
  m.register_attribute("training", c10::BoolType::get(), true);
  m.define(R"(
def forward(self, x):
    x = torch.conv2d(x, self.weight, self.bias, [1, 1], [1, 1])
    x = torch.batch_norm(x, self.bn_weight, self.bn_bias, self.running_mean, self.running_var, self.training, 0.1, 1e-5, False)
    return torch.relu(x)
)");
  return m;
}

}  // namespace

torch::jit::Module make_network(int classes, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  torch::jit::Module features("__torch__.lumen_demo.Features");
  features.register_attribute("training", c10::BoolType::get(), true);
  features.register_module("block1", conv_block("Block1", 3, 16, gen));
  features.register_module("block2", conv_block("Block2", 16, 32, gen));
  features.register_module("block3", conv_block("Block3", 32, 32, gen));
  features.register_module("block4", conv_block("Block4", 32, 64, gen));
  features.define(R"(
def forward(self, x):
    x = torch.max_pool2d(self.block1.forward(x), [2, 2])
    x = torch.max_pool2d(self.block2.forward(x), [2, 2])
    return self.block4.forward(self.block3.forward(x))
)");
  torch::jit::Module classifier("__torch__.lumen_demo.Linear");
  classifier.register_attribute("training", c10::BoolType::get(), true);
  classifier.register_parameter("weight", torch::randn({classes, 64}, gen) * std::sqrt(1.0 / 64), false);
  classifier.register_parameter("bias", torch::zeros({classes}), false);
  classifier.define(R"(
def forward(self, x):
    return torch.addmm(self.bias, x, self.weight.t())
)");
  torch::jit::Module net("__torch__.lumen_demo.ShapesNet");
  net.register_attribute("training", c10::BoolType::get(), true);
  net.register_module("features", features);
  net.register_module("classifier", classifier);
  net.define(R"(
def forward(self, x):
    x = self.features.forward(x)
    return self.classifier.forward(x.mean([2, 3]))
)");
  return net;
}

TrainReport train(torch::jit::Module& net, const TrainOptions& options, const std::function<void(int, float)>& progress) {
  auto start = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> params;
  for (auto p : net.parameters()) {
    p.requires_grad_(true);
    params.push_back(p);
  }
  net.train();
  torch::optim::Adam opt(params, torch::optim::AdamOptions(options.learning_rate));
  std::mt19937 rng(static_cast<uint32_t>(options.seed));
  const Preprocess pre = preprocess(options.scenes.size);
  TrainReport report;
  for (int step = 0; step < options.steps; ++step) {
    std::vector<cv::Mat> images;
    std::vector<int64_t> labels;
    for (int i = 0; i < options.batch; ++i) {
      Scene s = make_scene(rng, options.scenes);
      images.push_back(s.image);
      labels.push_back(s.label);
    }
    auto x = to_batch(images, pre);
    auto y = torch::tensor(labels, torch::kLong);
    opt.zero_grad();
    auto logits = net.forward({x}).toTensor();
    auto loss = torch::nll_loss(torch::log_softmax(logits, 1), y);
    loss.backward();
    opt.step();
    report.final_loss = loss.item<float>();
    if (progress && (step % 25 == 0 || step + 1 == options.steps)) progress(step + 1, report.final_loss);
  }
  for (auto& p : params) p.requires_grad_(false);
  net.eval();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace lumen::demo
