// Internal: ONNX tensors (initialisers, constants, attribute values) decoded into LibTorch tensors,
// with external data read from the model's own folder only.
#pragma once

#include <torch/script.h>

#include <string>

namespace onnx {
class TensorProto;
}

namespace lumen::detail {

// Nothing an image classifier holds comes near this; a declared tensor above it is treated as a
// corrupt or hostile file rather than allocated.
constexpr int64_t kMaxTensorBytes = int64_t{4} << 30;

// An ONNX data type as a LibTorch scalar type; `what` names the tensor in the error.
c10::ScalarType scalar_type(int32_t onnx_type, const std::string& what);
// `folder`: where external data may be read from (empty forbids it).
torch::Tensor decode_tensor(const onnx::TensorProto& t, const std::string& folder, const std::string& what);

}  // namespace lumen::detail
