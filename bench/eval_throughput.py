"""lumen eval throughput on one machine, and the cost of merging shards (docs/scale.md).

    python3 bench/eval_throughput.py [--build build] [--shared ../shared] [--rounds 2] [--images 300]

Rows, measured in the same run and interleaved round by round:
- sequential: decode, explain and measure one batch after another (--no-overlap);
- overlapped: the next batch decoded on a second thread (the default);
- 2 workers: two processes, one core each, merged at the end (--workers 2).

Each one runs Grad-CAM with the loc metric on the shared ImageNet set at --batch 8, --fresh, and the
times are wall-clock times of the whole command: model load, report and (for workers) the merge
included. Images/s is the median over rounds. Then 16 shards of a 10,000-record eval are merged, and the
merge is timed. The shards are the real records of the shared set, copied under new names into a
scratch dataset of links to its images.
Nothing here needs torch: any python3 runs it.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time


def lumen(build, args):
    start = time.perf_counter()
    subprocess.run([os.path.join(build, "lumen"), *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--merge-records", type=int, default=10000)
    a = ap.parse_args()
    shared = os.path.abspath(a.shared)
    model = ["--model", os.path.join(shared, "models", "mobilenet_v2_imagenet.pt"), "--card",
             os.path.join(shared, "models", "mobilenet_v2_imagenet.json")]
    data = os.path.join(shared, "data", "imagenet-loc-dev")
    tmp = tempfile.mkdtemp(prefix="lumen-bench-eval-")
    try:
        base = ["eval", *model, "--data", data, "--methods", "gradcam", "--metrics", "loc", "--batch", "8", "--limit", str(a.images),
                "--fresh", "--quiet"]
        configs = [("sequential (--no-overlap)", ["--no-overlap"]), ("overlapped (default)", []), ("2 workers (--workers 2)", ["--workers", "2"])]
        times = {name: [] for name, _ in configs}
        lumen(a.build, [*base, "--out", os.path.join(tmp, "warm")])  # the forward-mode probe is cached after this
        for r in range(a.rounds):
            for name, flags in configs:
                times[name].append(lumen(a.build, [*base, *flags, "--out", os.path.join(tmp, f"run-{r}")]))
        first = statistics.median(times[configs[0][0]])
        print(f"lumen eval, Grad-CAM + loc, {a.images} images, batch 8, {os.cpu_count()} cores, median of {a.rounds} rounds:")
        for name, _ in configs:
            t = statistics.median(times[name])
            print(f"  {name:28s} {t:6.1f} s  {a.images / t:6.1f} images/s  {first / t:5.2f}x the sequential pipeline")

        # Merge: 16 shards of a 10,000-record eval (records of the real run above, under new names).
        one = os.path.join(tmp, "run-0")
        with open(os.path.join(one, "records.jsonl")) as f:
            lines = f.read().splitlines()
        config = json.loads(lines[0])["config"]
        records = [json.loads(line) for line in lines[1:]]
        n = a.merge_records
        fake = os.path.join(tmp, "fake-data")
        os.makedirs(os.path.join(fake, "images"))
        labels, boxes = ["image,label"], ["image,label,x0,y0,x1,y1"]
        with open(os.path.join(data, "boxes.csv")) as f:
            box_of = {}
            for row in f.read().splitlines()[1:]:
                box_of.setdefault(row.split(",")[0], []).append(row.split(",", 1)[1])
        names = []
        for i in range(n):
            r = records[i % len(records)]
            name = f"img-{i:06d}.JPEG"
            names.append(name)
            os.symlink(os.path.join(data, "images", r["image"]), os.path.join(fake, "images", name))
            labels.append(f"{name},{r['label']}")
            boxes += [f"{name},{b}" for b in box_of.get(r["image"], [])]
        with open(os.path.join(fake, "labels.csv"), "w") as f:
            f.write("\n".join(labels) + "\n")
        with open(os.path.join(fake, "boxes.csv"), "w") as f:
            f.write("\n".join(boxes) + "\n")
        config["data"] = os.path.realpath(fake)
        config["limit"] = 0
        parts = []
        shards = 16
        for k in range(shards):
            # The same blocks as lumen's --shard k/16 --batch 8: whole batches, dealt out in order.
            batches = (n + 7) // 8
            lo, hi = min(n, batches * k // shards * 8), min(n, batches * (k + 1) // shards * 8)
            part = os.path.join(tmp, f"part-{k}")
            os.makedirs(part)
            c = dict(config, shard={"index": k, "count": shards, "batch": 8, "methods": ["gradcam"]})
            with open(os.path.join(part, "records.jsonl"), "w") as f:
                f.write(json.dumps({"config": c}) + "\n")
                for i in range(lo, hi):
                    f.write(json.dumps(dict(records[i % len(records)], image=names[i])) + "\n")
            parts.append(part)
        size = sum(os.path.getsize(os.path.join(p, "records.jsonl")) for p in parts)
        t = lumen(a.build, ["merge", *parts, "--out", os.path.join(tmp, "merged")])
        print(f"  merge of {shards} shards, {n} records ({size / 2**20:.0f} MiB): {t:.1f} s "
              f"(the report's 8 example pictures explained again included)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
