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

// Module::train() sets `training` on every submodule; each must have one.
torch::jit::Module module(const std::string& name) {
  torch::jit::Module m("__torch__.lumen_demo." + name);
  m.register_attribute("training", c10::BoolType::get(), true);
  return m;
}

torch::jit::Module linear(const std::string& name, int in, int out, torch::Generator& gen) {
  torch::jit::Module m = module(name);
  m.register_parameter("weight", torch::randn({out, in}, gen) * std::sqrt(1.0 / in), false);
  m.register_parameter("bias", torch::zeros({out}), false);
  m.define(R"(
def forward(self, x):
    return torch.linear(x, self.weight, self.bias)
)");
  return m;
}

torch::jit::Module layer_norm(const std::string& name, int dim) {
  torch::jit::Module m = module(name);
  m.register_parameter("weight", torch::ones({dim}), false);
  m.register_parameter("bias", torch::zeros({dim}), false);
  m.define(R"(
def forward(self, x):
    return torch.layer_norm(x, [self.weight.size(0)], self.weight, self.bias, 1e-6)
)");
  return m;
}

// A pre-norm transformer block as timm writes it: one qkv projection and an explicit softmax.
torch::jit::Module vit_block(int index, int dim, int heads, torch::Generator& gen) {
  const std::string id = std::to_string(index);
  torch::jit::Module attn = module("Attention" + id);
  attn.register_module("qkv", linear("Qkv" + id, dim, 3 * dim, gen));
  attn.register_module("proj", linear("Proj" + id, dim, dim, gen));
  attn.register_attribute("heads", c10::IntType::get(), heads);
  attn.define(R"(
def forward(self, x):
    b, t, c = x.size(0), x.size(1), x.size(2)
    qkv = self.qkv.forward(x).reshape([b, t, 3, self.heads, c // self.heads]).permute([2, 0, 3, 1, 4])
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (float(c // self.heads) ** -0.5), -1)
    return self.proj.forward(torch.matmul(attn, v).transpose(1, 2).reshape([b, t, c]))
)");
  torch::jit::Module block = module("Block" + id);
  block.register_module("norm1", layer_norm("Norm1_" + id, dim));
  block.register_module("attn", attn);
  block.register_module("norm2", layer_norm("Norm2_" + id, dim));
  block.register_module("fc1", linear("Fc1_" + id, dim, 2 * dim, gen));
  block.register_module("fc2", linear("Fc2_" + id, 2 * dim, dim, gen));
  block.define(R"(
def forward(self, x):
    x = x + self.attn.forward(self.norm1.forward(x))
    return x + self.fc2.forward(torch.gelu(self.fc1.forward(self.norm2.forward(x))))
)");
  return block;
}

}  // namespace

torch::jit::Module make_vit(int classes, uint64_t seed) {
  constexpr int kDim = 64, kHeads = 4, kDepth = 4, kGrid = 8;
  auto gen = at::detail::createCPUGenerator(seed);
  // A convolutional stem before the patch embedding, as in hybrid ViTs (Dosovitskiy et al. 2021, sec.
  // 3.1; Xiao et al. 2021, "Early convolutions help transformers see better"): on the scenes a plain
  // 8x8-patch ViT stays at chance for a thousand steps, this one learns in a few hundred.
  torch::jit::Module patch = module("PatchEmbed");
  patch.register_module("stem1", conv_block("Stem1", 3, 32, gen));
  patch.register_module("stem2", conv_block("Stem2", 32, 48, gen));
  torch::jit::Module proj = module("Proj");
  proj.register_parameter("weight", torch::randn({kDim, 48, 2, 2}, gen) * std::sqrt(1.0 / (48 * 4)), false);
  proj.register_parameter("bias", torch::zeros({kDim}), false);
  proj.define(R"(
def forward(self, x):
    return torch.conv2d(x, self.weight, self.bias, [2, 2])
)");
  patch.register_module("proj", proj);
  patch.define(R"(
def forward(self, x):
    x = torch.max_pool2d(self.stem1.forward(x), [2, 2])
    return self.proj.forward(torch.max_pool2d(self.stem2.forward(x), [2, 2]))
)");
  torch::jit::Module blocks = module("Blocks");
  for (int i = 0; i < kDepth; ++i) blocks.register_module(std::to_string(i), vit_block(i, kDim, kHeads, gen));
  // Numbered blocks (blocks.0, as timm's nn.Sequential) are no identifiers: getattr names them.
  std::string body = "def forward(self, x):\n";
  for (int i = 0; i < kDepth; ++i) body += "    x = getattr(self, \"" + std::to_string(i) + "\").forward(x)\n";
  blocks.define(body + "    return x\n");
  torch::jit::Module net = module("ShapesViT");
  net.register_module("patch_embed", patch);
  net.register_parameter("cls_token", torch::randn({1, 1, kDim}, gen) * 0.02, false);
  net.register_parameter("pos_embed", torch::randn({1, 1 + kGrid * kGrid, kDim}, gen) * 0.02, false);
  net.register_module("blocks", blocks);
  net.register_module("norm", layer_norm("Norm", kDim));
  net.register_module("head", linear("Head", kDim, classes, gen));
  net.define(R"(
def forward(self, x):
    x = self.patch_embed.forward(x).flatten(2).transpose(1, 2)
    x = torch.cat([self.cls_token.expand([x.size(0), -1, -1]), x], 1) + self.pos_embed
    x = self.norm.forward(self.blocks.forward(x))
    return self.head.forward(x.select(1, 0))
)");
  return net;
}

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
    if (options.warmup_steps > 0)  // transformers need the learning rate ramped up (Goyal et al. 2017)
      for (auto& group : opt.param_groups())
        static_cast<torch::optim::AdamOptions&>(group.options()).lr(options.learning_rate * std::min(1.0, (step + 1.0) / options.warmup_steps));
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
