"""lumen serve, from the outside: every API endpoint and every error status, the limits, the token, the
signals, malformed and slow requests, and the page in a real browser (headless Chromium driven by
python3-selenium). Maps the server returns are compared with the CLI's files for the same image.
Screenshots are kept in BUILD_DIR/test-artifacts/serve/.

    /usr/bin/python3 tests/serve/test_serve.py BUILD_DIR SHARED_DIR
"""

import base64
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid
import zlib

import numpy as np

BUILD, SHARED = (os.path.abspath(p) for p in sys.argv[1:3])
del sys.argv[1:3]
LUMEN = os.path.join(BUILD, "lumen")
MODEL = ["--model", os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt"), "--card", os.path.join(SHARED, "models", "mobilenet_v2_imagenet.json")]
DATA = os.path.join(SHARED, "data", "imagenet-loc-dev")
PETS = os.path.join(SHARED, "images", "pets.jpg")
ARTIFACTS = os.path.join(BUILD, "test-artifacts", "serve")
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
FIXTURES = os.environ.get("LUMEN_FIXTURES_DIR", os.path.join(BUILD, "fixtures"))  # the detection and targets topics
# The dogs of pets.jpg (512x430), measured once on the photo: x0, y0, x1, y1.
GREYHOUND = (100, 10, 265, 300)   # class 171, left
BOSTON_BULL = (340, 160, 500, 370)  # class 195, right


def inside(point, box):
    return box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]


class Server:
    """A lumen serve process on a free port; the URL is read from the line it prints."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([LUMEN, "serve", *MODEL, "--port", "0", "--forward-mode", "plain", "--quiet", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        line = self.proc.stdout.readline()
        if "serving on" not in line:
            raise RuntimeError("lumen serve did not start: " + line + self.proc.stderr.read())
        self.line = line
        url = line.split("serving on ")[1].split()[0]
        self.url = url.split("#")[0].rstrip("/")
        self.token = url.split("#token=")[1] if "#token=" in url else ""
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, out, err


def multipart(parts):
    """parts: (name, filename or None, bytes) -> (content type, body)."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, filename, data in parts:
        body += b"--" + boundary.encode() + b"\r\n"
        disposition = 'form-data; name="%s"' % name + ('; filename="%s"' % filename if filename else "")
        body += b"Content-Disposition: " + disposition.encode() + b"\r\n"
        if filename:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + data + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    return "multipart/form-data; boundary=" + boundary, body


def request(url, method="GET", body=None, headers=None, timeout=120):
    """(status, headers, parsed JSON or bytes)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, h, data = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, h, data = e.code, e.headers, e.read()
    if h.get("Content-Type", "").startswith("application/json"):
        return status, h, json.loads(data)
    return status, h, data


def explain(server, params, images=(), data_ids=(), headers=None, timeout=120, mask=None):
    parts = [("params", None, json.dumps(params).encode())]
    if mask is not None:  # a mask image's path
        with open(mask, "rb") as f:
            parts.append(("mask", os.path.basename(mask), f.read()))
    for path in images:
        with open(path, "rb") as f:
            parts.append(("image", os.path.basename(path), f.read()))
    for d in data_ids:
        parts.append(("data_id", None, d.encode()))
    ctype, body = multipart(parts)
    return request(server.url + "/api/explain", "POST", body, {"Content-Type": ctype, **(headers or {})}, timeout)


def brief(answer):
    """An answer as an assertion message: its error, or its text without the pictures and maps."""
    text = json.dumps(answer) if not isinstance(answer, bytes) else repr(answer[:200])
    return re.sub(r'"[A-Za-z0-9+/=]{200,}"', '"..."', text)[:2000]


def box_mean(values, box):
    return float(values[box[1]:box[3], box[0]:box[2]].mean())


def decoded_map(m):
    h, w = m["map"]["shape"]
    return np.frombuffer(base64.b64decode(m["map"]["float32_base64"]), dtype="<f4").reshape(h, w)


def png_header(width, height):
    """A PNG whose IHDR declares width x height (and nothing else worth decoding)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def served_with_report():
    """A scratch folder holding a small eval report, and a server of --data and that --report."""
    work = tempfile.TemporaryDirectory()
    report = os.path.join(work.name, "report")
    subprocess.run([LUMEN, "eval", *MODEL, "--data", DATA, "--limit", "4", "--methods", "gradcam", "--metrics", "loc", "--forward-mode", "plain",
                    "--out", report, "--quiet"], check=True, stdout=subprocess.DEVNULL, env=ENV)
    return work, Server("--data", DATA, "--report", report)


