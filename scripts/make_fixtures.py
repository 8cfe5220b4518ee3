#!/usr/bin/python3
"""Test fixtures and independent reference results for lumen (test tooling only; users never need Python).

    make_fixtures.py TOPIC OUT SHARED_DIR      TOPIC: one of the names below, or "all"

Each topic is one module of scripts/fixtures/ and one ctest fixture (tests/CMakeLists.txt), so that a
test waits only for the references it reads. Every reference is written from the method's formula with
eager PyTorch, not from lumen's code. A topic writes its files into OUT and says what it made in
OUT/manifest_<topic>.json (or its own JSON file)."""
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# topic -> module of scripts/fixtures/; "models" first: the other topics read its files.
TOPICS = {"models": "models", "gradcam": "gradcam", "pixel": "pixel", "cam": "cam", "perturbation": "perturbation",
          "variants": "variants", "eval": "eval", "targets": "targets", "onnx": "onnx_models",
          "transformers": "transformers", "volumes": "volumes", "detection": "detection",
          "trained_detector": "trained_detector"}

if __name__ == "__main__":
    if len(sys.argv) < 2 or (sys.argv[1] not in TOPICS and sys.argv[1] != "all"):
        sys.exit(f"usage: make_fixtures.py TOPIC OUT SHARED_DIR (TOPIC: {', '.join(TOPICS)} or all)")
    for topic in TOPICS if sys.argv[1] == "all" else [sys.argv[1]]:
        t0 = time.time()
        importlib.import_module("fixtures." + TOPICS[topic]).make()
        print(f"fixtures: {topic} in {time.time() - t0:.1f} s", flush=True)
