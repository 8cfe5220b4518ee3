// lumen's Python module (lumen._lumen; lumen/__init__.py is its front): the C++ API with the same names,
// images in as numpy arrays, maps out as numpy arrays that look into lumen's own matrices (no copies),
// metadata as dicts. Every call into the engine releases the GIL, so Python threads explain in parallel.
#include <lumen/lumen.h>

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <torch/script.h>

#include <opencv2/imgproc.hpp>

#include <cstring>
#include <map>
#include <set>
#include <sstream>

namespace py = pybind11;
using namespace lumen;

namespace {

// nlohmann::json <-> Python through the json module: exact for everything run.json holds, and one
// well-tested converter instead of a hand-written walk over both type systems.
py::object to_python(const nlohmann::json& j) { return py::module_::import("json").attr("loads")(j.dump()); }
nlohmann::json from_python(const py::handle& o) {
  // Scalars directly, so that a NaN reaches lumen's own check of the setting (JSON has no NaN).
  if (py::isinstance<py::bool_>(o)) return o.cast<bool>();
  if (py::isinstance<py::int_>(o)) return o.cast<int64_t>();
  if (py::isinstance<py::float_>(o)) return o.cast<double>();
  if (py::isinstance<py::str>(o)) return o.cast<std::string>();
  return nlohmann::json::parse(py::module_::import("json").attr("dumps")(o).cast<std::string>());
}

// A matrix of a Map as a numpy array over the Map's own memory; `owner` (the Python object holding the
// Map) stays alive as long as the array does. None for a matrix the map does not have. A volume's
// slices (stacked in the matrix, `depth` of them) come out as (depth, H, W).
py::object view(const cv::Mat& m, py::handle owner, int depth = 0) {
  if (m.empty()) return py::none();
  CV_Assert(m.depth() == CV_32F && m.isContinuous());
  std::vector<py::ssize_t> shape{m.rows, m.cols}, strides{static_cast<py::ssize_t>(m.step[0]), static_cast<py::ssize_t>(sizeof(float) * m.channels())};
  if (depth > 0 && m.channels() == 1 && m.rows % depth == 0) {
    shape = {depth, m.rows / depth, m.cols};
    strides.insert(strides.begin(), static_cast<py::ssize_t>(m.step[0]) * (m.rows / depth));
  }
  if (m.channels() > 1) {
    shape.push_back(m.channels());
    strides.push_back(sizeof(float));
  }
  py::array a(py::dtype::of<float>(), shape, strides, m.ptr<float>(), owner);
  a.attr("setflags")(py::arg("write") = false);  // the map's statistics and box were measured on these values
  return std::move(a);
}

// An image from Python: a file path, or an H x W [x 1|3|4] array of uint8 or float (0..255) in RGB order
// (as PIL, imageio and matplotlib give them), returned as the BGR 8-bit image lumen reads from files.
cv::Mat to_image(const py::handle& o) {
  if (py::isinstance<py::str>(o)) return read_image(o.cast<std::string>());
  auto a = py::array::ensure(o);
  if (!a) throw Error("an image must be a file path or a numpy array (H x W x 3, RGB), not " + std::string(py::str(py::type::of(o))));
  if (a.ndim() == 3 && a.shape(2) == 1) a = py::array(a.attr("reshape")(a.shape(0), a.shape(1)));
  if (a.ndim() != 2 && !(a.ndim() == 3 && (a.shape(2) == 3 || a.shape(2) == 4)))
    throw Error("an image array must be H x W, H x W x 3 (RGB) or H x W x 4 (RGBA); this one has shape " + std::string(py::str(a.attr("shape"))));
  if (a.shape(0) < 1 || a.shape(1) < 1) throw Error("an image array is empty");
  if (static_cast<long long>(a.shape(0)) * a.shape(1) > image_limits().max_pixels)
    throw Error("an image array of " + std::to_string(a.shape(0)) + " x " + std::to_string(a.shape(1)) + " pixels is over the limit");
  const int channels = a.ndim() == 2 ? 1 : static_cast<int>(a.shape(2));
  cv::Mat m;
  if (py::isinstance<py::array_t<uint8_t>>(a)) {
    auto c = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(a);
    m = cv::Mat(static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)), CV_8UC(channels), const_cast<uint8_t*>(c.data())).clone();
  } else {
    auto c = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
    if (!c) throw Error("an image array must hold numbers (uint8 or float pixels 0..255)");
    cv::Mat f(static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)), CV_32FC(channels), const_cast<float*>(c.data()));
    if (!cv::checkRange(f)) throw Error("an image array holds NaN or infinite values");
    f.convertTo(m, CV_8U);  // saturating: values outside 0..255 are clipped, as an 8-bit image would be
  }
  cv::Mat bgr;
  if (channels == 1) cv::cvtColor(m, bgr, cv::COLOR_GRAY2BGR);
  else if (channels == 3) cv::cvtColor(m, bgr, cv::COLOR_RGB2BGR);
  else cv::cvtColor(m, bgr, cv::COLOR_RGBA2BGR);
  return bgr;
}

