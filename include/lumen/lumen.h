// lumen: umbrella header.
#pragma once

#include <lumen/error.h>
#include <lumen/explain.h>
#include <lumen/image.h>
#include <lumen/metrics.h>
#include <lumen/model.h>
#include <lumen/output.h>
#include <lumen/target.h>
