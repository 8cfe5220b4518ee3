// lumen: umbrella header — every public header.
#pragma once

#include <lumen/audit.h>
#include <lumen/dataset.h>
#include <lumen/demo.h>
#include <lumen/error.h>
#include <lumen/evaluate.h>
#include <lumen/explain.h>
#include <lumen/files.h>
#include <lumen/image.h>
#include <lumen/layout.h>
#include <lumen/map.h>
#include <lumen/methods.h>
#include <lumen/metrics.h>
#include <lumen/model.h>
#include <lumen/output.h>
#include <lumen/picture.h>
#include <lumen/report.h>
#include <lumen/runtime.h>
#include <lumen/settings.h>
#include <lumen/shard.h>
#include <lumen/target.h>
#include <lumen/task.h>
#include <lumen/version.h>
#include <lumen/visualize.h>
