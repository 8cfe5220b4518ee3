// Which settings go with which task (lumen/task.h): one table, read by every front end.
#include <lumen/error.h>
#include <lumen/task.h>

#include <vector>

namespace lumen {

Task parse_task(const std::string& name) {
  if (name == "classification") return Task::Classification;
  if (name == "segmentation") return Task::Segmentation;
  if (name == "similarity") return Task::Similarity;
  if (name == "detection") return Task::Detection;
  throw Error("unknown task '" + name + "' (expected classification, segmentation, similarity or detection)");
}

std::string to_string(Task task) {
  switch (task) {
    case Task::Classification: return "classification";
    case Task::Segmentation: return "segmentation";
    case Task::Similarity: return "similarity";
    case Task::Detection: return "detection";
  }
  return "?";
}

namespace {

using S = TaskSetting;

struct Rule {
  Task task;
  std::string explains;             // what its maps explain, said when a setting is refused
  std::vector<TaskSetting> refuses;
  std::vector<std::pair<TaskSetting, std::string>> needs;  // with what the setting gives it
  std::vector<TaskSetting> owns;    // settings that belong to this task alone
};

const std::vector<Rule>& rules() {
  // Every task other than classification explains its own target: class scores and their shaping
  // (score, counterfactual, contrast, top-k, sequence and token positions) do not apply. Detection
  // and segmentation keep --class (the labels or classes to explain); segmentation keeps --output
  // (where its [N, classes, h, w] scores are).
  static const std::vector<Rule> table{
      {Task::Segmentation, "the sum of a class's scores over its pixels",
       {S::TopK, S::Score, S::Counterfactual, S::Contrast, S::Sequence, S::Token},
       {{S::Classes, "the classes whose pixels are explained"}},
       {S::Region, S::Mask}},
      {Task::Similarity, "the cosine similarity of each image's embedding to the references",
       {S::Classes, S::TopK, S::Score, S::Counterfactual, S::Contrast, S::Sequence, S::Token},
       {{S::References, "reference images or a reference embedding"}},
       {S::References, S::Dissimilar}},
      {Task::Detection, "each box's score (IoU + the detector's score)",
       {S::TopK, S::Score, S::Counterfactual, S::Contrast, S::Output, S::Sequence, S::Token},
       {},
       {S::Box, S::ScoreThreshold, S::IouThreshold, S::MaxBoxes, S::DetectionOutput}},
  };
  return table;
}

}  // namespace

std::optional<TaskConflict> task_conflict(Task task, const std::set<TaskSetting>& given) {
  for (const Rule& r : rules()) {
    if (r.task == task) continue;
    for (TaskSetting s : r.owns)
      if (given.count(s)) return TaskConflict{TaskConflict::Kind::Elsewhere, s, r.task, ""};
  }
  for (const Rule& r : rules()) {
    if (r.task != task) continue;
    for (const auto& [s, gives] : r.needs)
      if (!given.count(s)) return TaskConflict{TaskConflict::Kind::Missing, s, task, gives};
    for (TaskSetting s : r.refuses)
      if (given.count(s)) return TaskConflict{TaskConflict::Kind::Refused, s, task, r.explains};
  }
  return std::nullopt;
}

std::string describe(const TaskConflict& c, const std::function<std::string(TaskSetting)>& setting_name,
                     const std::function<std::string(Task)>& task_name) {
  switch (c.kind) {
    case TaskConflict::Kind::Refused: return task_name(c.task) + " explains " + c.why + "; it takes no " + setting_name(c.setting);
    case TaskConflict::Kind::Missing: return task_name(c.task) + " needs " + setting_name(c.setting) + ": " + c.why;
    case TaskConflict::Kind::Elsewhere: return setting_name(c.setting) + " belongs to " + task_name(c.task);
  }
  return "";
}

}  // namespace lumen
