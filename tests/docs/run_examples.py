"""Runs every shell example the docs mark runnable, as a reader would type it.

A fenced block whose info string is `sh` (```sh) is runnable: each command in it (lines joined at a
trailing backslash, `# comments` dropped) runs from a fresh folder with `build/` meaning the build
folder and `../shared/` the shared data, and must exit 0. Blocks fenced with plain ``` are not run:
they hold placeholders (model.pt, DIR, ...) or take too long for a test; the docs say what to fill in.

    /usr/bin/python3 tests/docs/run_examples.py SOURCE_DIR BUILD_DIR SHARED_DIR
"""

import glob
import os
import re
import subprocess
import sys
import tempfile
import time


def runnable_commands(path):
    commands, block, inside = [], [], False
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
        stripped = line.rstrip("\n")
        if stripped.startswith("```"):
            if not inside:
                inside, runnable, start = True, stripped.strip() == "```sh", number
            else:
                if runnable:
                    commands += join_lines(block, path)
                inside, block = False, []
            continue
        if inside:
            block.append((number, stripped))
    return commands


def join_lines(block, path):
    out, current, first = [], "", None
    for number, text in block:
        if first is None:
            first = number
        text = re.sub(r"\s+#\s.*$", "", text)  # a comment after the command (never inside these commands' quotes)
        if text.rstrip().endswith("\\"):
            current += text.rstrip()[:-1] + " "
            continue
        current += text
        if current.strip() and not current.strip().startswith("#"):
            out.append(("%s:%d" % (os.path.basename(path), first), current.strip()))
        current, first = "", None
    return out


def main():
    source, build, shared = (os.path.abspath(p) for p in sys.argv[1:4])
    docs = [os.path.join(source, "README.md")] + sorted(glob.glob(os.path.join(source, "docs", "*.md")))
    commands = [c for d in docs for c in runnable_commands(d)]
    if len(commands) < 8:
        print("run_examples: only %d runnable examples found; the docs lost their ```sh marks?" % len(commands))
        return 1
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        for where, command in commands:
            real = re.sub(r"(?<![\w/.])build/", build + "/", command)
            real = real.replace("../shared/", shared + "/")
            start = time.time()
            done = subprocess.run(["bash", "-c", real], cwd=work, capture_output=True, text=True, timeout=600,
                                  env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
            status = "ok" if done.returncode == 0 else "FAILED (exit %d)" % done.returncode
            print("%-28s %6.1f s  %s  %s" % (where, time.time() - start, status, command[:110]), flush=True)
            if done.returncode != 0:
                failed += 1
                print((done.stderr or done.stdout)[-2000:])
    print("run_examples: %d of %d examples ran" % (len(commands) - failed, len(commands)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