// A preprocessed batch [N,C,H,W] (float32, C order) as a tensor that owns its memory.
torch::Tensor to_batch_tensor(const py::handle& o) {
  auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(o);
  if (!a || (a.ndim() != 4 && a.ndim() != 5))
    throw Error("a preprocessed batch must be a float array of shape [N, C, H, W] (a 3-D network's: [N, C, D, H, W])");
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  return torch::from_blob(const_cast<float*>(a.data()), shape, torch::kFloat32).clone();
}

template <class T>
std::vector<T> list_or_empty(const py::object& o) {
  if (o.is_none()) return {};
  if (py::isinstance<py::str>(o)) return {o.cast<T>()};
  return o.cast<std::vector<T>>();
}

// explain()'s keyword arguments -> ExplainOptions: the CLI's names and defaults; any other keyword is a
// method setting by its name (steps=64, smooth_base="integrated-gradients"), checked by check_request.
ExplainOptions options_from(const py::object& methods, const py::object& layers, int top_k, const py::object& classes, const std::string& score,
                            bool counterfactual, const std::string& output, const std::string& aggregate, const py::object& layer_weights,
                            bool contrast, float box_threshold, const std::string& compat, int rows_per_pass, int64_t memory_mib,
                            bool aug_smooth, const std::string& nonlinearity, const std::string& tokens, const py::object& progress,
                            const py::kwargs& settings) {
  ExplainOptions opt;
  opt.methods = list_or_empty<std::string>(methods);
  opt.layers = list_or_empty<std::string>(layers);
  opt.top_k = top_k;
  opt.classes = list_or_empty<int64_t>(classes);
  opt.score = parse_score(score);
  opt.counterfactual = counterfactual;
  if (!output.empty()) opt.select = output_path(output);
  opt.aggregate = aggregate;
  opt.layer_weights = list_or_empty<float>(layer_weights);
  opt.contrast = contrast;
  if (!(box_threshold > 0 && box_threshold < 1)) throw Error("box_threshold must be between 0 and 1");
  opt.box_threshold = box_threshold;
  if (compat == "papers") opt.shared.compat = Compat::Papers;
  else if (compat == "pytorch-grad-cam") opt.shared.compat = Compat::PytorchGradCam;
  else throw Error("compat must be \"papers\" or \"pytorch-grad-cam\", not \"" + compat + "\"");
  if (rows_per_pass < 0 || memory_mib < 0) throw Error("rows_per_pass and memory_mib must not be negative");
  opt.shared.rows_per_pass = rows_per_pass;
  opt.shared.memory_budget_mib = memory_mib;
  opt.shared.aug_smooth = aug_smooth;
  if (nonlinearity != "strict" && nonlinearity != "plain") throw Error("nonlinearity must be \"strict\" or \"plain\"");
  opt.shared.strict_nonlinearities = nonlinearity == "strict";
  if (!tokens.empty()) opt.tokens = parse_tokens(tokens);
  if (!progress.is_none()) {
    // Called from the engine with the GIL released: take it for the call. The engine copies the
    // function freely, so the Python object sits behind a shared_ptr whose last owner takes the GIL
    // to let it go (a py::object must not be touched without the GIL).
    std::shared_ptr<py::object> fn(new py::object(progress), [](py::object* p) {
      py::gil_scoped_acquire gil;
      delete p;
    });
    opt.shared.progress = [fn](const std::string& what, int64_t done, int64_t total) {
      py::gil_scoped_acquire gil;
      (*fn)(what, done, total);
    };
  }
  for (const auto& [key, value] : settings) opt.settings.set(key.cast<std::string>(), from_python(value));
  check_request(opt);
  return opt;
}

