// lumen serve: routes, limits, tokens and signals. HTTP itself is cpp-httplib's (Debian's
// libcpp-httplib-dev): a maintained, packaged server that parses requests and multipart bodies, bounds
// header and body sizes and times out slow clients, so lumen parses no HTTP by hand.
#include "serve/server.h"

#include "serve/assets.h"
#include "serve/batcher.h"
#include "serve/request.h"

#include <lumen/error.h>
#include <lumen/files.h>
#include <lumen/image.h>
#include <lumen/methods.h>
#include <lumen/runtime.h>
#include <lumen/version.h>

#include <httplib.h>

#include <csignal>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>

namespace lumen::serve {
namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop = true; }

// The page's own files only; data: and blob: images are the maps the API returns.
constexpr const char* kPagePolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
// Eval reports are lumen's own static pages, whose styles are inline and which run no script.
constexpr const char* kReportPolicy = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'";

void reply_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void reply_error(httplib::Response& res, int status, const std::string& message) {
  if (status == 503) res.set_header("Retry-After", "1");
  reply_json(res, status, {{"error", message}});
}

bool local_host(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

std::string random_token() {
  std::random_device device;
  std::string token;
  static const char* hex = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) token += hex[device() & 15];
  return token;
}

std::string content_type_of(const std::string& path) {
  static const std::map<std::string, std::string> types{
      {".html", "text/html; charset=utf-8"}, {".png", "image/png"}, {".json", "application/json"}, {".jsonl", "application/json"},
      {".csv", "text/csv; charset=utf-8"},   {".md", "text/plain; charset=utf-8"}, {".jpg", "image/jpeg"}, {".jpeg", "image/jpeg"},
      {".svg", "image/svg+xml"}};
  const auto it = types.find(fs::path(path).extension().string());
  return it == types.end() ? "application/octet-stream" : it->second;
}

// Binary files (images, report pictures) as they are; text goes through lumen::read_text_file.
std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Whether `path`, symlinks resolved, lies inside `root` (already canonical).
bool inside(const fs::path& root, const fs::path& path) {
  std::error_code ec;
  const fs::path real = fs::canonical(path, ec);
  if (ec) return false;
  const auto r = root.string(), p = real.string();
  return p.size() > r.size() && p.compare(0, r.size(), r) == 0 && p[r.size()] == '/';
}

struct Served {
  ServedModel model;
  std::unique_ptr<Batcher> batcher;
};

// The --data images by id (their name in labels.csv): the only way a request reaches a file.
struct DataIndex {
  std::string root;
  std::map<std::string, Sample> samples;
  nlohmann::json listing = nlohmann::json::array();
};

DataIndex index_data(const std::string& dir, const std::vector<std::string>& labels) {
  DataIndex index;
  if (dir.empty()) return index;
  const Dataset data = load_dataset(dir);
  const fs::path root = fs::canonical(dir);
  index.root = root.string();
  size_t refused = 0;
  for (const auto& s : data.samples) {
    if (!inside(root, s.path)) {  // a symlink out of the folder
      ++refused;
      continue;
    }
    nlohmann::json boxes = nlohmann::json::array();
    for (const auto& b : s.boxes) boxes.push_back({b.x0, b.y0, b.x1, b.y1});
    index.listing.push_back({{"id", s.name},
                             {"label", s.label},
                             {"label_name", s.label >= 0 && s.label < static_cast<int64_t>(labels.size()) ? labels[s.label] : ""},
                             {"boxes", boxes}});
    index.samples.emplace(s.name, s);
  }
  if (refused) std::cerr << "lumen: note: " << refused << " image(s) of " << dir << " lie outside it (symlinks) and are not served\n";
  return index;
}

// The --report folder's files by their relative path, listed once at start: a request names one of
// these or gets 404, so no request path is ever joined to a folder.
struct ReportIndex {
  std::map<std::string, std::string> files;  // relative path -> real path
  nlohmann::json summary = nlohmann::json::object();
};

