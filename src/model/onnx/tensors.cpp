// Parsing uses the protobuf classes Debian's libonnx-dev ships (the official onnx.proto, generated),
// rather than a vendored copy of the schema: one less file to keep in step with ONNX releases.
#include "model/onnx/tensors.h"

#include <lumen/error.h>

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace lumen::detail {
namespace fs = std::filesystem;
namespace {

constexpr int64_t kMaxRank = 8;

// Reads external tensor data; `folder` is the model's own folder, which the file must stay inside.
std::string read_external(const onnx::TensorProto& t, const std::string& folder, const std::string& what) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto& kv : t.external_data()) {
    try {
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset") offset = std::stoll(kv.value());
      else if (kv.key() == "length") length = std::stoll(kv.value());
    } catch (const std::exception&) {
      throw Error(what + ": external data " + kv.key() + " '" + kv.value() + "' is not a number");
    }
  }
  if (folder.empty()) throw Error(what + " refers to external data, which is not allowed here");
  if (location.empty()) throw Error(what + " refers to external data but names no file");
  fs::path rel(location);
  bool escapes = rel.is_absolute() || rel.has_root_name() || rel.has_root_directory();
  for (const auto& part : rel) escapes |= part == "..";
  const fs::path base = fs::weakly_canonical(fs::path(folder));
  const fs::path file = fs::weakly_canonical(base / rel);
  auto mismatch = std::mismatch(base.begin(), base.end(), file.begin(), file.end());
  if (escapes || mismatch.first != base.end())
    throw Error(what + ": external data file '" + location + "' lies outside the model's folder");
  std::error_code ec;
  const auto size = static_cast<int64_t>(fs::file_size(file, ec));
  if (ec || !fs::is_regular_file(file)) throw Error(what + ": external data file '" + location + "' not found");
  if (length < 0) length = size - offset;
  if (offset < 0 || length < 0 || offset > size || length > size - offset || length > kMaxTensorBytes)
    throw Error(what + ": external data range " + std::to_string(offset) + "+" + std::to_string(length) + " does not fit '" +
                location + "' (" + std::to_string(size) + " bytes)");
  std::ifstream in(file, std::ios::binary);
  in.seekg(offset);
  std::string bytes(static_cast<size_t>(length), '\0');
  if (!in.read(bytes.data(), length)) throw Error(what + ": cannot read external data from '" + location + "'");
  return bytes;
}

// Values stored in the typed fields rather than raw bytes.
torch::Tensor typed_values(const onnx::TensorProto& t, c10::ScalarType type, const std::vector<int64_t>& dims, int64_t numel,
                           const std::string& what) {
  auto count_check = [&](int64_t n) {
    if (n != numel)
      throw Error(what + " declares shape " + c10::str(c10::IntArrayRef(dims)) + " but holds " + std::to_string(n) + " values");
  };
  if (type == c10::kFloat) {
    count_check(t.float_data_size());
    return torch::tensor(std::vector<float>(t.float_data().begin(), t.float_data().end()), torch::kFloat).reshape(dims);
  }
  if (type == c10::kDouble) {
    count_check(t.double_data_size());
    return torch::tensor(std::vector<double>(t.double_data().begin(), t.double_data().end()), torch::kDouble).reshape(dims);
  }
  if (type == c10::kLong) {
    count_check(t.int64_data_size());
    return torch::tensor(std::vector<int64_t>(t.int64_data().begin(), t.int64_data().end()), torch::kLong).reshape(dims);
  }
  count_check(t.int32_data_size());
  const auto ints = torch::tensor(std::vector<int32_t>(t.int32_data().begin(), t.int32_data().end()), torch::kInt);
  // Half and bfloat16: each int32 holds the 16 bits of one value.
  if (type == c10::kHalf || type == c10::kBFloat16) return ints.to(torch::kShort).view(type).reshape(dims);
  return ints.to(type).reshape(dims);
}

}  // namespace

c10::ScalarType scalar_type(int32_t onnx_type, const std::string& what) {
  switch (onnx_type) {
    case onnx::TensorProto::FLOAT: return c10::kFloat;
    case onnx::TensorProto::UINT8: return c10::kByte;
    case onnx::TensorProto::INT8: return c10::kChar;
    case onnx::TensorProto::INT16: return c10::kShort;
    case onnx::TensorProto::INT32: return c10::kInt;
    case onnx::TensorProto::INT64: return c10::kLong;
    case onnx::TensorProto::BOOL: return c10::kBool;
    case onnx::TensorProto::FLOAT16: return c10::kHalf;
    case onnx::TensorProto::DOUBLE: return c10::kDouble;
    case onnx::TensorProto::BFLOAT16: return c10::kBFloat16;
    default: throw Error(what + " has ONNX data type " + std::to_string(onnx_type) + ", which lumen does not read");
  }
}

torch::Tensor decode_tensor(const onnx::TensorProto& t, const std::string& folder, const std::string& what) {
  const auto type = scalar_type(t.data_type(), what);
  std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  if (static_cast<int64_t>(dims.size()) > kMaxRank) throw Error(what + " has rank " + std::to_string(dims.size()));
  int64_t numel = 1;
  const int64_t item = static_cast<int64_t>(c10::elementSize(type));
  for (auto d : dims) {
    if (d < 0 || (d > 0 && numel > kMaxTensorBytes / item / d))
      throw Error(what + " declares an impossible shape " + c10::str(c10::IntArrayRef(dims)));
    numel *= d;
  }
  const int64_t bytes_needed = numel * item;
  auto from_bytes = [&](const std::string& raw) {
    if (static_cast<int64_t>(raw.size()) != bytes_needed)
      throw Error(what + " declares shape " + c10::str(c10::IntArrayRef(dims)) + " (" + std::to_string(bytes_needed) +
                  " bytes) but holds " + std::to_string(raw.size()) + " bytes");
    auto out = torch::empty(dims, torch::TensorOptions().dtype(type));
    if (bytes_needed) std::memcpy(out.data_ptr(), raw.data(), raw.size());
    return out;
  };
  torch::Tensor out;
  if (t.data_location() == onnx::TensorProto::EXTERNAL) out = from_bytes(read_external(t, folder, what));
  else if (t.has_raw_data()) out = from_bytes(t.raw_data());
  else out = typed_values(t, type, dims, numel, what);
  // CPU kernels for convolutions and matmuls want float32; half-precision weights are widened once here.
  if (type == c10::kHalf || type == c10::kBFloat16) out = out.to(torch::kFloat);
  return out;
}

}  // namespace lumen::detail