// The Python side owns results through shared_ptr, so that views into maps can keep them alive.
using Results = std::vector<std::shared_ptr<ImageExplanation>>;
Results wrap(std::vector<ImageExplanation>&& explained) {
  Results out;
  for (auto& e : explained) out.push_back(std::make_shared<ImageExplanation>(std::move(e)));
  return out;
}

const Map& find_map(const ImageExplanation& e, const std::string& method, const std::string& layer, const std::string& target) {
  const Map* found = nullptr;
  int n = 0;
  for (const auto& m : e.maps)
    if (m.method == method && (layer.empty() || m.layer == layer) && (target.empty() || m.target == target)) {
      if (!found) found = &m;
      ++n;
    }
  if (!found) throw py::key_error("no map of method \"" + method + "\"" + (layer.empty() ? "" : " at layer \"" + layer + "\"") +
                                  (target.empty() ? "" : " for target \"" + target + "\""));
  if (n > 1) throw py::key_error(std::to_string(n) + " maps of method \"" + method + "\" match; give layer= and target= to pick one");
  return *found;
}

}  // namespace

PYBIND11_MODULE(_lumen, m) {
  m.doc() = "lumen: why a deep network decided what it decided (C++ engine; see docs/python.md)";
  m.attr("__version__") = version();
  static py::exception<Error> error(m, "Error", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      error(e.what());
    } catch (const c10::Error& e) {
      // LibTorch's own errors (a shape the model refuses, ...): lumen.Error with the first line, as the
      // command line prints it.
      std::string what = e.what_without_backtrace();
      error(what.substr(0, what.find('\n')).c_str());
    }
  });

  py::class_<LayerInfo>(m, "LayerInfo")
      .def_readonly("path", &LayerInfo::path)
      .def_readonly("type", &LayerInfo::type)
      .def_readonly("shape", &LayerInfo::shape)
      .def_readonly("output_kind", &LayerInfo::output_kind)
      .def("__repr__", [](const LayerInfo& l) { return "<LayerInfo " + l.path + " " + l.type + ">"; });

  py::class_<Model>(m, "Model")
      .def_static("load", [](const std::string& path) {
            py::gil_scoped_release release;
            return Model::load(path);
          }, py::arg("path"), "Load a TorchScript (.pt) or ONNX (.onnx) file.")
      .def_static("_from_bytes", [](const py::bytes& bytes, const std::string& name) {
            std::istringstream in(std::string{bytes});
            torch::jit::Module module;
            {
              py::gil_scoped_release release;
              try {
                module = torch::jit::load(in, torch::kCPU);
              } catch (const c10::Error& e) {
                throw Error("cannot read the script module: " + std::string(e.what_without_backtrace()).substr(0, 200));
              }
            }
            if (!module.find_method("forward")) throw Error("the script module has no forward() method");
            return Model::from_module(module, name);
          }, py::arg("bytes"), py::arg("name"))
      .def_property_readonly("name", &Model::name)
      .def_property_readonly("forward_mode", [](const Model& self) { return to_string(self.forward_mode()); })
      .def("with_forward_mode", [](const Model& self, const std::string& mode) {
            const ForwardMode m = parse_forward_mode(mode);
            py::gil_scoped_release release;
            return self.with_forward_mode(m);
          }, py::arg("mode"), "the model running \"plain\" or \"channels-last\" (maps agree to float rounding)")
      .def("fastest", [](const Model& self, std::vector<int64_t> shape, const std::string& cache) {
            ForwardPlan plan;
            {
              py::gil_scoped_release release;
              plan = plan_forward(self, shape, cache == "default" ? default_forward_cache() : cache);
            }
            py::object model = py::cast(plan.mode == self.forward_mode() ? self : self.with_forward_mode(plan.mode));
            return py::make_tuple(model, py::dict(py::arg("mode") = to_string(plan.mode), py::arg("plain_ms") = plan.plain_ms,
                                                  py::arg("channels_last_ms") = plan.channels_last_ms, py::arg("cached") = plan.cached));
          }, py::arg("shape") = std::vector<int64_t>{1, 3, 224, 224}, py::arg("cache") = "default",
          "(model, plan): the model in the forward mode a short probe found faster at `shape` (as --forward-mode auto)")
      .def("module_paths", &Model::module_paths)
      .def("layers", [](const Model& self, std::vector<int64_t> input_shape) {
            py::gil_scoped_release release;
            return self.layers(input_shape);
          }, py::arg("input_shape") = std::vector<int64_t>{1, 3, 224, 224})
      .def("__repr__", [](const Model& self) { return "<lumen.Model " + self.name() + ">"; });

  py::class_<Preprocess>(m, "Preprocess")
      .def(py::init([](int width, int height, std::vector<float> mean, std::vector<float> std, bool rgb) {
             if (width < 1 || height < 1 || mean.size() != 3 || std.size() != 3) throw Error("Preprocess needs a size and 3 means and 3 stds");
             for (float s : std)
               if (!(s > 0)) throw Error("Preprocess std values must be positive");
             return Preprocess{width, height, mean, std, rgb};
           }),
           py::arg("width") = 224, py::arg("height") = 224, py::arg("mean") = std::vector<float>{0, 0, 0},
           py::arg("std") = std::vector<float>{255, 255, 255}, py::arg("rgb") = true,
           "Model input: stretched to width x height, then (pixel - mean) / std in pixel units (0..255).")
      .def_readonly("width", &Preprocess::width)
      .def_readonly("height", &Preprocess::height)
      .def_readonly("mean", &Preprocess::mean)
      .def_readonly("std", &Preprocess::std)
      .def_readonly("rgb", &Preprocess::rgb);

  py::class_<ModelCard>(m, "ModelCard")
      .def_readonly("name", &ModelCard::name)
      .def_readonly("preprocess", &ModelCard::preprocess)
      .def_readonly("labels", &ModelCard::labels)
      .def_readonly("cam_layer", &ModelCard::cam_layer);
  m.def("load_card", &load_card, py::arg("path"), "Read a model card (JSON): preprocessing, labels, the suggested layer.");

  py::class_<Prediction>(m, "Prediction")
      .def_readonly("cls", &Prediction::cls)
      .def_readonly("label", &Prediction::label)
      .def_readonly("logit", &Prediction::logit)
      .def_readonly("probability", &Prediction::probability)
      .def("__repr__", [](const Prediction& p) { return "<Prediction " + std::to_string(p.cls) + " " + p.label + " p=" + std::to_string(p.probability) + ">"; });

  // Map and ImageExplanation live inside a shared ImageExplanation; a Map handed to Python keeps its
  // explanation alive (reference_internal below).
  py::class_<Map>(m, "Map")
      .def_readonly("method", &Map::method)
      .def_readonly("layer", &Map::layer)
      .def_readonly("target", &Map::target)
      .def_readonly("cls", &Map::cls)
      .def_readonly("label", &Map::label)
      .def_readonly("counterfactual", &Map::counterfactual)
      .def_readonly("contrastive", &Map::contrastive)
      .def_readonly("target_value", &Map::target_value)
      .def_readonly("empty", &Map::empty)
      .def_readonly("signed", &Map::is_signed)
      .def_readonly("depth", &Map::depth, "a volume's slices (a 3-D network's map), else 0")
      .def_property_readonly("map", [](py::object self) { return view(self.cast<const Map&>().normalized, self, self.cast<const Map&>().depth); },
                             "normalised map at image size, float32 in [0, 1] (read-only view); volumes: (D, H, W)")
      .def_property_readonly("raw", [](py::object self) { return view(self.cast<const Map&>().raw, self, self.cast<const Map&>().raw_depth); },
                             "the formula's map at layer (or input) resolution, unnormalised; volumes: (d, h, w)")
      .def_property_readonly("upsampled", [](py::object self) { return view(self.cast<const Map&>().upsampled, self, self.cast<const Map&>().depth); })
      .def_property_readonly("attribution", [](py::object self) { return view(self.cast<const Map&>().attribution, self); },
                             "pixel methods: per-channel attribution at the model's input size (H x W x C), else None")
      .def_property_readonly("box", [](const Map& self) -> py::object {
            if (!self.box.valid) return py::none();
            if (self.depth > 0) return py::make_tuple(self.box.x0, self.box.y0, self.box.z0, self.box.x1, self.box.y1, self.box.z1);
            return py::make_tuple(self.box.x0, self.box.y0, self.box.x1, self.box.y1);
          }, "the paper's box (x0, y0, x1, y1; x1, y1 exclusive), or None; volumes: (x0, y0, z0, x1, y1, z1)")
      .def_property_readonly("detections", [](const Map& self) {
            py::list out;
            for (const auto& d : self.detections)
              out.append(py::dict(py::arg("box") = py::make_tuple(d.x0, d.y0, d.x1, d.y1), py::arg("cls") = d.cls, py::arg("label") = d.label,
                                  py::arg("score") = d.score));
            return out;
          }, "task='detection': the box the map explains, as dicts with box (x0, y0, x1, y1 in image pixels), cls, label and score")
      .def_property_readonly("parts", [](py::object self) {
            // A decomposition's parts (dff's concepts): (raw, map, top) each, the views kept alive by the map.
            py::list out;
            for (const auto& p : self.cast<const Map&>().parts)
              out.append(py::dict(py::arg("raw") = view(p.raw, self), py::arg("map") = view(p.normalized, self), py::arg("top") = p.top));
            return out;
          }, "dff: every concept as a dict with 'raw' (layer resolution), 'map' (normalised, image size) and 'top' (its top-2 Predictions); else []")
      .def_property_readonly("stats", [](const Map& self) { return to_python(map_json(self)["stats"]); })
      .def_property_readonly("extra", [](const Map& self) { return to_python(self.extra); })
      .def("to_dict", [](const Map& self) { return to_python(map_json(self)); }, "the map's entry of run.json")
      .def("__getitem__", [](py::object self, const std::string& key) { return self.attr(key.c_str()); })
      .def("__repr__", [](const Map& self) { return "<lumen.Map " + self.method + " " + self.layer + " " + self.target + ">"; });

  py::class_<ImageExplanation, std::shared_ptr<ImageExplanation>>(m, "ImageExplanation")
      .def_readonly("source", &ImageExplanation::source)
      .def_readonly("width", &ImageExplanation::width)
      .def_readonly("height", &ImageExplanation::height)
      .def_readonly("depth", &ImageExplanation::depth, "a volume's slices (a 3-D network's input), else 0")
      .def_readonly("predictions", &ImageExplanation::top)
      .def_property_readonly("maps", [](py::object self) {
            py::list out;
            for (const auto& map : self.cast<const ImageExplanation&>().maps)
              out.append(py::cast(&map, py::return_value_policy::reference_internal, self));
            return out;
          })
      .def("get", [](py::object self, const std::string& method, const std::string& layer, const std::string& target) {
            return py::cast(&find_map(self.cast<const ImageExplanation&>(), method, layer, target), py::return_value_policy::reference_internal, self);
          }, py::arg("method"), py::arg("layer") = "", py::arg("target") = "", "the one map of `method` (at `layer`, for `target`)")
      .def("__getitem__", [](py::object self, const std::string& method) {
            return py::cast(&find_map(self.cast<const ImageExplanation&>(), method, "", ""), py::return_value_policy::reference_internal, self);
          })
      .def("__len__", [](const ImageExplanation& e) { return e.maps.size(); })
      .def("to_dict", [](const ImageExplanation& e) { return to_python(run_json({e}, nlohmann::json::object())["images"][0]); },
           "the image's entry of run.json")
      .def("__repr__", [](const ImageExplanation& e) { return "<lumen.ImageExplanation " + e.source + ": " + std::to_string(e.maps.size()) + " maps>"; });

  py::class_<Explainer>(m, "Explainer")
      .def(py::init([](const Model& model, const ModelCard& card) { return Explainer(model, card.preprocess, card.labels); }),
           py::arg("model"), py::arg("card"))
      .def(py::init<Model, Preprocess, std::vector<std::string>>(), py::arg("model"), py::arg("preprocess"),
           py::arg("labels") = std::vector<std::string>{})
      .def_property_readonly("model", &Explainer::model)
      .def_property_readonly("preprocess", &Explainer::preprocess)
      .def_property_readonly("labels", &Explainer::labels)
      .def("_explain", [](const Explainer& self, const py::list& images, const py::object& sources, const ExplainOptions& opt) {
            std::vector<cv::Mat> mats;
            for (const auto& img : images) mats.push_back(to_image(img));
            auto names = list_or_empty<std::string>(sources);
            std::vector<ImageExplanation> explained;
            {
              py::gil_scoped_release release;
              explained = self.explain(mats, opt, names);
            }
            return wrap(std::move(explained));
          })
      .def("_embed", [](const Explainer& self, const py::list& images, const std::string& output) {
            std::vector<cv::Mat> mats;
            for (const auto& img : images) mats.push_back(to_image(img));
            torch::Tensor e;
            {
              py::gil_scoped_release release;
              e = self.embed(mats, output.empty() ? OutputSelector() : output_path(output)).contiguous();
            }
            py::array_t<float> out({e.size(0), e.size(1)});
            std::memcpy(out.mutable_data(), e.data_ptr<float>(), sizeof(float) * static_cast<size_t>(e.numel()));
            return out;
          })
      .def("_explain_tensor", [](const Explainer& self, const py::object& batch, const py::object& sizes, const py::object& sources,
                                 const ExplainOptions& opt) {
            torch::Tensor x = to_batch_tensor(batch);
            std::vector<cv::Size> wh;
            for (const auto& [w, h] : list_or_empty<std::pair<int, int>>(sizes)) wh.emplace_back(w, h);
            auto names = list_or_empty<std::string>(sources);
            std::vector<ImageExplanation> explained;
            {
              py::gil_scoped_release release;
              explained = self.explain_tensor(x, opt, wh, names);
            }
            return wrap(std::move(explained));
          });

  py::class_<ExplainOptions>(m, "_Options").def_readwrite("boxes", &ExplainOptions::boxes);
  m.def("_options", &options_from);
  m.def("_with_similarity", [](ExplainOptions opt, const py::array_t<float, py::array::c_style | py::array::forcecast>& concept, bool dissimilar,
                               const std::string& output) {
    const auto t = torch::from_blob(const_cast<float*>(concept.data()), {static_cast<int64_t>(concept.size())}, torch::kFloat32).clone();
    opt.targets = {similarity_target(t, dissimilar, output.empty() ? OutputSelector() : output_path(output))};
    return opt;
  });

  m.def("_image_size", [](const std::string& path) {
    const cv::Mat image = read_image(path);  // as explain reads it (and refuses it)
    return py::make_tuple(image.cols, image.rows);
  });
  // masks: None (the pixels predicted as each class), or 2-D arrays, one for every image or one per image;
  // or `region` (x0, y0, x1, y1) in the pixels of each image, whose (width, height) are `sizes`.
  m.def("_with_segmentation", [](ExplainOptions opt, const std::vector<int64_t>& classes, const py::object& masks, const std::string& output,
                                 const std::vector<double>& region, const std::vector<std::pair<int64_t, int64_t>>& sizes) {
    std::vector<torch::Tensor> regions;
    if (region.size() == 4)
      for (const auto& [w, h] : sizes) {
        regions.push_back(rectangle_region(region[0], region[1], region[2], region[3], w, h));
        if (!regions.back().defined()) throw Error("region= lies outside the image (" + std::to_string(w) + "x" + std::to_string(h) + ")");
      }
    if (!masks.is_none())
      for (const auto& mask : masks.cast<py::list>()) {
        const auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(mask);
        if (!a || a.ndim() != 2) throw Error("mask= must be a 2-D array (H x W; nonzero = inside)");
        regions.push_back(torch::from_blob(const_cast<float*>(a.data()), {a.shape(0), a.shape(1)}, torch::kFloat32).clone());
      }
    const OutputSelector select = output.empty() ? segmentation_scores() : output_path(output);
    opt.targets.clear();
    for (int64_t c : classes)
      opt.targets.push_back(regions.empty() ? segmentation_target(c, torch::Tensor(), select) : segmentation_target(c, regions, select));
    return opt;
  }, py::arg("opt"), py::arg("classes"), py::arg("masks"), py::arg("output"), py::arg("region") = std::vector<double>{},
     py::arg("sizes") = std::vector<std::pair<int64_t, int64_t>>{});

  // Which keyword arguments go with task= (lumen/task.h's rules, in Python's names); `given`: the
  // arguments not at their defaults.
  m.def("_check_task", [](const std::string& task, const std::vector<std::string>& given) {
    static const std::map<std::string, TaskSetting> settings{
        {"classes", TaskSetting::Classes},       {"top_k", TaskSetting::TopK},
        {"score", TaskSetting::Score},           {"counterfactual", TaskSetting::Counterfactual},
        {"contrast", TaskSetting::Contrast},     {"output", TaskSetting::Output},
        {"region", TaskSetting::Region},         {"mask", TaskSetting::Mask},
        {"similar_to", TaskSetting::References}, {"dissimilar", TaskSetting::Dissimilar},
        {"score_threshold", TaskSetting::ScoreThreshold}, {"iou_threshold", TaskSetting::IouThreshold},
        {"max_boxes", TaskSetting::MaxBoxes},    {"detection_output", TaskSetting::DetectionOutput},
        {"box", TaskSetting::Box}};
    std::set<TaskSetting> set;
    for (const auto& g : given) set.insert(settings.at(g));
    if (const auto conflict = task_conflict(parse_task(task), set))
      throw Error(describe(*conflict, [](TaskSetting s) {
        for (const auto& [name, setting] : settings)
          if (setting == s) return name + "=";
        return std::string("?");
      }, [](Task t) { return "task='" + to_string(t) + "'"; }));
  });
  // box: empty, or (x0, y0, x1, y1) in each image's pixels with one class; scales: the model input's
  // pixels per image pixel, (x, y) per image; sources: the images' names for errors.
  m.def("_with_detection", [](ExplainOptions opt, float score_threshold, int max_boxes, double iou, const std::vector<int64_t>& classes,
                              const std::string& format, const std::vector<float>& box, const std::vector<std::pair<float, float>>& scales,
                              const std::vector<std::string>& sources) {
    DetectionSettings s;
    s.format = parse_detection_format(format);
    s.score_threshold = score_threshold;
    s.max_boxes = max_boxes;
    s.iou = iou;
    s.classes = classes;
    check_detection_settings(s);  // refused now, not at the first forward
    opt.targets.clear();
    if (box.empty()) {
      opt.targets_from_output = [s](const torch::IValue& output, int64_t) { return detection_targets(output, s); };
      return opt;
    }
    if (box.size() != 4 || !(box[2] > box[0] && box[3] > box[1]))
      throw Error("box= must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1 (image pixels)");
    if (classes.size() != 1) throw Error("box= needs one class in classes=: the label of the box to explain");
    opt.targets_from_output = given_box_targets({box[0], box[1], box[2], box[3], classes.front(), 1.0f, {}}, scales, s, sources);
    return opt;
  });
  m.def("load_ops_library", &load_ops_library, py::arg("path"),
        "Load a library of TorchScript operators before loading a model that calls them (a scripted torchvision detector: "
        "python3-torchvision's torchvision/_C*.so), as torch.ops.load_library does.");

  m.def("set_threads", &set_threads, py::arg("threads") = 0,
        "intra-op threads of LibTorch and OpenCV, process-wide (torch.set_num_threads too); 0: all cores. "
        "Debian's LibTorch starts with 1; the lumen command uses all cores.");
  m.def("set_deterministic", &set_deterministic, py::arg("on") = true,
        "maps that do not depend on the thread count (ATen's convolutions instead of oneDNN's; slower)");
  m.def("method_names", &method_names);
  m.def("methods", [] {
    py::list out;
    for (const auto& mi : method_catalog())
      out.append(py::dict(py::arg("name") = mi.name, py::arg("paper") = mi.paper, py::arg("family") = mi.family,
                          py::arg("per_layer") = mi.per_layer, py::arg("settings") = mi.settings));
    return out;
  }, "every method with its paper, family and settings");
  m.def("settings", [] {
    py::list out;
    for (const auto& s : setting_catalog())
      out.append(py::dict(py::arg("name") = s.name, py::arg("kind") = s.kind, py::arg("default") = to_python(s.fallback),
                          py::arg("help") = s.help, py::arg("choices") = s.choices, py::arg("methods") = s.methods));
    return out;
  }, "every method setting: its name (a keyword of explain()), kind, default and the methods that take it");

  m.def("_evaluate", [](const Explainer& explainer, const std::string& data_dir, const std::string& out_dir, const std::vector<std::string>& methods,
                        const std::vector<std::string>& layers, const std::vector<std::string>& metrics, const std::string& aggregate, int limit,
                        int batch, int steps, int sanity_images, uint64_t seed, bool fresh, bool report, const ExplainOptions& shared) {
    DatasetRun run;
    run.methods = methods;
    run.layers = layers;
    run.aggregate = aggregate;
    run.eval.metrics = metrics;
    if (batch < 1 || steps < 1 || sanity_images < 1 || limit < 0) throw Error("batch, steps and sanity_images must be at least 1, limit at least 0");
    run.eval.steps = steps;
    run.batch = batch;
    run.sanity_images = sanity_images;
    run.seed = seed;
    run.fresh = fresh;
    run.limit = limit;
    run.shared = shared.shared;
    run.progress = shared.shared.progress;
    run.model_file = explainer.model().name();
    run.card_file = "(python)";
    Dataset data = load_dataset(data_dir);
    if (limit > 0 && static_cast<size_t>(limit) < data.samples.size()) data.samples.resize(static_cast<size_t>(limit));
    EvalResult result;
    {
      py::gil_scoped_release release;
      result = evaluate_dataset(explainer, data, run, out_dir);
      if (report) write_eval_report(explainer, data, run, result, out_dir);
    }
    return to_python({{"methods", result.methods}, {"summary", result.summary}, {"table", result.table}, {"notes", result.notes},
                      {"pairs", result.pairs}, {"seconds", result.seconds}, {"config", result.config}});
  });
}