ReportIndex index_report(const std::string& dir, const DataIndex& data) {
  ReportIndex index;
  if (dir.empty()) return index;
  if (!fs::is_directory(dir)) throw Error("--report " + dir + " is not a folder (an eval report: lumen eval --out DIR)");
  const fs::path root = fs::canonical(dir);
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file() || !inside(root, entry.path())) continue;
    index.files[fs::relative(entry.path(), root).generic_string()] = entry.path().string();
  }
  if (!index.files.count("index.html")) throw Error("--report " + dir + " has no index.html (an eval report: lumen eval --out DIR)");
  nlohmann::json& s = index.summary;
  s["index"] = "/report/index.html";
  if (index.files.count("results.json")) {
    try {
      const auto results = nlohmann::json::parse(read_text_file(index.files["results.json"], "report results"));
      s["summary"] = results.value("summary", nlohmann::json::object());
      s["methods"] = results.value("methods", nlohmann::json::array());
      s["config"] = results.value("config", nlohmann::json::object());
    } catch (const nlohmann::json::exception&) {
      throw Error("--report " + dir + ": results.json is not JSON");
    }
  }
  // The example pictures (examples/<method>.<rank>.<image stem>.png), each with the --data image it
  // shows, so that the page can explain it live.
  s["examples"] = nlohmann::json::array();
  std::map<std::string, std::string> by_stem;
  for (const auto& [name, sample] : data.samples) by_stem[fs::path(name).stem().string()] = name;
  for (const auto& [rel, real] : index.files) {
    if (rel.rfind("examples/", 0) != 0) continue;
    const std::string file = fs::path(rel).stem().string();  // method.rank.stem
    const auto first = file.find('.'), second = first == std::string::npos ? first : file.find('.', first + 1);
    if (second == std::string::npos) continue;
    const std::string stem = file.substr(second + 1);
    nlohmann::json example = {{"file", "/report/" + rel}, {"method", file.substr(0, first)}, {"rank", file.substr(first + 1, second - first - 1)}};
    if (const auto it = by_stem.find(stem); it != by_stem.end()) example["data_id"] = it->second;
    s["examples"].push_back(example);
  }
  return index;
}

class Server {
 public:
  Server(std::vector<ServedModel> models, const Options& options) : options_(options) {
    for (auto& m : models) {
      auto served = std::make_unique<Served>(Served{std::move(m), nullptr});
      served->batcher = std::make_unique<Batcher>(served->model.explainer, options.max_batch,
                                                  std::chrono::microseconds(static_cast<int64_t>(options.batch_wait_ms * 1000)),
                                                  static_cast<size_t>(options.limits.queue), options.workers);
      warm_up(*served);
      models_.push_back(std::move(served));
    }
    data_ = index_data(options.data, models_.front()->model.explainer.labels());
    report_ = index_report(options.report, data_);
  }

  // One Grad-CAM at the default layer for every batch the batcher can form (Batcher::warm_up), before
  // the first request, so that memory does not grow and answers are not slow during the first minutes.
  // A model whose output is no [N, classes] score (a detector, a segmenter) has no default target to
  // warm up with: its forwards are warmed alone.
  void warm_up(const Served& served) const {
    const ServedModel& m = served.model;
    if (m.default_layer.empty()) return;
    const auto& pre = m.explainer.preprocess();
    ExplainOptions opt;
    opt.layers = {m.default_layer};
    const cv::Mat grey(pre.height, pre.width, CV_8UC3, cv::Scalar(128, 128, 128));
    torch::NoGradGuard no_grad;  // explain records the gradients it needs itself
    const torch::IValue first = m.explainer.model().forward(to_batch({grey}, pre)).output;
    const bool scores = first.isTensor() && first.toTensor().dim() == 2;
    served.batcher->warm_up([&](int n) {
      const std::vector<cv::Mat> images(static_cast<size_t>(n), grey);
      if (scores) m.explainer.explain(images, opt);
      else m.explainer.model().forward(to_batch(images, pre));
    });
  }

