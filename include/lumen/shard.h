// lumen: one piece of a dataset run that is split over many processes (a Kubernetes Indexed Job, a
// Slurm job array, or plain shell loops), and the merge of the pieces into the report one process would
// have written (docs/scale.md).
//
// A shard K/N (K from 0 to N-1) is the K-th contiguous block of the list in its file order (labels.csv,
// or an --image-list). The list is cut into batches of `unit` items (the run's --batch) and the batches
// into N blocks: shard K holds batches [floor(b*K/N), floor(b*(K+1)/N)) of the b batches. Contiguous
// blocks, not a hash, so that the shards' records laid end to end hold each method's records in the
// single run's order; whole batches, so that every image is explained in the same batch as in the single run (a
// convolution's float rounding can depend on the batch). Together: the merged sums are the same sums,
// bit for bit, when the shards run with the same --batch and thread count.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

struct Shard {
  int index = 0;       // K, 0-based
  int count = 1;       // N; 1: the whole list
  std::string source;  // where K and N came from, for the log ("--shard 3/16", "Slurm array task 7 of 0-15")
  bool whole() const { return count == 1; }
  std::string text() const { return std::to_string(index) + "/" + std::to_string(count); }
};

// "K/N", "auto" or "auto/N". auto reads, in order: Kubernetes' JOB_COMPLETION_INDEX (N from "auto/N" or
// from JOB_COMPLETIONS, which the manifest sets: Kubernetes does not pass the completion count), then
// Slurm's SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT (K = id - min; arrays
// with a step are refused). `env` is the environment (tests pass their own).
Shard parse_shard(const std::string& text, const std::map<std::string, std::string>& env);
std::map<std::string, std::string> process_environment();

// The [first, last) positions of shard `s` in a list of `n` items cut into batches of `unit`.
std::pair<size_t, size_t> shard_range(size_t n, const Shard& s, size_t unit = 1);

template <class T>
std::vector<T> shard_of(const std::vector<T>& items, const Shard& s, size_t unit = 1) {
  const auto [first, last] = shard_range(items.size(), s, unit);
  return std::vector<T>(items.begin() + static_cast<std::ptrdiff_t>(first), items.begin() + static_cast<std::ptrdiff_t>(last));
}

// `lumen merge`: the shards' folders (each with records.jsonl of an eval or an audit run with the same
// configuration) into OUT, with the report one process would have written. Refuses shards of different
// runs, model files or lumen versions, duplicates, and missing or unfinished shards unless `partial`
// (the report then names the missing images).
struct MergeRun {
  std::vector<std::string> parts;
  std::string out;
  bool partial = false;
  // The model, card and dataset are read from the paths the shards recorded; on another machine they
  // may be mounted elsewhere: these override them (the model must still have the recorded checksum).
  std::string model, card, data;
};
struct MergeResult {
  std::string kind;                    // "eval" or "audit"
  std::string summary;                 // the table the single run prints
  std::vector<std::string> missing;    // images without a record (only with `partial`)
  size_t shards = 0, records = 0;
};
MergeResult merge_shards(const MergeRun& run);

}  // namespace lumen
#pragma GCC visibility pop
