#include "methods/kit/cam.h"

namespace lumen::detail {

// Only the first component is needed: the top eigenvector of the smaller Gram matrix (positions or
// channels) gives it, which costs a fraction of LAPACK's full SVD once both sides are in the hundreds
// (a volume's d*h*w positions).
torch::Tensor first_component(const torch::Tensor& stack) {
  const auto n = stack.size(0), c = stack.size(1), h = stack.size(2), w = stack.size(3);
  std::vector<torch::Tensor> maps;
  for (int64_t i = 0; i < n; ++i) {
    auto m = stack[i].reshape({c, h * w}).t().to(torch::kFloat64);  // positions x channels
    m = m - m.mean(0, true);
    torch::Tensor proj;
    if (m.size(0) <= m.size(1)) {  // m m^T: u1 with eigenvalue s1^2, and m v1 = s1 u1
      const auto [values, vectors] = at::linalg_eigh(m.matmul(m.t()));
      proj = vectors.select(1, vectors.size(1) - 1) * values[values.size(0) - 1].clamp_min(0).sqrt();
    } else {  // m^T m: v1
      const auto [values, vectors] = at::linalg_eigh(m.t().matmul(m));
      proj = m.matmul(vectors.select(1, vectors.size(1) - 1));
    }
    auto channel_sum = m.sum(1);
    if ((proj * channel_sum).sum().item<double>() < 0) proj = -proj;
    maps.push_back(proj.reshape({h, w}).to(stack.scalar_type()));
  }
  return torch::stack(maps);
}

Needs layer_gradients() {
  Needs n;
  n.layer_gradients = true;
  return n;
}

namespace {

// ReLU of the stack's channel sum, or of its first principal component under --eigen-smooth.
Result reduce_stack(const torch::Tensor& stack, const Evidence& e) {
  const bool eigen = e.settings->flag("eigen_smooth");
  Result r{torch::relu(eigen ? first_component(stack) : stack.sum(1))};
  if (eigen) r.extra.assign(static_cast<size_t>(stack.size(0)), nlohmann::json{{"eigen_smooth", true}});
  return r;
}

Method cam_method(std::string name, std::string paper, Needs needs) {
  Method m(std::move(name), std::move(paper), Family::Cam);
  m.needs = std::move(needs);
  m.volumes = true;  // weights and evidence per position, sums over all positions
  m.params = {flag("eigen_smooth", "CAM methods: first principal component of the weighted activations instead of their sum")};
  return m;
}

}  // namespace

Method evidence_cam(std::string name, std::string paper, Needs needs, CamEvidence evidence) {
  Method m = cam_method(std::move(name), std::move(paper), std::move(needs));
  m.compute = [evidence](const Evidence& e, size_t layer) { return reduce_stack(evidence(e.layers[layer], e, layer), e); };
  return m;
}

Method weighted_cam(std::string name, std::string paper, Needs needs, CamWeights weights) {
  Method m = cam_method(std::move(name), std::move(paper), std::move(needs));
  m.compute = [weights](const Evidence& e, size_t layer) {
    const LayerTensors& t = e.layers[layer];
    const torch::Tensor w = weights(t, e, layer), a = t.activations;
    const bool per_channel = w.dim() == 4 && w.size(0) == a.size(0) && w.size(2) == 1 && w.size(3) == 1;
    if (!per_channel || e.settings->flag("eigen_smooth")) return reduce_stack(w * a, e);
    // sum_k w_k A_k as one batched product [N,1,C] x [N,C,hw]: no [N,C,h,w] product in memory, and
    // (channels-last or not) the activations are read in place. Six CAMs in one request spent most of
    // their arithmetic on those products.
    const auto map = w.flatten(1).unsqueeze(1).bmm(a.flatten(2)).view({a.size(0), a.size(2), a.size(3)});
    return Result{torch::relu(map)};
  };
  return m;
}

}  // namespace lumen::detail