  int run() {
    httplib::Server http;
    const int threads = std::max(2, options_.http_threads);
    http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    http.set_payload_max_length(options_.limits.body_bytes);
    http.set_read_timeout(10, 0);  // a slow client holds a thread at most this long per read
    http.set_keep_alive_max_count(100);  // cpp-httplib's default of 5 made a busy client reconnect every fifth request
    http.set_write_timeout(10, 0);
    http.set_default_headers({{"X-Content-Type-Options", "nosniff"}, {"Content-Security-Policy", kPagePolicy},
                              {"Referrer-Policy", "no-referrer"}, {"Cache-Control", "no-store"}});
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) { return check_token(req, res); });
    http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      const std::map<int, std::string> says{{400, "bad request"}, {404, "not found"}, {405, "method not allowed"},
                                            {413, "the request body is over the limit (--max-body)"}, {414, "the URI is too long"},
                                            {431, "the request's headers are too large"}};
      const auto it = says.find(res.status);
      reply_error(res, res.status, it == says.end() ? "HTTP " + std::to_string(res.status) : it->second);
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr e) {
      std::string what = "internal error";
      try {
        if (e) std::rethrow_exception(e);
      } catch (const std::exception& x) {
        what += std::string(": ") + x.what();
      } catch (...) {
      }
      reply_error(res, 500, what);
    });
    if (!options_.quiet)
      http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
        std::cerr << "lumen: " << req.method << " " << req.path << " " << res.status << "\n";
      });
    routes(http);

    const int port = options_.port == 0 ? http.bind_to_any_port(options_.host) : (http.bind_to_port(options_.host, options_.port) ? options_.port : -1);
    if (port < 0) throw Error("cannot listen on " + options_.host + ":" + std::to_string(options_.port) + " (in use, or not an address of this machine)");
    say_serving(port);
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    std::atomic<bool> listening_ended{false};
    std::thread listener([&http, &listening_ended] {
      http.listen_after_bind();
      listening_ended = true;
    });
    while (!g_stop && !listening_ended) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!options_.quiet) std::cerr << "lumen: stopping: finishing running work, cancelling queued work\n";
    http.stop();
    for (auto& m : models_) m->batcher->stop();
    listener.join();
    std::cout << "lumen: stopped" << std::endl;
    return 0;
  }

 private:
  void say_serving(int port) const {
    std::string what;
    for (const auto& m : models_) what += (what.empty() ? "" : ", ") + m->model.name;
    if (!data_.root.empty()) what += "; " + std::to_string(data_.samples.size()) + " images from " + options_.data;
    if (!options_.report.empty()) what += "; report " + options_.report;
    const std::string host = options_.host.find(':') != std::string::npos ? "[" + options_.host + "]" : options_.host;
    std::cout << "lumen: serving on http://" << host << ":" << port << "/" << (options_.token.empty() ? "" : "#token=" + options_.token) << " ("
              << what << ")" << std::endl;
  }

  httplib::Server::HandlerResponse check_token(const httplib::Request& req, httplib::Response& res) const {
    if (options_.token.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const bool guarded = req.path.rfind("/api/", 0) == 0 || req.path.rfind("/report/", 0) == 0;
    if (!guarded) return httplib::Server::HandlerResponse::Unhandled;
    std::string given = req.get_param_value("token");
    const std::string auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) == 0) given = auth.substr(7);
    // Compared in time that does not depend on where the first difference lies.
    unsigned diff = given.size() != options_.token.size();
    for (size_t i = 0; i < options_.token.size(); ++i) diff |= static_cast<unsigned>(given[i % std::max<size_t>(1, given.size())] ^ options_.token[i]);
    if (given.empty() || diff) {
      res.set_header("WWW-Authenticate", "Bearer");
      reply_error(res, 401, given.empty() ? "this server needs its token: Authorization: Bearer TOKEN (printed at start)" : "wrong token");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  }

  Served* find_model(const std::string& id) const {
    for (const auto& m : models_)
      if (m->model.id == id) return m.get();
    return nullptr;
  }

  void routes(httplib::Server& http) {
    for (const auto& [path, asset] : page_assets()) {
      const std::string route = path == "index.html" ? "/" : "/" + path;
      const Asset a = asset;
      http.Get(route, [a](const httplib::Request&, httplib::Response& res) { res.set_content(a.bytes, a.type); });
    }
    http.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
      size_t queued = 0;
      for (const auto& m : models_) queued += m->batcher->queued();
      reply_json(res, 200, {{"status", "ok"}, {"version", version()}, {"models", models_.size()}, {"queued", queued}});
    });
    http.Get("/api/models", [this](const httplib::Request&, httplib::Response& res) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& m : models_) {
        const auto& pre = m->model.explainer.preprocess();
        list.push_back({{"id", m->model.id},
                        {"name", m->model.name},
                        {"file", fs::path(m->model.path).filename().string()},
                        {"input", {{"size", {pre.height, pre.width}}, {"color_order", pre.rgb ? "RGB" : "BGR"}}},
                        {"classes", m->model.explainer.labels().size()},
                        {"default_layer", m->model.default_layer},
                        {"forward", m->model.forward}});
      }
      reply_json(res, 200, {{"models", list}, {"max_batch", options_.max_batch}});
    });
    http.Get(R"(/api/models/([^/]+)/layers)", [this](const httplib::Request& req, httplib::Response& res) {
      const Served* m = find_model(req.matches[1]);
      if (!m) return reply_error(res, 404, "unknown model \"" + std::string(req.matches[1]) + "\" (GET /api/models)");
      nlohmann::json list = nlohmann::json::array();
      for (const auto& l : m->model.layers)
        list.push_back({{"path", l.path}, {"type", l.type}, {"shape", l.shape}, {"output", l.output_kind}, {"onnx_outputs", l.outputs}});
      // As listed: an ONNX model's card may name the layer by its module path ("backbone.conv3").
      reply_json(res, 200, {{"layers", list}, {"default_layer", m->model.explainer.model().layer_path(m->model.default_layer)}});
    });
    http.Get(R"(/api/models/([^/]+)/labels)", [this](const httplib::Request& req, httplib::Response& res) {
      const Served* m = find_model(req.matches[1]);
      if (!m) return reply_error(res, 404, "unknown model \"" + std::string(req.matches[1]) + "\" (GET /api/models)");
      reply_json(res, 200, {{"labels", m->model.explainer.labels()}});
    });
    http.Get("/api/methods", [](const httplib::Request&, httplib::Response& res) {
      nlohmann::json methods = nlohmann::json::array(), settings = nlohmann::json::array();
      for (const auto& m : method_catalog())
        methods.push_back({{"name", m.name}, {"paper", m.paper}, {"family", m.family}, {"per_layer", m.per_layer}, {"settings", m.settings}});
      for (const auto& s : setting_catalog())
        settings.push_back({{"name", s.name}, {"kind", s.kind}, {"default", s.fallback}, {"help", s.help}, {"choices", s.choices}, {"methods", s.methods}});
      reply_json(res, 200, {{"methods", methods}, {"settings", settings}});
    });
    http.Get("/api/data", [this](const httplib::Request&, httplib::Response& res) {
      reply_json(res, 200, {{"images", data_.listing}, {"root", data_.root.empty() ? "" : fs::path(data_.root).filename().string()}});
    });
    http.Get("/api/data/image", [this](const httplib::Request& req, httplib::Response& res) {
      const auto it = data_.samples.find(req.get_param_value("id"));
      if (it == data_.samples.end()) return reply_error(res, 404, "no --data image has this id (GET /api/data lists them)");
      res.set_content(read_file(it->second.path), content_type_of(it->second.path));
    });
    http.Get("/api/report", [this](const httplib::Request&, httplib::Response& res) {
      if (report_.files.empty()) return reply_error(res, 404, "no report is served (lumen serve --report DIR)");
      reply_json(res, 200, report_.summary);
    });
    http.Get(R"(/report/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      const auto it = report_.files.find(req.matches[1]);
      if (it == report_.files.end()) return reply_error(res, 404, "no such file in the report");
      res.set_header("Content-Security-Policy", kReportPolicy);
      res.set_content(read_file(it->second), content_type_of(it->first));
    });
    http.Get(R"(/api/jobs/([A-Za-z0-9_-]{1,64}))", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(jobs_mutex_);
      const auto it = jobs_.find(req.matches[1]);
      if (it == jobs_.end()) return reply_error(res, 404, "no such job (finished, or never started)");
      int64_t done = 0, total = 0;
      int state = 2;
      for (const auto& j : it->second) done += j->done, total += j->total, state = std::min(state, j->state.load());
      reply_json(res, 200, {{"state", state == 0 ? "queued" : state == 1 ? "running" : "finished"}, {"done", done}, {"total", total}});
    });
    http.Delete(R"(/api/jobs/([A-Za-z0-9_-]{1,64}))", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(jobs_mutex_);
      const auto it = jobs_.find(req.matches[1]);
      if (it == jobs_.end()) return reply_error(res, 404, "no such job (finished, or never started)");
      for (const auto& j : it->second) j->cancelled = true;
      reply_json(res, 200, {{"cancelled", true}});
    });
    http.Post("/api/explain", [this](const httplib::Request& req, httplib::Response& res) {
      try {
        explain(req, res);
      } catch (const HttpError& e) {
        reply_error(res, e.status, e.what());
      } catch (const Busy& e) {
        reply_error(res, 503, std::string("busy: ") + e.what());
      } catch (const Error& e) {
        reply_error(res, 400, e.what());
      }
    });
  }

  // POST /api/explain, top to bottom: the model and params, a job per image, the batcher, the answer.
  void explain(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    if (!req.is_multipart_form_data()) throw HttpError(415, "POST /api/explain takes multipart/form-data: a part \"image\" (or \"data_id\") and a part \"params\" (JSON)");
    const nlohmann::json params = parse_params_json(req.has_file("params") ? req.get_file_value("params").content : "");
    Served& served = model_of(params);
    const cv::Mat mask = req.has_file("mask") ? decode_upload(req.get_file_value("mask").content, "the mask part", options_.limits.image_pixels) : cv::Mat();
    const Params p = read_params(params, served.model, mask);
    const auto deadline = start + std::chrono::microseconds(static_cast<int64_t>(options_.limits.request_seconds * 1e6));
    const auto jobs = jobs_of(req, served, p, deadline);

    if (!p.job.empty()) {
      std::lock_guard<std::mutex> lock(jobs_mutex_);
      if (!jobs_.emplace(p.job, jobs).second) throw HttpError(409, "a job with the id \"" + p.job + "\" is running");
    }
    struct Forget {  // the job id is released however this ends
      Server* server;
      std::string id;
      ~Forget() {
        if (id.empty()) return;
        std::lock_guard<std::mutex> lock(server->jobs_mutex_);
        server->jobs_.erase(id);
      }
    } forget{this, p.job};

    std::vector<std::future<ImageExplanation>> results;
    for (auto& job : jobs) results.push_back(job->result.get_future());
    served.batcher->submit(jobs);
    Blobs blobs;
    nlohmann::json images = answers_of(jobs, results, p, deadline, blobs);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    nlohmann::json answer = {{"lumen_version", version()}, {"model", served.model.id}, {"layers", p.options->layers},
                             {"methods", p.options->methods}, {"method_options", settings_json(*p.options)}, {"seconds", seconds}};
    if (images.size() == 1) {
      for (auto& [k, v] : images[0].items()) answer[k] = std::move(v);
    } else {
      answer["images"] = std::move(images);
    }
    res.status = 200;
    res.set_content(blobs.render(answer), "application/json");
  }

  // The model a request names ("model"; optional when one is served).
  Served& model_of(const nlohmann::json& params) {
    const std::string id = params.contains("model") && params["model"].is_string() ? params["model"].get<std::string>() : "";
    Served* served = id.empty() && models_.size() == 1 ? models_.front().get() : find_model(id);
    if (!served) throw HttpError(id.empty() ? 400 : 404, id.empty() ? "several models are served: give \"model\" (GET /api/models)"
                                                                 : "unknown model \"" + id + "\" (GET /api/models)");
    return *served;
  }

  // One job per image of the request: the uploaded parts, then the --data ids, each decoded and
  // preprocessed here, on the request's own thread, while the batcher's workers run the model (one
  // intra-op thread: many requests are preprocessed at once beside the workers).
  std::vector<std::shared_ptr<Job>> jobs_of(const httplib::Request& req, const Served& served, const Params& p, Clock::time_point deadline) const {
    std::vector<httplib::MultipartFormData> uploads, ids;
    for (auto [it, end] = req.files.equal_range("image"); it != end; ++it) uploads.push_back(it->second);
    for (auto [it, end] = req.files.equal_range("data_id"); it != end; ++it) ids.push_back(it->second);
    const size_t count = uploads.size() + ids.size();
    if (count == 0) throw HttpError(400, "no image: give a part \"image\" (the file) or \"data_id\" (GET /api/data)");
    if (count > static_cast<size_t>(options_.limits.images_per_request))
      throw HttpError(413, std::to_string(count) + " images in one request, over the limit of " + std::to_string(options_.limits.images_per_request) + " (--max-images)");
    std::vector<std::shared_ptr<Job>> jobs;
    set_this_thread_threads(1);
    auto add_job = [&](cv::Mat image, const std::string& source) {
      auto job = std::make_shared<Job>();
      job->input = to_batch({image}, served.model.explainer.preprocess());
      job->image = std::move(image);
      job->source = source;
      job->options = p.options;
      job->key = p.key;
      if (p.per_image) {
        auto own = std::make_shared<ExplainOptions>(*p.options);
        p.per_image(*own, job->image.size(), source);
        job->options = std::move(own);
        job->key += "\n" + std::to_string(job->image.cols) + "x" + std::to_string(job->image.rows);
      }
      job->deadline = deadline;
      jobs.push_back(job);
    };
    for (const auto& u : uploads) {
      // The client's file name is echoed as the source: no control characters, at most 200 bytes.
      std::string name = u.filename.substr(0, 200);
      for (auto& ch : name)
        if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = '_';
      add_job(decode_upload(u.content, name.empty() ? "the image" : name, options_.limits.image_pixels), name);
    }
    for (const auto& id : ids) {
      const auto it = data_.samples.find(id.content);
      if (it == data_.samples.end()) throw HttpError(404, "no --data image has the id \"" + id.content.substr(0, 200) + "\" (GET /api/data lists them)");
      add_job(read_image(it->second.path), id.content);
    }
    return jobs;
  }

  // Each job's answer as it finishes; a job past the deadline, cancelled or stopped ends the request.
  nlohmann::json answers_of(const std::vector<std::shared_ptr<Job>>& jobs, std::vector<std::future<ImageExplanation>>& results, const Params& p,
                            Clock::time_point deadline, Blobs& blobs) const {
    nlohmann::json images = nlohmann::json::array();
    for (size_t i = 0; i < jobs.size(); ++i) {
      // A little past the deadline: the batch notices it at its next progress report.
      if (results[i].wait_until(deadline + std::chrono::seconds(2)) != std::future_status::ready) {
        for (auto& j : jobs) j->cancelled = true;
        throw HttpError(504, "the explanation took more than " + std::to_string(options_.limits.request_seconds) + " s (--timeout)");
      }
      try {
        const ImageExplanation explained = results[i].get();
        images.push_back(answer_json(explained, jobs[i]->image, p, blobs));
        images.back()["batched_with"] = jobs[i]->batched_with.load();
      } catch (const Cancelled& e) {
        const std::string why = e.what();
        throw HttpError(why.find("timed out") != std::string::npos ? 504 : why.find("stopped") != std::string::npos ? 503 : 409, why);
      }
    }
    return images;
  }

  Options options_;
  std::vector<std::unique_ptr<Served>> models_;
  DataIndex data_;
  ReportIndex report_;
  std::mutex jobs_mutex_;
  std::map<std::string, std::vector<std::shared_ptr<Job>>> jobs_;
};

}  // namespace

