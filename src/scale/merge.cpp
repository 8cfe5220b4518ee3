// `lumen merge`: shards of one eval or audit run, joined into the report one process would have written.
// The shards' records, laid end to end in shard order, are the single run's records in its order (the
// shards are contiguous blocks, lumen/shard.h), so the same tally code sums the same numbers in the same
// order; the report is then written by the same function as a single run's.
#include <lumen/audit.h>
#include <lumen/error.h>
#include <lumen/evaluate.h>
#include <lumen/files.h>
#include <lumen/image.h>
#include <lumen/shard.h>
#include <lumen/version.h>

#include "eval/eval_run.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

namespace lumen {
namespace {

namespace fs = std::filesystem;

struct Part {
  std::string folder, records;
  nlohmann::json config;  // without "shard"
  Shard shard;
  std::vector<std::string> methods;  // eval
  size_t batch = 1;                  // the shards hold whole batches of this many images
};

Part read_part(const std::string& folder) {
  Part p;
  p.folder = folder;
  p.records = (fs::path(folder) / "records.jsonl").string();
  if (!path_exists(p.records)) throw Error(folder + " has no records.jsonl: it is not the --out of a lumen eval or audit shard");
  p.config = detail::read_records(p.records, [](const nlohmann::json&) {});
  const auto s = p.config.value("shard", nlohmann::json());
  if (!s.is_object() || !s.contains("index") || !s.contains("count"))
    throw Error(folder + " is not a shard (its run had no --shard); there is nothing to merge it with");
  p.shard.index = s["index"].get<int>();
  p.shard.count = s["count"].get<int>();
  if (s.contains("methods")) p.methods = s["methods"].get<std::vector<std::string>>();
  p.batch = s.value("batch", size_t{1});
  p.config.erase("shard");
  return p;
}

// The first setting in which two shards' runs differ, said as a person would.
std::string difference(const nlohmann::json& a, const nlohmann::json& b) {
  std::set<std::string> keys;
  for (const auto& [k, v] : a.items()) keys.insert(k);
  for (const auto& [k, v] : b.items()) keys.insert(k);
  for (const auto& k : keys) {
    const auto x = a.value(k, nlohmann::json()), y = b.value(k, nlohmann::json());
    if (x == y) continue;
    const std::string what = k == "model_fingerprint" ? "the model file's checksum" : k == "lumen_version" ? "the lumen version" : k;
    return what + " (" + x.dump() + " vs " + y.dump() + ")";
  }
  return "";
}

std::vector<Part> read_parts(const MergeRun& run) {
  if (run.parts.empty()) throw Error("merge needs the shards' folders");
  std::vector<Part> parts;
  for (const auto& f : run.parts) parts.push_back(read_part(f));
  std::map<int, const Part*> seen;
  for (const auto& p : parts) {
    if (p.shard.count != parts[0].shard.count)
      throw Error(p.folder + " is shard " + p.shard.text() + " but " + parts[0].folder + " is shard " + parts[0].shard.text() +
                  ": they split the images differently");
    if (const auto d = difference(parts[0].config, p.config); !d.empty())
      throw Error(p.folder + " belongs to a different run than " + parts[0].folder + ": " + d);
    if (p.batch != parts[0].batch)
      throw Error(p.folder + " ran with --batch " + std::to_string(p.batch) + " but " + parts[0].folder + " with --batch " +
                  std::to_string(parts[0].batch) + ": the shards hold whole batches, so they split the images differently");
    if (p.methods != parts[0].methods)
      throw Error(p.folder + " ran other methods than " + parts[0].folder + " (" + nlohmann::json(p.methods).dump() + " vs " +
                  nlohmann::json(parts[0].methods).dump() + ")");
    if (const auto it = seen.find(p.shard.index); it != seen.end())
      throw Error(p.folder + " and " + it->second->folder + " are both shard " + p.shard.text());
    seen[p.shard.index] = &p;
  }
  std::sort(parts.begin(), parts.end(), [](const Part& x, const Part& y) { return x.shard.index < y.shard.index; });
  std::string absent;
  for (int k = 0, n = 0; k < parts[0].shard.count; ++k)
    if (!seen.count(k)) absent += (n++ ? ", " : "") + std::to_string(k);
  if (!absent.empty() && !run.partial)
    throw Error("shard(s) " + absent + " of " + std::to_string(parts[0].shard.count) + " are missing; give every shard's folder, or "
                "--partial to merge what is there (the report then names the missing images)");
  return parts;
}

std::string overridden(const std::string& given, const nlohmann::json& config, const char* key) {
  return given.empty() ? config.value(key, std::string()) : given;
}

// The records of a merge go to OUT/records.jsonl like a single run's, so that the merged folder can be
// resumed or merged again. Written beside and renamed: a merge that fails leaves no half file.
class MergedRecords {
 public:
  MergedRecords(const std::string& out, const nlohmann::json& config)
      : path_((fs::path(out) / "records.jsonl").string()), tmp_(path_ + ".merging-" + std::to_string(::getpid())), file_(tmp_) {
    if (!file_) throw Error("cannot write " + tmp_);
    file_ << nlohmann::json{{"config", config}}.dump() << "\n";
  }
  ~MergedRecords() {
    if (!committed_) {
      std::error_code ec;
      fs::remove(tmp_, ec);
    }
  }
  void add(const nlohmann::json& r) { file_ << r.dump() << "\n"; }
  void commit() {
    file_.close();
    if (!file_) throw Error("cannot write " + tmp_);
    fs::rename(tmp_, path_);
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  std::ofstream file_;
  bool committed_ = false;
};

Model checked_model(const std::string& path, const nlohmann::json& config) {
  Model model = Model::load(path);
  if (model.fingerprint() != config.value("model_fingerprint", ""))
    throw Error("the model file " + path + " is not the one the shards ran (its checksum differs); give the shards' model with --model");
  return model;
}

Dataset limited(const std::string& dir, int limit) {
  Dataset data = load_dataset(dir);
  if (limit > 0 && static_cast<size_t>(limit) < data.samples.size()) data.samples.resize(static_cast<size_t>(limit));
  return data;
}

// Per shard, the images that have no record (of every method).
std::vector<std::string> unfinished(const std::vector<Sample>& samples, const std::function<bool(const std::string&)>& done) {
  std::vector<std::string> out;
  for (const auto& s : samples)
    if (!done(s.name)) out.push_back(s.name);
  return out;
}

// The dataset's images without a record, in dataset order: those of absent shards, and those of the
// shards given that have no record (`done`).
std::vector<std::string> missing_images(const std::vector<Part>& parts, const Dataset& all, const std::function<bool(const std::string&)>& done) {
  const int count = parts[0].shard.count;
  std::vector<bool> have(static_cast<size_t>(count), false);
  for (const auto& p : parts) have[static_cast<size_t>(p.shard.index)] = true;
  std::vector<std::string> out;
  for (int k = 0; k < count; ++k)
    for (const auto& s : shard_of(all.samples, Shard{k, count, ""}, parts[0].batch))
      if (!have[static_cast<size_t>(k)] || !done(s.name)) out.push_back(s.name);
  return out;
}

void refuse_unfinished(const Part& p, const std::vector<std::string>& missing, size_t images) {
  throw Error(p.folder + " (shard " + p.shard.text() + ") is unfinished: " + std::to_string(missing.size()) + " of its " +
              std::to_string(images) + " images have no record (first: " + missing.front() +
              "); run its command again (it resumes), or merge with --partial");
}

MergeResult merge_eval(const MergeRun& run, const std::vector<Part>& parts) {
  const auto& config = parts[0].config;
  DatasetRun dr;
  dr.methods = parts[0].methods;
  std::string layers = config.value("layer", "");
  for (size_t at = 0; !layers.empty() && at != std::string::npos;) {
    const size_t comma = layers.find(',', at);
    dr.layers.push_back(layers.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    at = comma == std::string::npos ? comma : comma + 1;
  }
  dr.aggregate = config.value("aggregate", "");
  dr.eval.metrics = config.at("metrics").get<std::vector<std::string>>();
  dr.eval.steps = config.value("steps", 50);
  dr.seed = config.value("seed", uint64_t{0});
  dr.limit = config.value("limit", 0);
  if (config.value("compat", "") == "pytorch-grad-cam") dr.shared.compat = Compat::PytorchGradCam;
  dr.shared.aug_smooth = config.value("aug_smooth", false);
  dr.shared.strict_nonlinearities = config.value("nonlinearity", "") != "plain";
  dr.model_file = overridden(run.model, config, "model");
  dr.card_file = overridden(run.card, config, "card");

  const Dataset all = limited(overridden(run.data, config, "data"), dr.limit);
  const ModelCard card = load_card(dr.card_file);
  const Explainer explainer(checked_model(dr.model_file, config), card.preprocess, card.labels);

  std::error_code ec;
  fs::create_directories(run.out, ec);
  if (ec) throw Error("cannot create " + run.out + ": " + ec.message());
  MergedRecords merged(run.out, config);
  detail::EvalTally tally(dr);
  MergeResult out;
  out.kind = "eval";
  Dataset present;
  present.root = all.root;
  double seconds = 0;
  const auto finished = [&](const std::string& image) {
    return std::all_of(dr.methods.begin(), dr.methods.end(), [&](const std::string& m) { return tally.has(m, image); });
  };
  for (const auto& p : parts) {
    detail::read_records(p.records, [&](const nlohmann::json& r) {
      merged.add(r);
      tally.take(r);
      ++out.records;
    });
    const auto mine = shard_of(all.samples, p.shard, p.batch);
    const auto missing = unfinished(mine, finished);
    if (!missing.empty() && !run.partial) refuse_unfinished(p, missing, mine.size());
    const auto results = fs::path(p.folder) / "results.json";
    if (path_exists(results.string())) {
      const auto j = nlohmann::json::parse(read_text_file(results.string(), "results file"), nullptr, false);
      if (j.is_object()) seconds += j.value("seconds", 0.0);
    }
    ++out.shards;
  }
  out.missing = missing_images(parts, all, finished);
  const std::set<std::string> left_out(out.missing.begin(), out.missing.end());
  for (const auto& s : all.samples)
    if (!left_out.count(s.name)) present.samples.push_back(s);
  EvalResult result;
  result.config = config;
  result.seconds = seconds;  // the shards' compute time, summed
  result.pairs = present.samples.size() * dr.methods.size();
  tally.finish(result, dr.eval, present.samples.size());
  // With --partial, images of an absent or unfinished shard are in no table, and an image one method
  // finished and another did not is in none of the examples; the notes say so.
  for (auto& [m, scores] : result.example_scores)
    for (auto it = scores.begin(); it != scores.end();) it = left_out.count(it->first) ? scores.erase(it) : std::next(it);
  if (!out.missing.empty())
    result.notes += "Partial merge: " + std::to_string(out.missing.size()) + " of " + std::to_string(all.samples.size()) +
                    " images have no record (their shards are missing or unfinished); missing.txt names them.\n";
  merged.commit();
  write_eval_report(explainer, present, dr, result, run.out);
  out.summary = result.table + "\n" + result.notes;
  return out;
}

MergeResult merge_audit(const MergeRun& run, const std::vector<Part>& parts) {
  const auto& config = parts[0].config;
  AuditRun ar;
  ar.method = config.value("method", "gradcam");
  if (!config.value("layer", "").empty()) ar.layers = {config.value("layer", "")};
  ar.threshold = config.value("threshold", 0.5);
  ar.limit = config.value("limit", 0);
  const Dataset all = limited(overridden(run.data, config, "data"), ar.limit);
  const ModelCard card = load_card(overridden(run.card, config, "card"));
  const Explainer explainer(checked_model(overridden(run.model, config, "model"), config), card.preprocess, card.labels);
  std::error_code ec;
  fs::create_directories(run.out, ec);
  if (ec) throw Error("cannot create " + run.out + ": " + ec.message());
  MergedRecords merged(run.out, config);
  MergeResult out;
  out.kind = "audit";
  std::vector<nlohmann::json> records;
  std::set<std::string> recorded;
  for (const auto& p : parts) {
    std::map<std::string, nlohmann::json> got;
    detail::read_records(p.records, [&](const nlohmann::json& r) {
      if (r.contains("image") && r["image"].is_string()) got.emplace(r["image"].get<std::string>(), r);
    });
    const auto mine = shard_of(all.samples, p.shard, p.batch);
    const auto missing = unfinished(mine, [&](const std::string& image) { return got.count(image) > 0; });
    if (!missing.empty() && !run.partial) refuse_unfinished(p, missing, mine.size());
    // In dataset order, as one process holds them.
    for (const auto& s : mine)
      if (got.count(s.name)) {
        merged.add(got.at(s.name));
        records.push_back(got.at(s.name));
        recorded.insert(s.name);
      }
    ++out.shards;
  }
  out.records = records.size();
  out.missing = missing_images(parts, all, [&](const std::string& image) { return recorded.count(image) > 0; });
  AuditResult result = audit_result(explainer, all, ar, records);
  merged.commit();
  OutputDir dir(run.out);
  write_audit_report(dir, explainer, ar, result, audit_about(config));
  dir.commit();
  out.summary = result.table;
  return out;
}

}  // namespace

MergeResult merge_shards(const MergeRun& run) {
  const auto parts = read_parts(run);
  const std::string kind = parts[0].config.value("kind", "eval");
  MergeResult result = kind == "audit" ? merge_audit(run, parts) : merge_eval(run, parts);
  if (!result.missing.empty()) {
    std::string text;
    for (const auto& m : result.missing) text += m + "\n";
    write_file_atomic((fs::path(run.out) / "missing.txt").string(), text);
  }
  return result;
}

}  // namespace lumen