class Api(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work, cls.server = served_with_report()

    @classmethod
    def tearDownClass(cls):
        code, out, err = cls.server.stop()
        assert code == 0, (code, err)

    def test_listing_endpoints(self):
        s, _, health = request(self.server.url + "/healthz")
        self.assertEqual((s, health["status"]), (200, "ok"))
        s, _, models = request(self.server.url + "/api/models")
        self.assertEqual(s, 200)
        self.assertEqual([m["id"] for m in models["models"]], ["mobilenet_v2_imagenet"])
        self.assertEqual(models["models"][0]["default_layer"], "features.18")
        s, _, layers = request(self.server.url + "/api/models/mobilenet_v2_imagenet/layers")
        paths = {l["path"]: l for l in layers["layers"]}
        self.assertEqual(paths["features.18"]["shape"], [1, 1280, 7, 7])
        s, _, labels = request(self.server.url + "/api/models/mobilenet_v2_imagenet/labels")
        self.assertEqual((len(labels["labels"]), labels["labels"][171]), (1000, "Italian greyhound"))
        s, _, data = request(self.server.url + "/api/data")
        self.assertEqual(len(data["images"]), 300)
        first = data["images"][0]
        self.assertTrue(first["boxes"] and first["label_name"])
        s, h, image = request(self.server.url + "/api/data/image?id=" + urllib.request.quote(first["id"]))
        self.assertEqual(s, 200)
        with open(os.path.join(DATA, "images", first["id"]), "rb") as f:
            self.assertEqual(image, f.read())
        s, _, methods = request(self.server.url + "/api/methods")
        self.assertIn("gradcam", [m["name"] for m in methods["methods"]])
        s, _, report = request(self.server.url + "/api/report")
        self.assertEqual(s, 200)
        self.assertIn("gradcam", report["summary"])
        self.assertTrue(report["examples"] and all("data_id" in x for x in report["examples"]))
        s, h, page = request(self.server.url + report["examples"][0]["file"])
        self.assertEqual((s, h["Content-Type"]), (200, "image/png"))

    def test_headers(self):
        for path in ("/", "/app.js", "/api/models"):
            s, h, _ = request(self.server.url + path)
            self.assertEqual(s, 200, path)
            self.assertEqual(h["X-Content-Type-Options"], "nosniff")
            self.assertIn("script-src 'self'", h["Content-Security-Policy"])
        self.assertTrue(request(self.server.url + "/")[1]["Content-Type"].startswith("text/html"))
        self.assertTrue(request(self.server.url + "/app.js")[1]["Content-Type"].startswith("text/javascript"))

    def test_explain_matches_the_cli(self):
        s, _, a = explain(self.server, {"methods": ["gradcam", "guided-gradcam"], "classes": [171, 195], "raw": True}, [PETS])
        self.assertEqual(s, 200, brief(a))
        self.assertEqual((a["width"], a["height"]), (512, 430))
        self.assertEqual([p["class"] for p in a["predictions"][:2]], [171, 195])
        self.assertEqual(len(a["maps"]), 4)
        for m in a["maps"]:
            for key in ("method", "layer", "target", "box", "stats", "overlay_png", "heat_png"):
                self.assertIn(key, m)
            self.assertTrue(base64.b64decode(m["overlay_png"]).startswith(b"\x89PNG"))
        out = os.path.join(self.work.name, "cli")
        subprocess.run([LUMEN, "explain", *MODEL, "--image", PETS, "--class", "171", "195", "--method", "gradcam,guided-gradcam",
                        "--forward-mode", "plain", "--out", out, "--quiet"], check=True, stdout=subprocess.DEVNULL, env=ENV)
        for m in a["maps"]:
            cli = np.load(os.path.join(out, "pets.%s.features.18.%d.npy" % (m["method"], m["class"])))
            np.testing.assert_allclose(decoded_map(m), cli, atol=1e-5, err_msg=m["method"] + " " + m["target"])
        # Each class's map peaks on its own dog, and holds more evidence there than on the other dog.
        for m in a["maps"]:
            own, other = (GREYHOUND, BOSTON_BULL) if m["class"] == 171 else (BOSTON_BULL, GREYHOUND)
            self.assertTrue(inside(m["stats"]["peak"], own), (m["method"], m["class"], m["stats"]["peak"]))
            self.assertGreater(box_mean(decoded_map(m), own), box_mean(decoded_map(m), other), (m["method"], m["class"]))

    def test_several_images_and_data_ids(self):
        ids = [d["id"] for d in request(self.server.url + "/api/data")[2]["images"][:2]]
        s, _, a = explain(self.server, {"top_k": 2, "pictures": False}, [PETS], ids)
        self.assertEqual(s, 200, brief(a))
        self.assertEqual([i["source"] for i in a["images"]], ["pets.jpg", *ids])
        self.assertTrue(all(len(i["maps"]) == 2 and "overlay_png" not in i["maps"][0] for i in a["images"]))
        # One forward pass for the three.
        self.assertEqual({i["batched_with"] for i in a["images"]}, {3})

    def test_bad_requests(self):
        cases = [
            ({"methods": ["gradcam"], "classes": "x"}, 400, "classes"),
            ({"methods": ["no-such-method"]}, 400, "no-such-method"),
            ({"top_k": 0}, 400, "top_k"),
            ({"wings": 2}, 400, "wings"),
            ({"steps": float("nan")}, 400, "steps"),
            ({"layers": ["features.99"]}, 404, "features.99"),
            ({"model": "no-such-model"}, 404, "no-such-model"),
            ({"classes": [5000]}, 400, "5000"),
            ({"classes": [10 ** 40]}, 400, "classes"),  # beyond 64 bits: parsed as a float (a fuzzer's find)
        ]
        for params, status, says in cases:
            s, h, a = explain(self.server, params, [PETS])
            self.assertEqual(s, status, (params, a))
            self.assertIn(says, a["error"])
            self.assertTrue(h["Content-Type"].startswith("application/json"))
        for text in (b"{not json", b'{"top_k": 7' + b"0" * 400 + b"}"):  # the second: a number no type holds (a fuzzer's find)
            ctype, body = multipart([("params", None, text), ("image", "x.png", png_header(8, 8))])
            s, _, a = request(self.server.url + "/api/explain", "POST", body, {"Content-Type": ctype})
            self.assertEqual(s, 400, brief(a))
            self.assertIn("not JSON", a["error"])
        s, _, a = request(self.server.url + "/api/explain", "POST", b"{}", {"Content-Type": "application/json"})
        self.assertEqual(s, 415)
        s, _, a = explain(self.server, {})
        self.assertEqual(s, 400)
        self.assertIn("no image", a["error"])

    def test_hostile_images(self):
        def post(name, data):
            ctype, body = multipart([("params", None, b"{}"), ("image", name, data)])
            return request(self.server.url + "/api/explain", "POST", body, {"Content-Type": ctype})
        s, _, a = post("bomb.png", png_header(100000, 100000))
        self.assertEqual(s, 413, brief(a))
        self.assertIn("100000x100000", a["error"])
        with open(PETS, "rb") as f:
            jpeg = f.read()
        s, _, a = post("cut.jpg", jpeg[: len(jpeg) // 2])
        self.assertEqual(s, 400, brief(a))
        self.assertIn("truncated", a["error"])
        s, _, a = post("notes.txt", b"just some text, not an image" * 10)
        self.assertEqual(s, 415, brief(a))
        s, _, a = post("empty.png", b"")
        self.assertEqual(s, 400, brief(a))

    def test_no_path_reaches_the_file_system(self):
        for bad in ("../../../../etc/passwd", "/etc/passwd", "images/../labels.csv", "..%2F..%2Fetc%2Fpasswd"):
            s, _, a = request(self.server.url + "/api/data/image?id=" + urllib.request.quote(bad, safe=""))
            self.assertEqual(s, 404, bad)
            s, _, a = explain(self.server, {}, data_ids=[bad])
            self.assertEqual(s, 404, bad)
        for bad in ("/report/../../../etc/passwd", "/report/%2e%2e/%2e%2e/etc/passwd", "/report//etc/passwd", "/../../etc/passwd"):
            s, _, data = request(self.server.url + bad)
            self.assertIn(s, (400, 404), bad)
            self.assertNotIn(b"root:", data if isinstance(data, bytes) else json.dumps(data).encode())

    def test_progress_and_cancel(self):
        job = "cancel-" + uuid.uuid4().hex[:8]
        result = {}

        def run():
            result["answer"] = explain(self.server, {"methods": ["scorecam"], "layers": ["features.10"], "job": job}, [PETS])

        t = threading.Thread(target=run)
        t.start()
        seen = None
        for _ in range(200):
            s, _, seen = request(self.server.url + "/api/jobs/" + job)
            if s == 200 and seen["total"] > 0:
                break
            time.sleep(0.05)
        self.assertEqual(s, 200, seen)
        self.assertEqual(seen["state"], "running")
        self.assertEqual(seen["total"], 64)  # features.10's channels, one masked pass each
        s, _, c = request(self.server.url + "/api/jobs/" + job, "DELETE")
        self.assertEqual(s, 200)
        t.join(60)
        s, _, a = result["answer"]
        self.assertEqual(s, 409, brief(a))
        self.assertIn("cancelled", a["error"])
        self.assertEqual(request(self.server.url + "/api/jobs/" + job)[0], 404)


class Tasks(unittest.TestCase):
    """"task": "detection" and "segmentation" on the fixtures' small detector (a Faster R-CNN loaded with
    torchvision's operators) and segmenter: the boxes are the detector's own, and every map equals the
    CLI's --task map for the same image (the CLI's maps are checked against PyTorch references in
    test_detection and test_cli)."""

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(FIXTURES, "manifest_detection.json")) as f:
            cls.det = json.load(f)
        cls.work = tempfile.TemporaryDirectory()
        cls.detector = ["--model", os.path.join(FIXTURES, cls.det["model"]), "--card", os.path.join(FIXTURES, cls.det["card"]),
                        "--ops-library", cls.det["ops_library"]]
        cls.segmenter = ["--model", os.path.join(FIXTURES, "tiny_segmenter.pt"), "--card", os.path.join(FIXTURES, "small_card.json")]
        # The same detector exported to ONNX: one image per forward, no operator library.
        cls.onnx_detector = ["--model", os.path.join(FIXTURES, cls.det["onnx_model"]), "--card", os.path.join(FIXTURES, cls.det["card"])]
        cls.server = Server(*cls.detector, *cls.segmenter, *cls.onnx_detector)
        ids = [m["id"] for m in request(cls.server.url + "/api/models")[2]["models"]]
        cls.detector_id, cls.segmenter_id, cls.onnx_detector_id = ids[1], ids[2], ids[3]

    @classmethod
    def tearDownClass(cls):
        code, out, err = cls.server.stop()
        assert code == 0, (code, err)

    def cli(self, name, model, args):
        out = os.path.join(self.work.name, name)
        subprocess.run([LUMEN, "explain", *model, "--forward-mode", "plain", "--out", out, "--quiet", *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        return out

    def test_detection(self):
        cat = os.path.join(SHARED, "images", "cat.png")
        params = {"model": self.detector_id, "task": "detection", "score_threshold": 0, "max_boxes": 3, "layers": self.det["layer"],
                  "raw": True}
        s, _, a = explain(self.server, params, [PETS, cat])
        self.assertEqual(s, 200, brief(a))
        pets = a["images"][0]
        # One forward for both images, and each image's boxes are the detector's for it, best first.
        self.assertEqual([i["batched_with"] for i in a["images"]], [2, 2])
        self.assertEqual(len(pets["maps"]), 3)
        for m, want in zip(pets["maps"], self.det["boxes"]):
            [d] = m["detections"]
            np.testing.assert_allclose(d["box"], want["box"], atol=0.01)
            self.assertEqual(d["class"], want["class"])
            self.assertAlmostEqual(d["score"], want["score"], places=4)
            self.assertTrue(base64.b64decode(m["overlay_png"]).startswith(b"\x89PNG"))
        # Each image's maps are the CLI's for that image explained alone.
        for stem, image, path in (("pets", pets, PETS), ("cat", a["images"][1], cat)):
            out = self.cli("det-" + stem, self.detector, ["--image", path, "--layer", self.det["layer"], "--task", "detection",
                                                          "--score-threshold", "0", "--max-boxes", "3", "--allow-empty"])
            self.assertEqual(len(image["maps"]), 3)
            for m in image["maps"]:
                cli = np.load(os.path.join(out, "%s.gradcam.%s.%s.npy" % (stem, self.det["layer"], m["target"])))
                np.testing.assert_allclose(decoded_map(m), cli, atol=1e-5, err_msg=stem + " " + m["target"])
        # classes picks the labels explained; none of them found is an empty answer, not an error (this
        # detector finds only class 3 in the photo: the CLI's --class 1 finds no box either).
        s, _, a = explain(self.server, {**params, "classes": [1]}, [PETS])
        self.assertEqual(s, 200, brief(a))
        self.assertEqual(a["maps"], [])
        s, _, a = explain(self.server, {**params, "classes": [3]}, [PETS])
        self.assertEqual([m["detections"][0]["class"] for m in a["maps"]], [3, 3, 3])

    def test_segmentation(self):
        cat = os.path.join(SHARED, "images", "cat.png")
        s, _, a = explain(self.server, {"model": self.segmenter_id, "task": "segmentation", "classes": [2], "layers": "conv2", "raw": True},
                          [cat, PETS])
        self.assertEqual(s, 200, brief(a))
        self.assertEqual([i["batched_with"] for i in a["images"]], [2, 2])  # one forward for both
        out = self.cli("seg", self.segmenter, ["--image", cat, PETS, "--layer", "conv2", "--task", "segmentation", "--class", "2"])
        for image in a["images"]:
            [m] = image["maps"]
            self.assertEqual(m["target"], "seg-2")
            stem = os.path.splitext(image["source"])[0]
            np.testing.assert_allclose(decoded_map(m), np.load(os.path.join(out, stem + ".gradcam.conv2.seg-2.npy")), atol=1e-5)

    def test_region_and_box_in_each_images_pixels(self):
        """A segmentation "region" and a detection "box" are in each image's own pixels: images of two sizes
        get the CLI's --region / --box maps for each."""
        cat = os.path.join(SHARED, "images", "cat.png")
        region = [40, 30, 220, 200]
        s, _, a = explain(self.server, {"model": self.segmenter_id, "task": "segmentation", "classes": [1], "region": region,
                                        "layers": "conv2", "raw": True}, [cat, PETS])
        self.assertEqual(s, 200, brief(a))
        out = self.cli("seg-region", self.segmenter, ["--image", cat, PETS, "--layer", "conv2", "--task", "segmentation", "--class", "1",
                                                      "--region", ",".join(map(str, region))])
        for image in a["images"]:
            [m] = image["maps"]
            stem = os.path.splitext(image["source"])[0]
            np.testing.assert_allclose(decoded_map(m), np.load(os.path.join(out, stem + ".gradcam.conv2.seg-1.npy")), atol=1e-5, err_msg=stem)
        # A mask image (a part of its own), stretched over the output as the CLI's --mask: the same map.
        from PIL import Image
        mask = os.path.join(self.work.name, "mask.png")
        inside = np.zeros((40, 50), np.uint8)
        inside[8:30, 10:35] = 255
        Image.fromarray(inside).save(mask)
        s, _, a = explain(self.server, {"model": self.segmenter_id, "task": "segmentation", "classes": [1], "layers": "conv2", "raw": True},
                          [cat, PETS], mask=mask)
        self.assertEqual(s, 200, brief(a))
        self.assertEqual([i["batched_with"] for i in a["images"]], [2, 2])  # one mask for both: one forward
        out = self.cli("seg-mask", self.segmenter, ["--image", cat, PETS, "--layer", "conv2", "--task", "segmentation", "--class", "1",
                                                    "--mask", mask])
        for image in a["images"]:
            stem = os.path.splitext(image["source"])[0]
            np.testing.assert_allclose(decoded_map(image["maps"][0]), np.load(os.path.join(out, stem + ".gradcam.conv2.seg-1.npy")),
                                       atol=1e-5, err_msg=stem)
        for bad, says in (({"model": self.segmenter_id, "task": "segmentation", "classes": [1], "region": region}, "not both"),
                          ({"model": self.segmenter_id, "classes": [1]}, "belongs to")):
            s, _, a = explain(self.server, bad, [PETS], mask=mask)
            self.assertEqual(s, 400, (bad, a))
            self.assertIn(says, a["error"])
        # The second box the detector finds in the photo, given back as a box of its class.
        want = self.det["boxes"][1]
        box = [round(v, 1) for v in want["box"]]
        params = {"model": self.detector_id, "task": "detection", "classes": [want["class"]], "box": box, "layers": self.det["layer"], "raw": True}
        s, _, a = explain(self.server, params, [PETS])
        self.assertEqual(s, 200, brief(a))
        [m] = a["maps"]
        self.assertEqual(m["target"], "box")
        self.assertAlmostEqual(m["detections"][0]["score"], want["score"], places=4)
        out = self.cli("det-box", self.detector, ["--image", PETS, "--layer", self.det["layer"], "--task", "detection",
                                                  "--class", str(want["class"]), "--box", ",".join(map(str, box))])
        np.testing.assert_allclose(decoded_map(m), np.load(os.path.join(out, "pets.gradcam.%s.box.npy" % self.det["layer"])), atol=1e-5)
        for bad, says in (({**params, "box": [10, 10, 5, 5]}, "x0 < x1"), ({**params, "classes": [1, 3]}, "needs one class"),
                          ({**params, "box": [500, 400, 510, 420]}, "no detection of class 3 overlaps the box 500,400,510,420"),
                          ({"model": self.segmenter_id, "task": "segmentation", "classes": [1], "region": [900, 900, 950, 950]}, "lies outside")):
            s, _, a = explain(self.server, bad, [PETS])
            self.assertEqual(s, 400, (bad, a))
            self.assertIn(says, a["error"])

    def test_onnx_detector_one_image_per_forward(self):
        """torchvision's ONNX export of the detector takes one image: two images run one forward each, and
        give the TorchScript detector's boxes."""
        cat = os.path.join(SHARED, "images", "cat.png")
        s, _, a = explain(self.server, {"model": self.onnx_detector_id, "task": "detection", "score_threshold": 0, "max_boxes": 3,
                                        "layers": self.det["layer"]}, [PETS, cat])
        self.assertEqual(s, 200, brief(a))
        self.assertEqual([i["batched_with"] for i in a["images"]], [1, 1])
        for m, want in zip(a["images"][0]["maps"], self.det["boxes"]):
            np.testing.assert_allclose(m["detections"][0]["box"], want["box"], atol=0.01)
            self.assertAlmostEqual(m["detections"][0]["score"], want["score"], places=4)
        self.assertEqual(len(a["images"][1]["maps"]), 3)

    def test_bad_task_requests(self):
        cases = [
            ({"model": self.segmenter_id, "task": "segmentation"}, "needs \"classes\""),
            ({"model": self.segmenter_id, "task": "segmentation", "classes": [1], "counterfactual": True},
             "\"task\": \"segmentation\" explains the sum of a class's scores over its pixels; it takes no \"counterfactual\""),
            ({"model": self.detector_id, "task": "detection", "counterfactual": True}, "each box's score"),
            ({"model": self.detector_id, "score_threshold": 0.2}, "\"score_threshold\" belongs to \"task\": \"detection\""),
            ({"model": self.detector_id, "task": "detection", "score_threshold": 2}, "score_threshold"),
            ({"model": self.detector_id, "task": "tracking"}, "task"),
            ({"model": self.detector_id}, "not a tensor of class scores"),  # a detector's output is no class score
        ]
        for params, says in cases:
            s, _, a = explain(self.server, params, [PETS])
            self.assertEqual(s, 400, (params, a))
            self.assertIn(says, a["error"])


class Limits(unittest.TestCase):
    def test_body_images_queue_and_time(self):
        server = Server("--max-body", "1", "--max-images", "2", "--queue", "1", "--timeout", "1", "--max-batch", "1", "--workers", "1")
        try:
            ctype, body = multipart([("params", None, b"{}"), ("image", "big.png", os.urandom(2 << 20))])
            s, _, a = request(server.url + "/api/explain", "POST", body, {"Content-Type": ctype})
            self.assertEqual(s, 413, brief(a))
            self.assertIn("max-body", a["error"])
            s, _, a = explain(server, {}, [PETS, PETS, PETS])
            self.assertEqual(s, 413, brief(a))
            self.assertIn("max-images", a["error"])
            # One long job runs, one waits; the third is told to come back.
            answers = []
            long = {"methods": ["scorecam"], "layers": ["features.14"]}  # 160 masked passes: seconds
            threads = [threading.Thread(target=lambda: answers.append(explain(server, long, [PETS]))) for _ in range(3)]
            for t in threads:
                t.start()
                time.sleep(0.3)
            for t in threads:
                t.join(60)
            statuses = sorted(a[0] for a in answers)
            self.assertIn(503, statuses, [(a[0], brief(a[2])) for a in answers])
            busy = next(a for a in answers if a[0] == 503)
            self.assertEqual(busy[1]["Retry-After"], "1")
            # Score-CAM at features.14 takes longer than --timeout 1: cancelled, 504.
            self.assertIn(504, statuses, [(a[0], brief(a[2])) for a in answers])
            self.assertEqual(explain(server, {}, [PETS])[0], 200)
        finally:
            code, _, err = server.stop()
        self.assertEqual(code, 0, err)

    def test_token_when_not_local(self):
        refused = subprocess.run([LUMEN, "serve", *MODEL, "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, env=ENV, timeout=120)
        self.assertEqual(refused.returncode, 2)
        self.assertIn("--token", refused.stderr)
        server = Server("--host", "0.0.0.0", "--token", "generate")
        try:
            self.assertEqual(len(server.token), 32)
            url = "http://127.0.0.1:%d" % server.port
            self.assertEqual(request(url + "/api/models")[0], 401)
            self.assertEqual(request(url + "/api/models", headers={"Authorization": "Bearer " + "0" * 32})[0], 401)
            self.assertEqual(request(url + "/api/models", headers={"Authorization": "Bearer " + server.token})[0], 200)
            self.assertEqual(request(url + "/api/models?token=" + server.token)[0], 200)
            server.url = url
            s, _, a = explain(server, {}, [PETS])
            self.assertEqual(s, 401)
            s, _, a = explain(server, {}, [PETS], headers={"Authorization": "Bearer " + server.token})
            self.assertEqual(s, 200, brief(a))
            self.assertEqual(request(url + "/")[0], 200)  # the page itself holds no data
        finally:
            code, _, err = server.stop()
        self.assertEqual(code, 0, err)


class Robustness(unittest.TestCase):
    """Malformed and slow requests for a bounded time; the server answers well-formed ones afterwards."""

    def test_malformed_and_slow(self):
        server = Server()
        rng = random.Random(7)
        with open(PETS, "rb") as f:
            jpeg = f.read()
        ctype, good = multipart([("params", None, b'{"pictures": false}'), ("image", "pets.jpg", jpeg)])
        boundary = ctype.split("boundary=")[1]

        def raw(data, read=True):
            with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
                s.sendall(data)
                if read:
                    try:
                        return s.recv(65536)
                    except (socket.timeout, ConnectionResetError):
                        return b""

        def post(body, content_type=ctype, extra=b""):
            head = b"POST /api/explain HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type.encode() + b"\r\nContent-Length: %d\r\n" % len(body)
            return raw(head + extra + b"\r\n" + body)

        # Slow clients: half a request line, and headers that never end; they hold no answer back.
        slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        for i, s in enumerate(slow):
            s.sendall(b"POST /api/explain HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GE")
        try:
            deadline = time.time() + 12
            n = 0
            while time.time() < deadline:
                kind = n % 7
                if kind == 0:
                    reply = post(good[: rng.randrange(len(good))])  # truncated multipart (Content-Length says more)
                elif kind == 1:
                    reply = post(good.replace(b"--" + boundary.encode() + b"--", b""))  # no closing boundary
                elif kind == 2:
                    reply = post(good.replace(b'{"pictures": false}', bytes(rng.randrange(256) for _ in range(19))))  # params noise
                elif kind == 3:
                    reply = raw(b"GET /api/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")  # huge header
                elif kind == 4:
                    reply = raw(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000))))  # noise
                elif kind == 5:
                    reply = post(good, "multipart/form-data; boundary=" + "b" * 5000)  # wrong, long boundary
                else:
                    body = bytearray(good)
                    for _ in range(20):
                        body[rng.randrange(len(body))] = rng.randrange(256)
                    reply = post(bytes(body))  # flipped bytes
                self.assertIsNone(server.proc.poll(), "the server died on request kind %d" % kind)
                if reply:
                    self.assertTrue(reply.startswith(b"HTTP/1.1 "), reply[:80])
                n += 1
            self.assertGreater(n, 30)
            s, _, a = request(server.url + "/api/explain", "POST", good, {"Content-Type": ctype})
            self.assertEqual(s, 200, brief(a))
            self.assertEqual(a["predictions"][0]["class"], 171)
        finally:
            for s in slow:
                s.close()
            code, _, err = server.stop()
        self.assertEqual(code, 0, err)


class Browser(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from chromium import headless_chromium  # tests/chromium.py

        cls.work, cls.server = served_with_report()
        cls.browser = headless_chromium(1400, 1000)
        os.makedirs(ARTIFACTS, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()
        cls.server.stop()

    def wait(self, script, timeout=90):
        end = time.time() + timeout
        while time.time() < end:
            value = self.browser.execute_script(script)
            if value:
                return value
            time.sleep(0.1)
        self.fail("timed out waiting for: " + script + "; page says: " + self.browser.execute_script("return document.getElementById('error').textContent"))

    def open(self):
        self.browser.get(self.server.url + "/")
        self.wait("return document.querySelectorAll('#layer option').length > 0 && document.querySelectorAll('#methods input').length > 0")

    def choose_methods(self, names):
        self.browser.execute_script("for (const i of document.querySelectorAll('#methods input')) i.checked = arguments[0].includes(i.value);", names)

    def wait_for_grid(self, count):
        self.wait("return state.answer && !state.job && document.querySelectorAll('#grid figure').length == %d && "
                  "[...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)" % count)

    def test_two_dogs(self):
        from selenium.webdriver.common.by import By

        self.open()
        self.choose_methods(["gradcam", "guided-gradcam"])
        search = self.browser.find_element(By.ID, "class-search")
        for cls in ("171", "195"):
            search.send_keys(cls)
            self.browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", search)
        self.assertEqual(self.browser.execute_script("return state.classes"), [171, 195])
        self.browser.find_element(By.ID, "file").send_keys(PETS)
        self.wait_for_grid(4)
        self.browser.save_screenshot(os.path.join(ARTIFACTS, "two_dogs.png"))
        maps = self.browser.execute_script("return state.answer.maps.map(m => ({method: m.method, cls: m.class, peak: m.stats.peak, map: m.map.float32_base64}))")
        self.assertEqual(sorted((m["method"], m["cls"]) for m in maps), [("gradcam", 171), ("gradcam", 195), ("guided-gradcam", 171), ("guided-gradcam", 195)])
        for m in maps:
            self.assertTrue(inside(m["peak"], GREYHOUND if m["cls"] == 171 else BOSTON_BULL), m["peak"])
        by = {(m["method"], m["cls"]): np.frombuffer(base64.b64decode(m["map"]), "<f4").reshape(430, 512) for m in maps}
        for method in ("gradcam", "guided-gradcam"):
            # The two classes' maps differ, each with more evidence on its own dog.
            self.assertGreater(np.abs(by[(method, 171)] - by[(method, 195)]).max(), 0.3)
            self.assertGreater(box_mean(by[(method, 171)], GREYHOUND), box_mean(by[(method, 171)], BOSTON_BULL))
            self.assertGreater(box_mean(by[(method, 195)], BOSTON_BULL), box_mean(by[(method, 195)], GREYHOUND))
        # The grid: two rows of targets, two columns of methods, each cell with the paper's box drawn.
        self.assertEqual(len(self.browser.find_elements(By.CSS_SELECTOR, "#grid tr")), 3)
        self.assertEqual(len(self.browser.find_elements(By.CSS_SELECTOR, "#grid svg rect.paper")), 4)
        # Hover shows the map's value; the slider changes the heat map's opacity.
        stack = self.browser.find_element(By.CSS_SELECTOR, "#grid .stack")
        from selenium.webdriver.common.action_chains import ActionChains
        ActionChains(self.browser).move_to_element(stack).perform()
        self.assertRegex(self.browser.find_element(By.ID, "tip").text, r"^\(\d+, \d+\): \d\.\d{3}$")
        self.browser.execute_script("const o = document.getElementById('opacity'); o.value = 0.9; o.dispatchEvent(new Event('input'));")
        self.assertEqual(self.browser.execute_script("return document.querySelector('img.heat').style.opacity"), "0.9")
        stack.click()
        self.wait("return !document.getElementById('large').hidden")
        self.browser.save_screenshot(os.path.join(ARTIFACTS, "large_view.png"))
        self.browser.execute_script("document.getElementById('large').hidden = true")

        # Layer change: the maps follow.
        layer = self.browser.find_element(By.ID, "layer")
        self.browser.execute_script("arguments[0].value = 'features.14'; arguments[0].dispatchEvent(new Event('change'))", layer)
        self.wait("return state.answer && state.answer.maps.every(m => m.layer == 'features.14') && !state.job")
        self.wait_for_grid(4)
        self.browser.save_screenshot(os.path.join(ARTIFACTS, "layer_14.png"))

    def test_detection_task(self):
        """The page's task selector on a detector (the fixtures' Faster R-CNN exported to ONNX): every box found
        gets a row with its label and score, drawn on its map; a box typed in explains that box."""
        from selenium.webdriver.common.by import By

        with open(os.path.join(FIXTURES, "manifest_detection.json")) as f:
            det = json.load(f)
        server = Server("--model", os.path.join(FIXTURES, det["onnx_model"]), "--card", os.path.join(FIXTURES, det["card"]))
        try:
            self.browser.get(server.url + "/")
            self.wait("return document.querySelectorAll('#model option').length == 2 && document.querySelectorAll('#methods input').length > 0")
            self.browser.execute_script("const m = document.getElementById('model'); m.value = m.options[1].value; m.dispatchEvent(new Event('change'))")
            # The card's layer, by its module path, is chosen as the export's node lumen lists it under.
            layers = request(server.url + "/api/models/%s/layers" % self.browser.execute_script("return state.model.id"))[2]
            self.assertIn("conv3", layers["default_layer"])
            self.wait("return document.getElementById('layer').value == '%s'" % layers["default_layer"])
            task = self.browser.find_element(By.ID, "task")
            self.browser.execute_script("arguments[0].value = 'detection'; arguments[0].dispatchEvent(new Event('change'))", task)
            self.assertTrue(self.browser.find_element(By.ID, "score-threshold").is_displayed())
            self.assertFalse(self.browser.find_element(By.ID, "topk").is_displayed())  # classification's own setting is hidden
            self.browser.execute_script("document.getElementById('score-threshold').value = 0; document.getElementById('max-boxes').value = 3")
            self.choose_methods(["gradcam"])
            self.browser.find_element(By.ID, "file").send_keys(PETS)
            self.wait_for_grid(3)
            self.browser.save_screenshot(os.path.join(ARTIFACTS, "detection.png"))
            rows = [th.text for th in self.browser.find_elements(By.CSS_SELECTOR, "#grid th.row")]
            self.assertEqual(len(rows), 3)
            for row, want in zip(rows, det["boxes"]):
                self.assertIn("triangle %.2f" % want["score"], row)
            self.assertEqual(len(self.browser.find_elements(By.CSS_SELECTOR, "#grid svg rect.detection")), 3)
            self.assertIn("triangle", self.browser.find_element(By.CSS_SELECTOR, "#grid svg text.detection").get_attribute("textContent"))
            # A box typed in, with its class: one row, "box".
            want = det["boxes"][1]
            search = self.browser.find_element(By.ID, "class-search")
            search.send_keys(str(want["class"]))
            self.browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", search)
            self.browser.execute_script("document.getElementById('area').value = arguments[0]", ",".join("%.1f" % v for v in want["box"]))
            self.browser.find_element(By.ID, "explain").click()
            self.wait("return state.answer && !state.job && state.answer.maps.length == 1 && state.answer.maps[0].target == 'box'")
            self.wait_for_grid(1)
            self.assertIn("box: triangle %.2f" % want["score"], self.browser.find_element(By.CSS_SELECTOR, "#grid th.row").text)
            self.browser.save_screenshot(os.path.join(ARTIFACTS, "detection_box.png"))
        finally:
            server.stop()

    def test_segmentation_mask_and_region(self):
        """A segmentation class over a mask picked on the page: the request carries it as its part "mask" (the
        same map as the CLI's --mask), each map shows the mask's outline, and the rectangle field is off while a
        mask is chosen; a typed rectangle is drawn as a dashed box."""
        from selenium.webdriver.common.by import By
        from PIL import Image

        server = Server("--model", os.path.join(FIXTURES, "tiny_segmenter.pt"), "--card", os.path.join(FIXTURES, "small_card.json"))
        mask = os.path.join(ARTIFACTS, "page_mask.png")
        inside = np.zeros((40, 50), np.uint8)
        inside[8:30, 10:35] = 255
        Image.fromarray(inside).save(mask)
        try:
            self.browser.get(server.url + "/")
            self.wait("return document.querySelectorAll('#model option').length == 2 && document.querySelectorAll('#methods input').length > 0")
            self.browser.execute_script("const m = document.getElementById('model'); m.value = m.options[1].value; m.dispatchEvent(new Event('change'))")
            self.wait("return [...document.querySelectorAll('#layer option')].some(o => o.value == 'conv2')")
            self.browser.execute_script("document.getElementById('layer').value = 'conv2'")
            self.browser.execute_script("const t = document.getElementById('task'); t.value = 'segmentation'; t.dispatchEvent(new Event('change'))")
            self.assertTrue(self.browser.find_element(By.ID, "task-mask").is_displayed())
            self.choose_methods(["gradcam"])
            search = self.browser.find_element(By.ID, "class-search")
            search.send_keys("1")
            self.browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", search)
            self.browser.find_element(By.ID, "mask").send_keys(mask)
            self.wait("return state.mask && document.getElementById('area').disabled")
            self.assertIn("page_mask.png (50×40, 28 % inside)", self.browser.find_element(By.ID, "mask-name").text)
            self.browser.find_element(By.ID, "file").send_keys(PETS)
            self.wait_for_grid(1)
            self.assertTrue(self.browser.execute_script("return [...document.querySelectorAll('#grid img.region')].every(i => i.complete && i.naturalWidth == 50)"))
            self.assertEqual(len(self.browser.find_elements(By.CSS_SELECTOR, "#grid img.region")), 1)
            self.assertTrue(self.browser.find_element(By.ID, "legend-region").is_displayed())
            self.browser.execute_script("window.scrollTo(0, 0)")
            self.browser.save_screenshot(os.path.join(ARTIFACTS, "segmentation_mask.png"))
            m = self.browser.execute_script("return {target: state.answer.maps[0].target, map: state.answer.maps[0].map.float32_base64}")
            self.assertEqual(m["target"], "seg-1")
            out = tempfile.mkdtemp(dir=self.work.name)
            subprocess.run([LUMEN, "explain", "--model", os.path.join(FIXTURES, "tiny_segmenter.pt"), "--card", os.path.join(FIXTURES, "small_card.json"),
                            "--forward-mode", "plain", "--quiet", "--image", PETS, "--layer", "conv2", "--task", "segmentation", "--class", "1",
                            "--mask", mask, "--out", out], check=True, stdout=subprocess.DEVNULL, env=ENV)
            want = np.load(os.path.join(out, "pets.gradcam.conv2.seg-1.npy"))
            np.testing.assert_allclose(np.frombuffer(base64.b64decode(m["map"]), "<f4").reshape(want.shape), want, atol=1e-5)
            # Cleared: a rectangle instead, drawn dashed on the map.
            self.browser.find_element(By.ID, "mask-clear").click()
            self.assertFalse(self.browser.execute_script("return document.getElementById('area').disabled"))
            self.browser.execute_script("document.getElementById('area').value = '100,150,300,400'")
            self.browser.execute_script("state.answer = null")
            self.browser.find_element(By.ID, "explain").click()
            self.wait_for_grid(1)
            self.assertEqual(len(self.browser.find_elements(By.CSS_SELECTOR, "#grid img.region")), 0)
            rect = self.browser.find_element(By.CSS_SELECTOR, "#grid svg rect.region")
            self.assertEqual([rect.get_attribute(k) for k in ("x", "y", "width", "height")], ["100", "150", "200", "250"])
            self.browser.execute_script("window.scrollTo(0, 0)")
            self.browser.save_screenshot(os.path.join(ARTIFACTS, "segmentation_region.png"))
        finally:
            server.stop()

    def test_dataset_image_and_report(self):
        from selenium.webdriver.common.by import By

        self.open()
        self.wait("return state.data.length == 300 && document.querySelectorAll('#report-examples img').length > 0")
        self.browser.find_element(By.CSS_SELECTOR, "#data-panel summary").click()
        self.browser.find_element(By.CSS_SELECTOR, "#data-list li").click()
        self.wait_for_grid(1)
        self.assertGreaterEqual(len(self.browser.find_elements(By.CSS_SELECTOR, "#grid svg rect.truth")), 1)
        self.browser.save_screenshot(os.path.join(ARTIFACTS, "dataset_image.png"))
        # The report: its table, and an example that explains its image live.
        self.assertIn("gradcam", self.browser.find_element(By.ID, "report-table").text)
        example = self.browser.find_element(By.CSS_SELECTOR, "#report-examples img")
        self.assertTrue(self.browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", example))
        self.browser.execute_script("state.answer = null")
        example.click()
        self.wait_for_grid(1)
        self.browser.save_screenshot(os.path.join(ARTIFACTS, "report_example.png"))
        # The full report page, served as it is.
        self.browser.get(self.server.url + "/report/index.html")
        self.assertIn("lumen eval", self.browser.title)
        self.assertTrue(self.browser.execute_script("return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
        self.browser.save_screenshot(os.path.join(ARTIFACTS, "report.png"))

    def test_cancel_a_long_method(self):
        from selenium.webdriver.common.by import By

        self.open()
        self.choose_methods(["scorecam"])
        self.browser.execute_script("const l = document.getElementById('layer'); l.value = 'features.10';")
        self.browser.find_element(By.ID, "file").send_keys(PETS)
        self.wait("return document.getElementById('progress').value > 0")
        self.browser.save_screenshot(os.path.join(ARTIFACTS, "progress.png"))
        self.browser.find_element(By.ID, "cancel").click()
        self.wait("return !state.job && document.getElementById('error').textContent.includes('cancelled')")


class Documented(unittest.TestCase):
    def test_every_route_is_in_the_openapi_description(self):
        import yaml

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        paths = yaml.safe_load(open(os.path.join(root, "docs", "serve-openapi.yaml")))["paths"]
        source = open(os.path.join(root, "src", "serve", "server.cpp")).read()
        routes = []
        for line in source.splitlines():
            m = re.search(r'http\.(Get|Post|Delete)\((?:R"\((.*?)\)"|"([^"]*)")', line)
            if m:
                routes.append((m.group(1), m.group(2) or m.group(3)))
        as_openapi = {"/api/models/([^/]+)/layers": "/api/models/{id}/layers", "/api/models/([^/]+)/labels": "/api/models/{id}/labels",
                      "/report/(.+)": "/report/{file}", "/api/jobs/([A-Za-z0-9_-]{1,64})": "/api/jobs/{id}"}
        found = set()
        for verb, route in routes:
            path = as_openapi.get(route, route)
            found.add(path)
            self.assertIn(path, paths, route)
            self.assertIn(verb.lower(), paths[path], route)
        self.assertEqual(found, set(paths))


class Signals(unittest.TestCase):
    def test_sigint_finishes_running_work(self):
        server = Server()
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("a", explain(server, {"methods": ["scorecam"], "layers": ["features.14"]}, [PETS])))
        t.start()
        time.sleep(1.0)
        server.proc.send_signal(signal.SIGINT)
        t.join(120)
        code, out, err = server.stop()
        self.assertEqual(code, 0, err)
        self.assertIn("stopped", out)
        self.assertEqual(result["a"][0], 200, result["a"][2])


if __name__ == "__main__":
    unittest.main(verbosity=2)
