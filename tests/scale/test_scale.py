"""Sharded runs merged exactly (docs/scale.md): eval and audit over the shared ImageNet set as one
process and as shards run the way the deploy/ files run them (Kubernetes' JOB_COMPLETION_INDEX, Slurm's
array variables, --shard K/N), then `lumen merge`: the table, CSV and JSON are byte for byte those of
the single run (the run time aside), the page the same. A shard killed with SIGKILL and run again merges
to the same report. Merge refuses what does not belong together. The deploy files parse, and the
commands in them are the ones run here (with --limit and --steps appended to keep the test short).

    /usr/bin/python3 tests/scale/test_scale.py BUILD_DIR SOURCE_DIR SHARED_DIR
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

BUILD, SOURCE, SHARED = (os.path.abspath(p) for p in sys.argv[1:4])
del sys.argv[1:4]
LUMEN = os.path.join(BUILD, "lumen")
DEPLOY = os.path.join(SOURCE, "deploy")
# Appended to every eval command of the deploy files: 16 images (a batch of 4 per shard) and 10 deletion
# steps keep the test short.
EXTRA = ["--limit", "16", "--batch", "4", "--steps", "10", "--quiet"]
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
for key in ("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"):
    ENV.pop(key, None)


def run(args, env=None, expect=0):
    p = subprocess.run(args, env=dict(ENV, **(env or {})), capture_output=True, text=True)
    if p.returncode != expect:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}, expected {expect}:\n{p.stderr[-2000:]}")
    return p


def read(path):
    with open(path, "rb") as f:
        return f.read()


def read_json(path):
    with open(path) as f:
        return json.load(f)


def assert_same_table(test, a, b):
    """Two tables as text: the same words and the same numbers, each within one unit of its last printed
    digit (a value on a rounding boundary may print either way when the bits beneath differ)."""
    number = re.compile(rb"-?\d+(?:\.(\d+))?")
    test.assertEqual(number.sub(b"#", a), number.sub(b"#", b))
    for x, y in zip(number.finditer(a), number.finditer(b)):
        unit = 10.0 ** -len(x.group(1) or b"")
        test.assertLessEqual(abs(float(x.group(0)) - float(y.group(0))), unit * 1.001, (x.group(0), y.group(0)))


def records(folder):
    with open(os.path.join(folder, "records.jsonl")) as f:
        lines = f.read().splitlines()
    return lines[0], sorted(lines[1:])


class Scale(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="lumen-scale-")
        with open(os.path.join(DEPLOY, "kubernetes-eval.yaml")) as f:
            cls.job = yaml.safe_load(f)
        cls.container = cls.job["spec"]["template"]["spec"]["containers"][0]
        # The Kubernetes eval command, its volumes mapped to the shared folder and a scratch folder.
        mapping = {"/models": os.path.join(SHARED, "models"), "/data": os.path.join(SHARED, "data"), "/reports": os.path.join(cls.tmp, "k8s")}

        def mapped(arg):
            for mount, local in mapping.items():
                if arg.startswith(mount + "/"):
                    return local + arg[len(mount):]
            return arg

        cls.k8s_args = [mapped(a) for a in cls.container["args"]]
        cls.mapped = staticmethod(mapped)
        # The single process: the same command without --shard.
        single = list(cls.k8s_args)
        i = single.index("--shard")
        del single[i:i + 2]
        single[single.index("--out") + 1] = os.path.join(cls.tmp, "one")
        cls.single = single
        run([LUMEN, *single, *EXTRA])
        cls.count = int(cls.job["spec"]["completions"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def k8s_shard(self, k, extra=()):
        args = [a.replace("$(JOB_COMPLETION_INDEX)", str(k)) for a in self.k8s_args]
        env = {e["name"]: e["value"] for e in self.container.get("env", [])}
        env["JOB_COMPLETION_INDEX"] = str(k)
        return args, env, [*EXTRA, *extra]

    def assert_same_report(self, one, merged):
        for f in ("table.md", "results.csv"):
            self.assertEqual(read(os.path.join(one, f)), read(os.path.join(merged, f)), f)
        a, b = read_json(os.path.join(one, "results.json")), read_json(os.path.join(merged, "results.json"))
        a.pop("seconds"), b.pop("seconds")
        self.assertEqual(a, b)
        self.assertEqual(records(one), records(merged))
        self.assertEqual(read(os.path.join(one, "index.html")), read(os.path.join(merged, "index.html")))
        self.assertEqual(sorted(os.listdir(os.path.join(one, "examples"))), sorted(os.listdir(os.path.join(merged, "examples"))))

    def test_1_kubernetes_shards_merge_to_the_single_run(self):
        self.assertEqual(self.job["spec"]["completionMode"], "Indexed")
        self.assertEqual(self.job["spec"]["parallelism"], self.count)
        env = {e["name"]: e["value"] for e in self.container["env"]}
        self.assertEqual(int(env["JOB_COMPLETIONS"]), self.count, "JOB_COMPLETIONS must equal the Job's completions")
        self.assertEqual(self.container["image"].split(":")[0], "lumen")
        mounts = {m["mountPath"] for m in self.container["volumeMounts"]}
        self.assertEqual(mounts, {"/models", "/data", "/reports"})
        self.assertTrue(all("persistentVolumeClaim" in v for v in self.job["spec"]["template"]["spec"]["volumes"]))
        for k in range(self.count):
            args, env, extra = self.k8s_shard(k)
            if k == 1:
                # Killed part-way (records are written image by image), then run again.
                out = os.path.join(self.tmp, "k8s", "part-1", "records.jsonl")
                proc = subprocess.Popen([LUMEN, *args, *extra], env=dict(ENV, **env), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                deadline = time.time() + 300
                while time.time() < deadline and proc.poll() is None:
                    if os.path.exists(out) and len(read(out).splitlines()) >= 4:
                        break
                    time.sleep(0.02)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kept = len(read(out).splitlines()) - 1
                self.assertLess(kept, 8, "the kill came after the shard had finished")
                again = run([LUMEN, *args, *extra], env)
                self.assertIn("resuming", again.stderr)
            else:
                p = run([LUMEN, *args, *extra], env)
                self.assertIn(f"shard {k}/{self.count} (Kubernetes JOB_COMPLETION_INDEX {k}", p.stderr)
        with open(os.path.join(DEPLOY, "kubernetes-merge.yaml")) as f:
            merge = yaml.safe_load(f)["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertEqual(merge[0], "merge")
        run([LUMEN, *[self.mapped(a) for a in merge]])
        self.assert_same_report(os.path.join(self.tmp, "one"), os.path.join(self.tmp, "k8s", "all"))

    def test_2_slurm_array_merges_to_the_single_run(self):
        script = os.path.join(DEPLOY, "slurm-eval.sh")
        subprocess.run(["bash", "-n", script], check=True)
        with open(script) as f:
            text = f.read()
        array = re.search(r"^#SBATCH --array=(\d+)-(\d+)$", text, re.M)
        self.assertIsNotNone(array)
        first, last = int(array.group(1)), int(array.group(2))
        work = os.path.join(self.tmp, "slurm")
        os.makedirs(os.path.join(work, "reports"))
        os.symlink(os.path.join(SHARED, "models"), os.path.join(work, "models"))
        os.symlink(os.path.join(SHARED, "data"), os.path.join(work, "data"))
        for task in range(first, last + 1):
            p = subprocess.run(["bash", script], cwd=work, capture_output=True, text=True,
                               env=dict(ENV, LUMEN=LUMEN, LUMEN_NO_MERGE_JOB="1", LUMEN_EXTRA_FLAGS=" ".join(EXTRA),
                                        SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_MIN=str(first),
                                        SLURM_ARRAY_TASK_COUNT=str(last - first + 1), SLURM_ARRAY_JOB_ID="1"))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn(f"Slurm array task {task}", p.stderr)
        merge = shlex.split(re.search(r'--wrap="([^"]*)"', text).group(1).replace("$LUMEN", LUMEN))
        subprocess.run(merge, cwd=work, check=True, capture_output=True, env=ENV)
        self.assert_same_report(os.path.join(self.tmp, "one"), os.path.join(work, "reports", "all"))

    def test_3_merge_refuses_what_does_not_belong(self):
        parts = os.path.join(self.tmp, "k8s")
        if not os.path.exists(os.path.join(parts, "part-3", "records.jsonl")):
            self.skipTest("needs the Kubernetes shards of test_1")
        names = [os.path.join(parts, f"part-{k}") for k in range(self.count)]
        out = os.path.join(self.tmp, "refused")

        def refused(folders, needle, *flags):
            p = run([LUMEN, "merge", *folders, "--out", out, *flags], expect=2)
            self.assertIn(needle, p.stderr)
            self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
            self.assertFalse(os.path.exists(os.path.join(out, "results.json")), "a refused merge wrote a report")

        refused(names[:3], "shard(s) 3 of 4 are missing")
        refused(names + [names[0]], "are both shard 0/4")
        # Another configuration: a shard of a run with other deletion steps.
        args, env, extra = self.k8s_shard(2)
        other = os.path.join(self.tmp, "other-steps")
        args[args.index("--out") + 1] = other
        run([LUMEN, *args, "--limit", "16", "--batch", "4", "--steps", "7", "--quiet"], env)
        refused(names[:2] + [other] + names[3:], "belongs to a different run than")
        refused(names[:2] + [other] + names[3:], "steps (10 vs 7)")
        # Another model file: the checksum the shard recorded differs.
        tampered = os.path.join(self.tmp, "tampered")
        shutil.copytree(names[3], tampered)
        path = os.path.join(tampered, "records.jsonl")
        lines = read(path).decode().splitlines()
        head = json.loads(lines[0])
        head["config"]["model_fingerprint"] = "0-0000000000000000"
        with open(path, "w") as f:
            f.write("\n".join([json.dumps(head)] + lines[1:]) + "\n")
        refused(names[:3] + [tampered], "the model file's checksum")
        # The right folders but the model given to draw the report is another file.
        run([LUMEN, "merge", *names, "--out", out, "--model", os.path.join(SHARED, "models", "mobilenet_v2_imagenet.onnx")], expect=2)
        # An unfinished shard: its last records lost.
        cut = os.path.join(self.tmp, "cut")
        shutil.copytree(names[3], cut)
        path = os.path.join(cut, "records.jsonl")
        lines = read(path).decode().splitlines()
        with open(path, "w") as f:
            f.write("\n".join(lines[:-3]) + "\n")
        refused(names[:3] + [cut], "is unfinished")
        # --partial merges what is there and names what is not.
        p = run([LUMEN, "merge", *names[:3], "--out", out, "--partial"])
        self.assertIn("4 image(s) missing", p.stdout)
        missing = read(os.path.join(out, "missing.txt")).decode().split()
        one = [json.loads(line) for line in read(os.path.join(self.tmp, "one", "records.jsonl")).decode().splitlines()[1:]]
        order = list(dict.fromkeys(r["image"] for r in one if "image" in r))
        self.assertEqual(missing, order[12:16])
        self.assertIn("Partial merge: 4 of 16 images", read(os.path.join(out, "table.md")).decode())

    def test_4_audit_shards_merge_to_the_single_run(self):
        base = ["audit", "--model", os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt"), "--card",
                os.path.join(SHARED, "models", "mobilenet_v2_imagenet.json"), "--data", os.path.join(SHARED, "data", "imagenet-loc-dev"),
                "--limit", "20", "--quiet"]
        one = os.path.join(self.tmp, "audit-one")
        run([LUMEN, *base, "--out", one])
        parts = []
        for k in range(3):
            parts.append(os.path.join(self.tmp, f"audit-{k}"))
            run([LUMEN, *base, "--shard", f"{k}/3", "--out", parts[-1]])
        merged = os.path.join(self.tmp, "audit-all")
        run([LUMEN, "merge", *reversed(parts), "--out", merged])  # the order of the folders does not matter
        for f in ("audit.csv", "audit.json", "index.html"):
            self.assertEqual(read(os.path.join(one, f)), read(os.path.join(merged, f)), f)
        self.assertEqual(sorted(os.listdir(os.path.join(one, "flagged"))), sorted(os.listdir(os.path.join(merged, "flagged"))))

    def test_5_sanity_runs_once_in_shard_zero(self):
        base = ["eval", "--model", os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt"), "--card",
                os.path.join(SHARED, "models", "mobilenet_v2_imagenet.json"), "--data", os.path.join(SHARED, "data", "imagenet-loc-dev"),
                "--limit", "6", "--batch", "2", "--metrics", "loc,sanity", "--sanity-images", "2", "--quiet"]
        one = os.path.join(self.tmp, "sanity-one")
        run([LUMEN, *base, "--out", one])
        parts = [os.path.join(self.tmp, f"sanity-{k}") for k in range(2)]
        for k, part in enumerate(parts):
            run([LUMEN, *base, "--shard", f"{k}/2", "--out", part])
        self.assertFalse(any("sanity" in json.loads(line) for line in read(os.path.join(parts[1], "records.jsonl")).splitlines()[1:]))
        merged = os.path.join(self.tmp, "sanity-all")
        run([LUMEN, "merge", *parts, "--out", merged])
        a, b = read_json(os.path.join(one, "results.json")), read_json(os.path.join(merged, "results.json"))
        a.pop("seconds"), b.pop("seconds")
        self.assertEqual(a, b)
        self.assertIn("sanity", b["summary"]["gradcam"])

    def test_6_workers_on_one_machine(self):
        # Two processes on one core each, merged: the same table as the single run (one thread each
        # instead of two may round differently in the last bits, which can flip a printed last digit).
        out = os.path.join(self.tmp, "workers")
        single = list(self.single)
        single[single.index("--out") + 1] = out
        p = run([LUMEN, *single, *EXTRA, "--workers", "2"])
        self.assertIn("evaluated with 2 workers", p.stdout)
        assert_same_table(self, read(os.path.join(self.tmp, "one", "table.md")), read(os.path.join(out, "table.md")))
        self.assertEqual(records(os.path.join(self.tmp, "one"))[0], records(out)[0], "the merged run's configuration")
        self.assertEqual(sorted(os.listdir(os.path.join(out, "workers"))), ["part-0", "part-1"])

    def test_7_shard_flags(self):
        bad = [(["--shard", "4/4"], "--shard's K (0-based) must be from 0 to 3"), (["--shard", "1"], "--shard must be K/N"),
               (["--shard", "auto"], "neither is set"), (["--shard", "x/2"], "whole number")]
        base = ["eval", "--model", os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt"), "--card",
                os.path.join(SHARED, "models", "mobilenet_v2_imagenet.json"), "--data", os.path.join(SHARED, "data", "imagenet-loc-dev")]
        for flags, needle in bad:
            p = run([LUMEN, *base, *flags, "--out", os.path.join(self.tmp, "never")], expect=2)
            self.assertIn(needle, p.stderr)
        p = run([LUMEN, *base, "--shard", "auto", "--out", os.path.join(self.tmp, "never")], {"SLURM_ARRAY_TASK_ID": "3"}, expect=2)
        self.assertIn("SLURM_ARRAY_TASK_COUNT", p.stderr)
        p = run([LUMEN, *base, "--shard", "auto", "--out", os.path.join(self.tmp, "never")], {"JOB_COMPLETION_INDEX": "3"}, expect=2)
        self.assertIn("JOB_COMPLETIONS", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "never")))


if __name__ == "__main__":
    unittest.main()
