// lumen: where space is in a layer's output. The CAM methods work on [N,C,h,w] maps; a vision
// transformer's layers give token sequences [N, P + h*w, C] (P prefix tokens: a class token, a
// distillation token, register tokens) and Swin-style models give channels-last maps [N,h,w,C].
// lumen reads the layout from the shape, the input size and the model's patch embedding, says what it
// read, and refuses a shape that admits more than one reading — pytorch-grad-cam's hand-written
// reshape_transform, made impossible to get wrong. A 3-D network's layers give volumes [N,C,d,h,w]
// (video clips, CT/MRI): the methods see them with the slices stacked, [N,C,d*h,w], so that every
// formula that reduces over positions reads all d*h*w of them unchanged.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

struct TokenLayout {
  enum class Kind { ChannelsFirst, ChannelsLast, Tokens, Volume };
  Kind kind = Kind::ChannelsFirst;
  int64_t grid_h = 0, grid_w = 0;  // the spatial grid
  int64_t grid_d = 0;              // Volume: the slices (frames)
  int64_t prefix = 0;              // Tokens: the tokens before the grid's (class, distillation, registers)
  // "[N,C,h,w] map", "channels-last 7x7 map", "1 prefix token + 14x14 grid", "[N,C,d,h,w] volume, 2x7x7".
  std::string describe() const;
};

// A layout stated by the user (--tokens grid=14x14,prefix=1,channels=last); what is left out is read
// from the shape.
struct TokenHint {
  int64_t grid_h = -1, grid_w = -1, prefix = -1;
  std::string channels;  // "", "first" or "last"
  bool given() const { return grid_h > 0 || prefix >= 0 || !channels.empty(); }
};
TokenHint parse_tokens(const std::string& text);  // throws lumen::Error naming the bad field

// The layout of a layer output of `shape` ([N, ...]) for a model input of input_h x input_w.
// `patch` is the stride of the model's patch embedding (Model::patch_stride(); 0 when there is none),
// which picks the grid of a token sequence when the shape alone admits several. Throws lumen::Error
// saying what was seen and how to give --tokens when the shape admits no reading or more than one.
TokenLayout infer_layout(const std::vector<int64_t>& shape, int64_t input_h, int64_t input_w, int64_t patch = 0,
                         const TokenHint& hint = {});

// The layer's output as [N,C,h,w] (a volume's slices stacked: h here is d*h), and back: `like` is an output of the layer (one row or M) whose
// prefix tokens the tokens get back.
torch::Tensor to_spatial(const torch::Tensor& output, const TokenLayout& layout);
torch::Tensor from_spatial(const torch::Tensor& spatial, const TokenLayout& layout, const torch::Tensor& like);

}  // namespace lumen
#pragma GCC visibility pop
