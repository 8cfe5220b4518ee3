"""lumen serve under load, against lumen bench in the same run (docs/serve.md).

    /usr/bin/python3 bench/serve_load.py [--build build] [--shared ../shared] [--clients 8] [--requests 100] [--pictures no,yes] [--serve-args "--workers 1"]

Starts `lumen serve` on a free port, then --clients threads each send --requests Grad-CAM requests of
one image (the shared photos in turn, "raw": true) and check every answer's map against the CLI's
file for that image (lumen explain, same forward mode): max |difference| under 1e-4. It reports
errors, p50/p99 latency, throughput, the server's RSS after the first 100 answers and at the end, and
how many images shared each forward pass, and the CPU time per answer of the server and of the clients
(from /proc) beside bench's. Then `lumen bench --batches 8` on the same machine gives
batch-8 Grad-CAM images/s, and the ratio. It stops by itself: the number of requests is fixed.
Rounds: once with "pictures": false (maps only), once with the pictures (two PNGs per map).
Needs numpy (Debian's python3-numpy).
"""

import argparse
import base64
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import numpy as np

IMAGES = ["pets.jpg", "cat.png", "bird.png", "owl.jpg", "dragonfly.png", "hot_dog.jpg", "sunflower.png", "grace_hopper.png"]


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid):
    """User + system CPU time of a process so far (all its threads), from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_seconds():
    """The machine's idle time so far, summed over its cores, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


