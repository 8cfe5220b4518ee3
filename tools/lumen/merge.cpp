// lumen merge: the shards of an eval or audit run (each its --out folder) into one report. The joining
// is the library's (lumen/shard.h).
#include "commands.h"

#include <lumen/shard.h>

#include <iostream>

namespace lumen::cli {

Command add_merge(CLI::App& app) {
  auto* sub = app.add_subcommand("merge", "Join the shards of an eval or audit run (--shard) into the report one process would write");
  auto run = std::make_shared<MergeRun>();
  sub->add_option("parts", run->parts, "the shards' --out folders")->required();
  sub->add_option("--out,-o", run->out, "folder of the merged report")->required()->check(output_folder());
  sub->add_flag("--partial", run->partial, "merge even if shards are missing or unfinished; the report and missing.txt name the images left out");
  sub->add_option("--model", run->model, "the model file, if it is no longer where the shards read it (its checksum must match)");
  sub->add_option("--card", run->card, "the model card, if it is no longer where the shards read it");
  sub->add_option("--data", run->data, "the dataset folder, if it is no longer where the shards read it");
  return {sub, [run] {
            const MergeResult r = merge_shards(*run);
            std::cout << r.summary << "merged " << r.shards << " shard(s) of the " << r.kind << " run, " << r.records << " records";
            if (!r.missing.empty()) std::cout << "; " << r.missing.size() << " image(s) missing (listed in " << run->out << "/missing.txt)";
            std::cout << "\nwrote " << run->out << "\n";
            return 0;
          }};
}

}  // namespace lumen::cli
