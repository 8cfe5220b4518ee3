// lumen: tasks. What kind of output an explanation reads — a classifier's scores, a segmenter's pixels,
// an embedding, a detector's boxes — and which of a request's other settings go with it. The CLI
// (--task), `lumen serve` ("task") and Python (task=) each name the settings their own way (--top-k,
// "top_k", top_k=); the rules live here once, and each front end words the conflict in its names.
#pragma once

#include <functional>
#include <optional>
#include <set>
#include <string>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

enum class Task { Classification, Segmentation, Similarity, Detection };
Task parse_task(const std::string& name);  // "classification" | "segmentation" | "similarity" | "detection"
std::string to_string(Task task);

// The settings a task rule looks at: those a request gave (explicitly; defaults are not "given").
enum class TaskSetting {
  Classes, TopK, Score, Counterfactual, Contrast, Output, Sequence, Token,  // class targets and their outputs
  Region, Mask,                                                             // segmentation
  References, Dissimilar,                                                   // similarity
  Box, ScoreThreshold, IouThreshold, MaxBoxes, DetectionOutput,            // detection
};

struct TaskConflict {
  enum class Kind {
    Refused,    // `task` cannot take `setting`
    Missing,    // `task` needs `setting`
    Elsewhere,  // `setting` belongs to `task`, which was not asked for
  };
  Kind kind;
  TaskSetting setting;
  Task task;
  std::string why;  // Refused: what the task explains; Missing: what the setting gives it
};

// The first conflict between `task` and the settings given; nullopt when they go together.
std::optional<TaskConflict> task_conflict(Task task, const std::set<TaskSetting>& given);
// The conflict as one sentence, in a front end's names for the settings and tasks:
//   "<task> explains <why>; it takes no <setting>", "<task> needs <setting>: <why>",
//   "<setting> belongs to <task>".
std::string describe(const TaskConflict& conflict, const std::function<std::string(TaskSetting)>& setting_name,
                     const std::function<std::string(Task)>& task_name);

}  // namespace lumen
#pragma GCC visibility pop