int run(std::vector<ServedModel> models, const Options& options) {
  if (models.empty()) throw Error("lumen serve needs at least one --model");
  if (!local_host(options.host) && options.token.empty()) throw Error("serving on " + options.host + " (not this machine alone) needs --token");
  if (options.max_batch < 1 || options.max_batch > 256) throw Error("--max-batch must be from 1 to 256");
  if (options.workers < 1 || options.workers > 64) throw Error("--workers must be from 1 to 64");
  if (!(options.batch_wait_ms >= 0 && options.batch_wait_ms <= 1000)) throw Error("--batch-wait must be from 0 to 1000 ms");
  if (options.limits.images_per_request < 1 || options.limits.queue < 1 || !(options.limits.request_seconds > 0) ||
      !(options.limits.image_pixels >= 1) || options.limits.body_bytes < 1024)
    throw Error("--max-images, --queue, --timeout and --max-pixels must be positive, --max-body at least 1024");
  set_image_limits({options.limits.image_pixels, false});
#if defined(__GLIBC__)
  // glibc gives each thread that allocates its own arena (up to 8 per core), and lumen's CLI asks
  // every arena to keep what it frees (keep_freed_memory). With a pool of HTTP threads the server's
  // memory would then grow with every thread that ever built an answer; two arenas bound it. (A no-op
  // when the command runs on tcmalloc, whose per-thread caches are bounded.)
  mallopt(M_ARENA_MAX, 2);
#endif
  Server server(std::move(models), options);
  return server.run();
}

std::string generate_token() { return random_token(); }

}  // namespace lumen::serve
