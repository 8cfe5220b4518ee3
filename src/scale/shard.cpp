// Which piece of a list this process does: --shard K/N, or the index a job engine hands its tasks.
#include <lumen/error.h>
#include <lumen/shard.h>

#include <algorithm>
#include <cstdlib>

extern char** environ;

namespace lumen {
namespace {

// A whole number in [lo, hi] or an error naming where it came from (std::stoi accepts "3x" and " 3").
int whole(const std::string& text, int lo, int hi, const std::string& what) {
  if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos)
    throw Error(what + " must be a whole number, got '" + text + "'");
  const int v = std::stoi(text);
  if (v < lo || v > hi) throw Error(what + " must be from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " + text);
  return v;
}

const std::string* find(const std::map<std::string, std::string>& env, const std::string& key) {
  const auto it = env.find(key);
  return it == env.end() || it->second.empty() ? nullptr : &it->second;
}

}  // namespace

std::map<std::string, std::string> process_environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv(*e);
    const auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

Shard parse_shard(const std::string& text, const std::map<std::string, std::string>& env) {
  constexpr int kMaxShards = 1000000;
  Shard s;
  const auto slash = text.find('/');
  const std::string head = text.substr(0, slash);
  const std::string tail = slash == std::string::npos ? "" : text.substr(slash + 1);
  if (head != "auto") {
    if (slash == std::string::npos) throw Error("--shard must be K/N (K from 0 to N-1), auto or auto/N, got '" + text + "'");
    s.count = whole(tail, 1, kMaxShards, "--shard's N");
    s.index = whole(head, 0, s.count - 1, "--shard's K (0-based)");
    s.source = "--shard " + text;
    return s;
  }
  if (const auto* k8s = find(env, "JOB_COMPLETION_INDEX")) {
    const std::string* count = tail.empty() ? find(env, "JOB_COMPLETIONS") : &tail;
    if (!count)
      throw Error("--shard auto found Kubernetes' JOB_COMPLETION_INDEX but not the number of shards: give --shard auto/N or set "
                  "JOB_COMPLETIONS to the Job's completions");
    s.count = whole(*count, 1, kMaxShards, "the number of shards");
    s.index = whole(*k8s, 0, s.count - 1, "JOB_COMPLETION_INDEX");
    s.source = "Kubernetes JOB_COMPLETION_INDEX " + *k8s + " of " + std::to_string(s.count) + " completions";
    return s;
  }
  if (const auto* id = find(env, "SLURM_ARRAY_TASK_ID")) {
    if (const auto* step = find(env, "SLURM_ARRAY_TASK_STEP"); step && *step != "1")
      throw Error("--shard auto: the Slurm array has step " + *step + "; give it consecutive task ids (--array=0-15)");
    const auto* min = find(env, "SLURM_ARRAY_TASK_MIN");
    const auto* count = find(env, "SLURM_ARRAY_TASK_COUNT");
    if (!count && tail.empty()) throw Error("--shard auto found SLURM_ARRAY_TASK_ID but not SLURM_ARRAY_TASK_COUNT; give --shard auto/N");
    s.count = whole(tail.empty() ? *count : tail, 1, kMaxShards, "the number of shards");
    const int first = min ? whole(*min, 0, 1000000000, "SLURM_ARRAY_TASK_MIN") : 0;
    const int task = whole(*id, 0, 1000000000, "SLURM_ARRAY_TASK_ID");
    if (task < first) throw Error("SLURM_ARRAY_TASK_ID " + *id + " is below SLURM_ARRAY_TASK_MIN " + *min);
    s.index = whole(std::to_string(task - first), 0, s.count - 1, "the Slurm task's place in the array (task id - SLURM_ARRAY_TASK_MIN)");
    s.source = "Slurm array task " + *id + " (shard " + std::to_string(s.index) + " of " + std::to_string(s.count) + ")";
    return s;
  }
  throw Error("--shard auto needs Kubernetes' JOB_COMPLETION_INDEX or Slurm's SLURM_ARRAY_TASK_ID in the environment; neither is set "
              "(give --shard K/N outside a job engine)");
}

std::pair<size_t, size_t> shard_range(size_t n, const Shard& s, size_t unit) {
  if (unit < 1) unit = 1;
  const unsigned long long batches = (n + unit - 1) / unit;
  // batches * N stays far below 2^64 for any list that fits in memory.
  const auto at = [&](int k) { return std::min(n, static_cast<size_t>(batches * static_cast<unsigned>(k) / static_cast<unsigned>(s.count)) * unit); };
  return {at(s.index), at(s.index + 1)};
}

}  // namespace lumen