def post(connection, image_bytes, name, params):
    """One explain request on a kept-alive connection (as a real client keeps one): (status, answer)."""
    boundary = uuid.uuid4().hex
    body = (b"--%s\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n%s\r\n" % (boundary.encode(), json.dumps(params).encode()) +
            b"--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"%s\"\r\n\r\n" % (boundary.encode(), name.encode()) + image_bytes +
            b"\r\n--%s--\r\n" % boundary.encode())
    connection.request("POST", "/api/explain", body, {"Content-Type": "multipart/form-data; boundary=" + boundary})
    r = connection.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError("HTTP %d: %s" % (r.status, data[:200]))
    return r.status, json.loads(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--pictures", default="no,yes", help="rounds to run: no (maps only), yes (with pictures) or both")
    ap.add_argument("--serve-args", default="", help="more arguments for lumen serve, e.g. \"--workers 1\"")
    a = ap.parse_args()
    lumen = os.path.join(a.build, "lumen")
    model = ["--model", os.path.join(a.shared, "models", "mobilenet_v2_imagenet.pt"), "--card", os.path.join(a.shared, "models", "mobilenet_v2_imagenet.json")]
    paths = [os.path.join(a.shared, "images", i) for i in IMAGES]
    images = {os.path.basename(p): open(p, "rb").read() for p in paths}

    # The CLI's maps, the reference every answer is checked against.
    work = tempfile.TemporaryDirectory()
    subprocess.run([lumen, "explain", *model, "--image", *paths, "--out", work.name, "--quiet"], check=True, stdout=subprocess.DEVNULL)
    run = json.load(open(os.path.join(work.name, "run.json")))
    reference = {}
    for entry in run["images"]:
        values = np.load(os.path.join(work.name, entry["maps"][0]["files"]["map"])).astype("<f4")
        # The map as the server encodes it: an equal answer is the same string, compared at C speed, so
        # that checking every answer takes little of the CPU the clients share with the server.
        reference[os.path.basename(entry["source"])] = (values, base64.b64encode(values.tobytes()).decode())

    server = subprocess.Popen([lumen, "serve", *model, "--port", "0", "--quiet", *a.serve_args.split()], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().split("serving on ")[1].split()[0].rstrip("/")
    results = []
    for pictures in [p == "yes" for p in a.pictures.split(",")]:
        latencies, errors, worst, batched = [], [], 0.0, []
        lock = threading.Lock()
        rss_first = [None]

        def client(k):
            nonlocal worst
            host, port = url.split("//")[1].split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=300)
            for r in range(a.requests):
                name = IMAGES[(k + r) % len(IMAGES)]
                start = time.perf_counter()
                try:
                    status, answer = post(connection, images[name], name, {"methods": ["gradcam"], "raw": True, "pictures": pictures})
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    with lock:
                        errors.append(str(e))
                    connection.close()
                    connection = http.client.HTTPConnection(host, int(port), timeout=300)
                    continue
                took = time.perf_counter() - start
                m = answer["maps"][0]
                want, want_text = reference[name]
                diff = 0.0
                if m["map"]["float32_base64"] != want_text:
                    h, w = m["map"]["shape"]
                    values = np.frombuffer(base64.b64decode(m["map"]["float32_base64"]), "<f4").reshape(h, w)
                    diff = float(np.abs(values - want).max()) if values.shape == want.shape else float("inf")
                with lock:
                    latencies.append(took)
                    batched.append(answer["batched_with"])
                    worst = max(worst, diff)
                    if len(latencies) == 100 and rss_first[0] is None:
                        rss_first[0] = rss_mib(server.pid)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        server_cpu, client_cpu, idle = cpu_seconds(server.pid), sum(os.times()[:2]), idle_seconds()
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        server_cpu, client_cpu, idle = cpu_seconds(server.pid) - server_cpu, sum(os.times()[:2]) - client_cpu, idle_seconds() - idle
        latencies.sort()
        results.append({"pictures": pictures, "requests": len(latencies) + len(errors), "errors": len(errors), "max_map_difference": worst,
                        "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
                        "images_per_second": len(latencies) / seconds, "mean_batch": statistics.mean(batched),
                        "rss_after_100_mib": rss_first[0], "rss_end_mib": rss_mib(server.pid),
                        "server_cpu_ms": 1000 * server_cpu / max(1, len(latencies)), "client_cpu_ms": 1000 * client_cpu / max(1, len(latencies)),
                        "idle_share": idle / (seconds * (os.cpu_count() or 1))})
        if errors:
            print("errors, e.g.:", errors[0], file=sys.stderr)
    server.terminate()
    server.wait(60)

    bench = os.path.join(work.name, "bench.json")
    subprocess.run([lumen, "bench", *model, "--layer", "features.18", "--batches", "8", "--json", bench, "--quiet"], check=True, stdout=subprocess.DEVNULL)
    bench_rate = next(r["images_per_second"] for r in json.load(open(bench))["rows"] if r["what"] == "gradcam")

    print("lumen serve, %d clients x %d Grad-CAM requests of one image (MobileNetV2, photos 512 px wide); lumen bench batch-8 Grad-CAM: %.1f images/s"
          % (a.clients, a.requests, bench_rate))
    print("%-10s %8s %6s %12s %8s %8s %9s %9s %10s %12s %10s" % ("pictures", "requests", "errors", "max |map-CLI|", "p50 ms", "p99 ms", "images/s",
                                                                "/ bench", "mean batch", "RSS@100 MiB", "RSS end"))
    for r in results:
        print("%-10s %8d %6d %12.2e %8.1f %8.1f %9.1f %9.2f %10.2f %12.0f %10.0f" % (
            "yes" if r["pictures"] else "no", r["requests"], r["errors"], r["max_map_difference"], r["p50_ms"], r["p99_ms"], r["images_per_second"],
            r["images_per_second"] / bench_rate, r["mean_batch"], r["rss_after_100_mib"], r["rss_end_mib"]))
    # Where the CPU goes: a core-second budget per answer. bench keeps every core busy with its batch,
    # so its images/s at N cores is N core-seconds per (1 / rate) images.
    cores = os.cpu_count() or 1
    print("CPU per answer (ms of one core): bench's batch-8 Grad-CAM %.1f; " % (1000 * cores / bench_rate) + "; ".join(
        "pictures %s: server %.1f, clients %.1f, cores idle %.0f %%" % ("yes" if r["pictures"] else "no", r["server_cpu_ms"], r["client_cpu_ms"],
                                                                       100 * r["idle_share"]) for r in results))
    ok = all(r["errors"] == 0 and r["max_map_difference"] < 1e-4 for r in results)
    print("every answer equal to the CLI's map (1e-4): %s; RSS growth after the first 100: %s" % (
        "yes" if ok else "NO", ", ".join("%+.1f %%" % (100 * (r["rss_end_mib"] / r["rss_after_100_mib"] - 1)) for r in results)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
