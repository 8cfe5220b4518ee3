"""The pages people open, in a real browser: an explain index, an eval report and an audit page made
from the shared data, loaded from file:// in headless Chromium (Debian's chromium + chromium-driver,
driven by python3-selenium). Asserts what a person would see: tables with the right rows, every
picture loaded, one SVG curve per method, nothing wider than a 1280-pixel window. The screenshots are
kept in BUILD_DIR/test-artifacts/pages/ to look at.

    /usr/bin/python3 tests/pages/test_pages.py BUILD_DIR SHARED_DIR
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from chromium import headless_chromium  # noqa: E402  (tests/chromium.py)

BUILD, SHARED = (os.path.abspath(p) for p in sys.argv[1:3])
LUMEN = os.path.join(BUILD, "lumen")
MODEL = ["--model", os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt"), "--card", os.path.join(SHARED, "models", "mobilenet_v2_imagenet.json")]
DATA = os.path.join(SHARED, "data", "imagenet-loc-dev")
ARTIFACTS = os.path.join(BUILD, "test-artifacts", "pages")
WIDTH = 1280


def read_json(path):
    with open(path) as f:
        return json.load(f)


def lumen(*args):
    subprocess.run([LUMEN, *args, "--quiet"], check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))


class Pages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.TemporaryDirectory()
        w = cls.work.name
        cls.explain = os.path.join(w, "explain")
        lumen("explain", *MODEL, "--image", os.path.join(SHARED, "images", "pets.jpg"), os.path.join(SHARED, "images", "owl.jpg"),
              "--top-k", "2", "--method", "gradcam,input-x-gradient,occlusion", "--stride", "32", "--out", cls.explain)
        cls.eval = os.path.join(w, "eval")
        lumen("eval", *MODEL, "--data", DATA, "--limit", "10", "--steps", "10", "--methods", "gradcam,saliency",
              "--metrics", "loc,pointing,deletion,insertion", "--out", cls.eval)
        cls.audit = os.path.join(w, "audit")
        lumen("audit", *MODEL, "--data", DATA, "--limit", "10", "--out", cls.audit)
        cls.browser = headless_chromium(WIDTH, 900)
        os.makedirs(ARTIFACTS, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()
        cls.work.cleanup()

    def open(self, folder, name):
        b = self.browser
        b.set_window_size(WIDTH, 900)
        b.get("file://" + os.path.join(folder, "index.html"))
        # Every picture loaded (a broken file name shows as a zero-width image).
        broken = b.execute_script("return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        self.assertEqual(broken, [], "pictures that did not load")
        self.assertGreater(b.execute_script("return document.images.length"), 0)
        # Nothing runs off the side of a 1280-pixel window.
        overflow = b.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        self.assertLessEqual(overflow, 0, "the page is wider than the window")
        height = b.execute_script("return document.documentElement.scrollHeight")
        b.set_window_size(WIDTH, min(height + 100, 16000))
        b.save_screenshot(os.path.join(ARTIFACTS, name + ".png"))
        return b

    def rows(self, table_index=0):
        return self.browser.execute_script(
            "const t = document.querySelectorAll('table')[%d];"
            "return Array.from(t.querySelectorAll('tbody tr')).map(r => Array.from(r.cells).map(c => c.innerText));" % table_index)

    def test_explain_index(self):
        run = read_json(os.path.join(self.explain, "run.json"))
        b = self.open(self.explain, "explain")
        header = b.execute_script("return Array.from(document.querySelectorAll('thead th')).map(h => h.innerText)")
        self.assertEqual(header, ["image and target", "gradcam at features.18", "input-x-gradient at input", "occlusion at input"])
        rows = self.rows()
        self.assertEqual(len(rows), 2 * 2, "one row per image and target")
        self.assertIn("Italian greyhound", rows[0][0])
        self.assertIn("predictions", rows[0][0])
        # Each overlay links to its full picture, and every map of run.json is on the page.
        links = b.execute_script("return Array.from(document.querySelectorAll('td a')).map(a => a.getAttribute('href'))")
        files = [m["files"]["overlay"] for i in run["images"] for m in i["maps"]]
        self.assertEqual(sorted(links), sorted(files))

    def test_eval_report(self):
        results = read_json(os.path.join(self.eval, "results.json"))
        b = self.open(self.eval, "eval")
        table = self.rows(0)
        self.assertEqual([r[0] for r in table], ["gradcam", "saliency"])
        # Two plots (deletion, insertion), each with one curve and one band per method.
        plots = b.execute_script("return Array.from(document.querySelectorAll('div.plot svg')).map(s => "
                                 "[s.querySelectorAll('polyline.series').length, s.querySelectorAll('polygon.band').length])")
        self.assertEqual(plots, [[2, 2], [2, 2]])
        legend = b.execute_script("return document.querySelector('div.plot svg').textContent")
        self.assertIn("gradcam (AUC %.3f)" % results["summary"]["gradcam"]["deletion_auc"], legend)
        captions = b.execute_script("return document.body.innerText")
        self.assertRegex(captions, r"IoU \d\.\d{3} \((hit|miss)")
        self.assertRegex(captions, r"(right class|wrong class: predicted)")

    def test_audit_page(self):
        audit = read_json(os.path.join(self.audit, "audit.json"))
        self.open(self.audit, "audit")
        table = self.rows(0)
        self.assertEqual(len(table), len(audit["per_class"]), "one row per class")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
