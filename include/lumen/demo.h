// lumen: the built-in default. Procedurally drawn scenes (one shape on a textured background, its box
// known) and a small CNN that lumen trains on them in C++ and saves as TorchScript, so that `lumen demo`
// needs no downloads and its explanations can be scored against ground truth.
#pragma once

#include <lumen/map.h>
#include <lumen/image.h>

#include <torch/script.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen::demo {

struct Scene {
  cv::Mat image;   // BGR 8-bit
  int label = 0;
  Box box;         // tight box of the drawn shape
  bool cue = false;  // carries the spurious corner mark (see SceneOptions::spurious_cue)
};

struct SceneOptions {
  int size = 64;
  // Bias-audit variant: with this probability a scene of class 0 gets a small white mark in the top-left
  // corner, and other classes never do — a shortcut a network can learn instead of the shape.
  double spurious_cue = 0.0;
};

const std::vector<std::string>& class_names();   // circle, square, triangle, cross
Scene make_scene(std::mt19937& rng, const SceneOptions& options = {});

Preprocess preprocess(int size = 64);
// The card lumen writes beside the demo model (same format as ../shared/models/*.json).
std::string card_json(const std::string& model_file, const std::string& labels_file, int size = 64);

// Untrained network: features.block1..block4 (3x3 conv + ReLU, 2x2 max-pool after blocks 1 and 2),
// global average pooling, classifier (linear). features.block4 is its Grad-CAM layer (16x16 at 64x64).
torch::jit::Module make_network(int classes, uint64_t seed = 1);
// Untrained hybrid vision transformer, timm-style: a convolutional stem and 2x2 patches (patch_embed:
// an 8x8 grid of tokens at 64x64), a class token, four pre-norm blocks (blocks.0..3: norm1, attn with qkv
// and an explicit softmax, norm2, fc1, fc2) of width 64 with 4 heads, norm, head on the class token.
// blocks.3.norm1 is its CAM layer; its attention is what attention-rollout and transformer-attribution
// read. Trains with Adam at 1e-3 and 100 warm-up steps.
torch::jit::Module make_vit(int classes, uint64_t seed = 1);

struct TrainOptions {
  int steps = 400;
  int batch = 32;
  double learning_rate = 3e-3;
  int warmup_steps = 0;  // the learning rate rises linearly over these first steps
  uint64_t seed = 7;
  SceneOptions scenes;
};
struct TrainReport {
  double seconds = 0;
  float final_loss = 0;
};
// Adam on freshly drawn scenes; `progress(step, loss)` is called every few steps.
TrainReport train(torch::jit::Module& net, const TrainOptions& options,
                  const std::function<void(int, float)>& progress = {});

// Intersection over union of two boxes (exclusive right/bottom edges).
double iou(const Box& a, const Box& b);

}  // namespace lumen::demo
#pragma GCC visibility pop
