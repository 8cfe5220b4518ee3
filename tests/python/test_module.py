"""The Python module (import lumen) against independent PyTorch computations of the same formulas.

pytorch-grad-cam and Captum cannot be installed here (no PyPI), so their GradCAM, LayerCAM and Saliency
are written out below as those libraries compute them (gradients from a hook on the layer, the score of
the target class, their reductions) on the same TorchScript model and the same input pixels.

Run by ctest (test_python) with PYTHONPATH=<build>/python and /usr/bin/python3:
    LUMEN_SHARED_DIR=../shared PYTHONPATH=build/python /usr/bin/python3 -m unittest tests/python/test_module.py
"""

import os
import tempfile
import threading
import unittest

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import lumen

SHARED = os.environ.get("LUMEN_SHARED_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
MODEL = os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt")
ONNX = os.path.join(SHARED, "models", "mobilenet_v2_imagenet.onnx")
CARD = os.path.join(SHARED, "models", "mobilenet_v2_imagenet.json")
IMAGES = [os.path.join(SHARED, "images", n) for n in ("pets.jpg", "owl.jpg", "hot_dog.jpg", "parrot.jpg")]
LAYER = "features.18"


def pearson(a, b):
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def model_input(path, size=224):
    """The card's preprocessing in PyTorch: RGB, antialiased bilinear stretch to size x size, (p - 127.5) / 127.5."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - 127.5) / 127.5


class Reference:
    """The shared MobileNetV2 split at features.18 (forward = classifier(pool(features(x))), as its card says)."""

    def __init__(self):
        self.net = torch.jit.load(MODEL).eval()

    def layer_and_grad(self, x, cls=None):
        a = self.net.features(x).detach().requires_grad_(True)
        logits = self.net.classifier(self.net.pool(a))
        cls = int(logits[0].argmax()) if cls is None else cls
        (g,) = torch.autograd.grad(logits[0, cls], a)
        return a.detach(), g, cls

    def gradcam(self, x, cls=None):
        # pytorch-grad-cam GradCAM.get_cam_weights: the gradient's mean over the map; cam = relu(sum_k w_k A_k)
        a, g, cls = self.layer_and_grad(x, cls)
        w = g.mean(dim=(2, 3), keepdim=True)
        return F.relu((w * a).sum(1))[0].numpy(), cls

    def layercam(self, x, cls=None):
        # pytorch-grad-cam LayerCAM: relu(grad) * A, summed over channels, then relu
        a, g, cls = self.layer_and_grad(x, cls)
        return F.relu((F.relu(g) * a).sum(1))[0].numpy(), cls

    def saliency(self, x, cls):
        # Captum Saliency(model).attribute(x, target=cls) with abs=True: |d logit / d x| per channel
        x = x.clone().requires_grad_(True)
        logits = self.net(x)
        (g,) = torch.autograd.grad(logits[0, cls], x)
        return g.abs()[0].permute(1, 2, 0).numpy()


class ModuleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = lumen.Model.load(MODEL)
        cls.card = lumen.load_card(CARD)
        cls.explainer = lumen.Explainer(cls.model, cls.card)
        cls.ref = Reference()

    def test_version_and_catalog(self):
        self.assertRegex(lumen.__version__, r"^\d+\.\d+\.\d+$")
        names = lumen.method_names()
        for m in ("gradcam", "layercam", "saliency", "integrated-gradients", "scorecam", "attention-rollout"):
            self.assertIn(m, names)
        steps = [s for s in lumen.settings() if s["name"] == "steps"]
        self.assertEqual(len(steps), 1)
        self.assertIn("integrated-gradients", steps[0]["methods"])

    def test_gradcam_layercam_saliency_match_the_anchors_formulas(self):
        for path in IMAGES:
            x = model_input(path)
            [res] = self.explainer.explain_tensor(x, methods=["gradcam", "layercam", "saliency"], layers=[LAYER])
            want, cls = self.ref.gradcam(x)
            self.assertEqual(res.predictions[0].cls, cls, path)
            got = res.get("gradcam", layer=LAYER)
            self.assertEqual(got.raw.shape, (7, 7))
            self.assertGreaterEqual(pearson(got.raw, want), 0.999, path)
            np.testing.assert_allclose(got.raw, want, rtol=1e-3, atol=1e-4 * float(want.max()))
            # The picture a user sees: upsampled to the input and min-max normalised.
            up = F.interpolate(torch.from_numpy(want)[None, None], size=(224, 224), mode="bilinear", align_corners=False)[0, 0].numpy()
            self.assertGreaterEqual(pearson(got.map, up), 0.999, path)
            want_lc, _ = self.ref.layercam(x)
            self.assertGreaterEqual(pearson(res["layercam"].raw, want_lc), 0.999, path)
            sal = res["saliency"]
            self.assertEqual(sal.attribution.shape, (224, 224, 3))
            self.assertGreaterEqual(pearson(np.abs(sal.attribution), self.ref.saliency(x, cls)), 0.999, path)

    def test_explicit_class_and_torch_tensor_input(self):
        x = model_input(IMAGES[0])
        [res] = self.explainer.explain_tensor(x, classes=[281], layers=[LAYER])  # a torch tensor, as pytorch-grad-cam takes it
        want, _ = self.ref.gradcam(x, cls=281)
        m = res["gradcam"]
        self.assertEqual(m.cls, 281)
        self.assertEqual(m.label, self.card.labels[281])
        self.assertGreaterEqual(pearson(m.raw, want), 0.999)
        t = m.tensor("raw")
        self.assertIsInstance(t, torch.Tensor)
        self.assertEqual(tuple(t.shape), (7, 7))
        self.assertEqual(float(t.max()), float(m.raw.max()))

    def test_boxes_off_leaves_the_maps_and_drops_the_box(self):
        [boxed] = self.explainer.explain(IMAGES[0], layers=[LAYER])
        [bare] = self.explainer.explain(IMAGES[0], layers=[LAYER], boxes=False)
        self.assertIsNotNone(boxed.maps[0].box)
        self.assertIsNone(bare.maps[0].box)
        np.testing.assert_array_equal(boxed.maps[0].map, bare.maps[0].map)
        [bare_tensor] = self.explainer.explain_tensor(model_input(IMAGES[0]), layers=[LAYER], boxes=False)
        self.assertIsNone(bare_tensor.maps[0].box)

    def test_array_and_file_give_the_same_maps(self):
        rgb = (np.random.default_rng(3).random((96, 128, 3)) * 255).astype(np.uint8)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "noise.png")
            Image.fromarray(rgb).save(path)
            [from_file] = self.explainer.explain(path)
            [from_array] = self.explainer.explain(rgb)
            [from_float] = self.explainer.explain(rgb.astype(np.float32))
        self.assertEqual((from_array.width, from_array.height), (128, 96))
        np.testing.assert_array_equal(from_file.maps[0].raw, from_array.maps[0].raw)
        np.testing.assert_array_equal(from_file.maps[0].raw, from_float.maps[0].raw)
        self.assertEqual(from_file.maps[0].map.shape, (96, 128))

    def test_script_module_in_memory(self):
        x = model_input(IMAGES[1])
        in_memory = lumen.Explainer(lumen.Model.load(torch.jit.load(MODEL)), self.card)
        [a] = in_memory.explain_tensor(x, methods=["gradcam", "saliency"])
        [b] = self.explainer.explain_tensor(x, methods=["gradcam", "saliency"])
        np.testing.assert_allclose(a["gradcam"].raw, b["gradcam"].raw, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a["saliency"].attribution, b["saliency"].attribution, rtol=1e-4, atol=1e-7)
        # A traced module too, and an eager one is refused with what to do.
        traced = torch.jit.trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                                     torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval(), torch.zeros(1, 3, 32, 32))
        small = lumen.Explainer(traced, preprocess=lumen.Preprocess(width=32, height=32))
        [r] = small.explain(np.zeros((40, 40, 3), np.uint8) + 100, layers=["1"])
        self.assertEqual(r["gradcam"].raw.shape, (30, 30))
        with self.assertRaisesRegex(lumen.Error, "torch.jit.script"):
            lumen.Model.load(torch.nn.Linear(2, 2))

    def test_volumes_of_a_3d_network(self):
        """A traced 3-D CNN on a [N, C, D, H, W] batch: Grad-CAM over all d*h*w positions, trilinear to the input."""
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv3d(1, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool3d(2),
                                  torch.nn.Conv3d(6, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d(1),
                                  torch.nn.Flatten(), torch.nn.Linear(8, 3)).eval()
        x = torch.rand(2, 1, 8, 12, 16)
        explainer = lumen.Explainer(torch.jit.trace(net, x), preprocess=lumen.Preprocess())
        got = explainer.explain_tensor(x, methods=["gradcam"], layers=["4"], classes=[1])
        store = {}
        net[4].register_forward_hook(lambda m, i, o: store.update(a=o))
        y = net(x)[:, 1].sum()
        g, = torch.autograd.grad(y, store["a"])
        raw = torch.relu((g.mean((2, 3, 4), keepdim=True) * store["a"]).sum(1)).detach()
        up = F.interpolate(raw[:, None], size=(8, 12, 16), mode="trilinear", align_corners=False)[:, 0]
        for i, r in enumerate(got):
            self.assertEqual(r.depth, 8)
            m = r["gradcam"]
            self.assertEqual(m.raw.shape, (4, 6, 8))
            self.assertEqual(m.map.shape, (8, 12, 16))
            np.testing.assert_allclose(m.raw, raw[i].numpy(), rtol=1e-4, atol=1e-6)
            norm = (up[i] - up[i].min()) / (up[i].max() - up[i].min())
            np.testing.assert_allclose(m.map, norm.numpy(), atol=1e-5)
            self.assertEqual(len(m.box), 6)
            self.assertEqual(len(m.stats["peak"]), 3)
        with self.assertRaisesRegex(lumen.Error, "does not take a 3-D network"):
            explainer.explain_tensor(x, methods=["saliency"])
        # A layer of a 3-D network that is no volume (the depth folded into channels) has nowhere to put its map.
        folded = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.Flatten(1, 2), torch.nn.Conv2d(16, 4, 3),
                                     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
        with self.assertRaisesRegex(lumen.Error, "pick a layer whose output is a \\[N,C,d,h,w\\] volume"):
            lumen.Explainer(torch.jit.trace(folded, x), preprocess=lumen.Preprocess()).explain_tensor(x, layers=["2"])

    def test_similarity_to_reference_images_or_an_embedding(self):
        """similar_to: Grad-CAM of the cosine similarity of the embedding to the references' mean, in PyTorch."""
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten(), torch.nn.Linear(6, 5)).eval()
        pre = lumen.Preprocess(width=32, height=32, mean=[127.5] * 3, std=[127.5] * 3)
        explainer = lumen.Explainer(torch.jit.trace(net, torch.zeros(1, 3, 32, 32)), preprocess=pre)
        refs = np.random.RandomState(1).randint(0, 255, (2, 40, 40, 3)).astype(np.uint8)
        image = np.random.RandomState(2).randint(0, 255, (40, 40, 3)).astype(np.uint8)
        emb = explainer.embed(list(refs))
        self.assertEqual(emb.shape, (2, 5))
        x = (F.interpolate(torch.from_numpy(image).float().permute(2, 0, 1)[None], size=(32, 32), mode="bilinear",
                           antialias=True, align_corners=False) - 127.5) / 127.5
        store = {}
        net[1].register_forward_hook(lambda m, i, o: store.update(a=o))
        for dissimilar in (False, True):
            y = F.cosine_similarity(net(x), torch.from_numpy(emb.mean(0))[None], dim=1, eps=1e-8).sum()
            g, = torch.autograd.grad(-y if dissimilar else y, store["a"])
            ref = torch.relu((g.mean((2, 3), keepdim=True) * store["a"]).sum(1))[0].detach().numpy()
            [by_images] = explainer.explain(image, layers=["1"], similar_to=list(refs), dissimilar=dissimilar)
            [by_vector] = explainer.explain(image, layers=["1"], similar_to=emb.mean(0), dissimilar=dissimilar)
            for r in (by_images, by_vector):
                self.assertEqual(r["gradcam"].target, "dissimilarity" if dissimilar else "similarity")
                np.testing.assert_allclose(r["gradcam"].raw, ref, rtol=1e-4, atol=1e-6)
        with self.assertRaisesRegex(lumen.Error, "has 3 values, the model's embedding 5"):
            explainer.explain(image, layers=["1"], similar_to=np.ones(3, np.float32))

    def test_segmentation_over_the_predicted_pixels_a_region_or_a_mask(self):
        """task="segmentation": Grad-CAM of a class's scores summed over its predicted pixels, a region or a mask, in PyTorch."""
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 4, 1)).eval()
        pre = lumen.Preprocess(width=32, height=32, mean=[127.5] * 3, std=[127.5] * 3)
        explainer = lumen.Explainer(torch.jit.trace(net, torch.zeros(1, 3, 32, 32)), preprocess=pre)
        image = np.random.RandomState(3).randint(0, 255, (40, 48, 3)).astype(np.uint8)
        x = (F.interpolate(torch.from_numpy(image).float().permute(2, 0, 1)[None], size=(32, 32), mode="bilinear",
                           antialias=True, align_corners=False) - 127.5) / 127.5
        store = {}
        net[1].register_forward_hook(lambda m, i, o: store.update(a=o))
        out = net(x)
        cls = int(out.argmax(1).flatten().bincount(minlength=4).argmax())  # the class most pixels take
        region = (8, 4, 30, 20)  # x0, y0, x1, y1 in the 48 x 40 image
        inside = torch.zeros(1, 1, 40, 48)
        inside[..., 4:20, 8:30] = 1
        at_output = F.interpolate(inside, size=(32, 32), mode="nearest")[0, 0]
        for kw, mask in ((dict(), (out.argmax(1) == cls).float()), (dict(region=region), at_output),
                         (dict(mask=inside[0, 0].numpy() * 255), at_output)):
            g, = torch.autograd.grad((out[:, cls] * mask).sum(), store["a"], retain_graph=True)
            ref = torch.relu((g.mean((2, 3), keepdim=True) * store["a"]).sum(1))[0].detach().numpy()
            [r] = explainer.explain(image, layers=["1"], task="segmentation", classes=cls, **kw)
            self.assertEqual(r["gradcam"].target, "seg-%d" % cls)
            np.testing.assert_allclose(r["gradcam"].raw, ref, rtol=1e-4, atol=1e-6, err_msg=str(kw))
        photo = os.path.join(SHARED, "images", "cat.png")  # a file: region= is in its pixels, read from the file
        by_array = np.asarray(Image.open(photo).convert("RGB"))
        [p] = explainer.explain(photo, layers=["1"], task="segmentation", classes=cls, region=region)
        [q] = explainer.explain(by_array, layers=["1"], task="segmentation", classes=cls, region=region)
        np.testing.assert_allclose(p["gradcam"].raw, q["gradcam"].raw, rtol=1e-4, atol=1e-6)
        # Images of two sizes in one call: each is scored over the region in its own pixels.
        both = explainer.explain([image, photo], layers=["1"], task="segmentation", classes=cls, region=region)
        [alone] = explainer.explain(image, layers=["1"], task="segmentation", classes=cls, region=region)
        np.testing.assert_allclose(both[0]["gradcam"].raw, alone["gradcam"].raw, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(both[1]["gradcam"].raw, p["gradcam"].raw, rtol=1e-4, atol=1e-6)
        [t] = explainer.explain_tensor(x.numpy(), layers=["1"], task="segmentation", classes=cls, sizes=[(48, 40)], region=region)
        np.testing.assert_allclose(t["gradcam"].raw, r["gradcam"].raw, rtol=1e-5, atol=1e-7)
        for kw, message in ((dict(), "needs classes="), (dict(classes=cls, region=(100, 100, 120, 120)), "lies outside the image"),
                            (dict(classes=cls, region=region, mask=np.ones((4, 4))), "not both"),
                            (dict(classes=cls, score="prob"), "takes no score="), (dict(classes=cls, mask=np.zeros((4, 4))), "covers no pixel")):
            with self.assertRaisesRegex(lumen.Error, message):
                explainer.explain(image, layers=["1"], task="segmentation", **kw)
        with self.assertRaisesRegex(lumen.Error, "region= belongs to task='segmentation'"):
            explainer.explain(image, layers=["1"], region=region)

    def test_detection_every_box_of_a_single_stage_detector(self):
        """task="detection" on torchvision's RetinaNet (a small backbone, seeded weights, scripted): each box's Grad-CAM
        against pytorch-grad-cam's FasterRCNNBoxScoreTarget computed in PyTorch."""
        import glob
        import torchvision
        from torchvision.models.detection import RetinaNet
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        lumen.load_ops_library(sorted(glob.glob(os.path.join(os.path.dirname(torchvision.__file__), "_C*.so")))[0])
        torch.manual_seed(1)
        backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        backbone.out_channels = 16
        net = RetinaNet(backbone, num_classes=3, min_size=64, max_size=64, image_mean=[0, 0, 0], image_std=[1, 1, 1],
                        anchor_generator=AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),)), score_thresh=0.0,
                        detections_per_img=4).eval()
        pre = lumen.Preprocess(width=64, height=64, mean=[0] * 3, std=[255] * 3)
        explainer = lumen.Explainer(torch.jit.script(net), preprocess=pre)
        image = np.random.RandomState(5).randint(0, 255, (80, 96, 3)).astype(np.uint8)
        x = F.interpolate(torch.from_numpy(image).float().permute(2, 0, 1)[None], size=(64, 64), mode="bilinear",
                          antialias=True, align_corners=False) / 255
        store = {}
        backbone[2].register_forward_hook(lambda m, i, o: store.update(a=o))
        [det] = net([x[0]])
        [r] = explainer.explain(image, layers=["backbone.2"], task="detection", score_threshold=0)
        self.assertEqual(len(r.maps), len(det["boxes"]))
        refs = []
        for k, m in enumerate(r.maps):
            box = det["boxes"][k].detach()
            ious = torchvision.ops.box_iou(box[None], det["boxes"])[0]
            y = ious[ious.argmax()] + det["scores"][ious.argmax()]  # the box itself: IoU 1, its label
            g, = torch.autograd.grad(y, store["a"], retain_graph=True)
            ref = torch.relu((g.mean((2, 3), keepdim=True) * store["a"]).sum(1))[0].detach().numpy()
            refs.append(ref)
            self.assertEqual(m.target, "box-%d" % (k + 1))
            self.assertEqual(m.detections[0]["cls"], int(det["labels"][k]))
            np.testing.assert_allclose(m.detections[0]["box"], (box * torch.tensor([96 / 64, 80 / 64] * 2)).numpy(), atol=0.05)
            self.assertAlmostEqual(m.target_value, float(y), places=3)
            self.assertGreater(np.corrcoef(m.raw.ravel(), ref.ravel())[0, 1], 0.999, k)
        # A box given in the image's pixels (box=, with its class) explains the detection it matches: the first box's map.
        first = r.maps[0].detections[0]
        [given] = explainer.explain(image, layers=["backbone.2"], task="detection", classes=first["cls"], box=first["box"])
        [m] = given.maps
        self.assertEqual(m.target, "box")
        self.assertAlmostEqual(m.target_value, r.maps[0].target_value, places=3)
        np.testing.assert_allclose(m.raw, r.maps[0].raw, rtol=1e-4, atol=1e-7)
        for kw, says in ((dict(classes=first["cls"], box=(5, 5, 1, 1)), "x0 < x1"), (dict(box=first["box"]), "needs one class"),
                         (dict(classes=first["cls"], box=(0, 0, 1, 1)), "no detection of class")):
            with self.assertRaisesRegex(lumen.Error, says):
                explainer.explain(image, layers=["backbone.2"], task="detection", **kw)
        with self.assertRaisesRegex(lumen.Error, "box= belongs to task='detection'"):
            explainer.explain(image, layers=["backbone.2"], box=first["box"])
        # The same boxes from the preprocessed tensor (both rows in one forward); boxes in the given sizes' pixels.
        tensor_maps = explainer.explain_tensor(torch.cat([x, x]), sizes=[(64, 64), (128, 64)], layers=["backbone.2"], task="detection",
                                               score_threshold=0)
        self.assertEqual([len(t.maps) for t in tensor_maps], [len(det["boxes"])] * 2)
        for k, (m, wide) in enumerate(zip(tensor_maps[0].maps, tensor_maps[1].maps)):
            np.testing.assert_allclose(m.detections[0]["box"], det["boxes"][k].detach().numpy(), atol=0.05)
            np.testing.assert_allclose(wide.detections[0]["box"], (det["boxes"][k].detach() * torch.tensor([2, 1] * 2)).numpy(), atol=0.05)
            self.assertGreater(np.corrcoef(m.raw.ravel(), refs[k].ravel())[0, 1], 0.999, k)
        with self.assertRaisesRegex(lumen.Error, "explains each box's score"):
            explainer.explain(image, layers=["backbone.2"], task="detection", score="prob")
        with self.assertRaisesRegex(lumen.Error, "needs a detector's output"):
            self.explainer.explain(IMAGES[0], task="detection")

    def test_aggregation_contrast_settings_and_run_json(self):
        [r] = self.explainer.explain(IMAGES[0], methods=["gradcam"], layers=["features.18", "features.14"], aggregate="mean", top_k=2,
                                     contrast=True)
        layers = {m.layer for m in r.maps}
        self.assertIn("features.18+features.14", layers)
        self.assertTrue(any(m.contrastive for m in r.maps))
        d = r.to_dict()
        self.assertEqual(len(d["maps"]), len(r))
        self.assertEqual(d["top5"][0]["class"], r.predictions[0].cls)
        [ig] = self.explainer.explain(IMAGES[0], methods=["integrated-gradients"], steps=8)
        self.assertIn("completeness_gap", ig["integrated-gradients"].extra)
        [d] = self.explainer.explain(IMAGES[0], methods=["dff"], concepts=3)
        parts = d["dff"].parts
        self.assertEqual(len(parts), 3)
        self.assertEqual(parts[0]["map"].shape, d["dff"].map.shape)
        self.assertEqual(len(parts[0]["top"]), 2)
        self.assertTrue(np.array_equal(parts[d["dff"].extra["concept"]]["raw"], d["dff"].raw))
        self.assertEqual(r.maps[0].parts, [])
        seen = []
        self.explainer.explain(IMAGES[0], methods=["smoothgrad"], samples=4, progress=lambda what, done, total: seen.append((done, total)))
        self.assertTrue(seen and seen[-1][0] == seen[-1][1], seen)

    def test_forward_modes_give_the_same_maps(self):
        x = model_input(IMAGES[0])
        last = self.model.with_forward_mode("channels-last")
        self.assertEqual(last.forward_mode, "channels-last")
        [a] = self.explainer.explain_tensor(x)
        [b] = lumen.Explainer(last, self.card).explain_tensor(x)
        np.testing.assert_allclose(a["gradcam"].raw, b["gradcam"].raw, rtol=1e-4, atol=1e-4 * float(a["gradcam"].raw.max()))
        with tempfile.TemporaryDirectory() as tmp:
            model, plan = self.model.fastest([1, 3, 64, 64], cache=os.path.join(tmp, "plans.json"))
            self.assertEqual(model.forward_mode, plan["mode"])
            self.assertFalse(plan["cached"])
            self.assertTrue(self.model.fastest([1, 3, 64, 64], cache=os.path.join(tmp, "plans.json"))[1]["cached"])
        with self.assertRaisesRegex(lumen.Error, "forward mode"):
            self.model.with_forward_mode("nhwc")

    def test_onnx_model(self):
        x = model_input(IMAGES[2])
        onnx = lumen.Explainer(ONNX, CARD)
        [a] = onnx.explain_tensor(x, layers=["features.18"])
        want, cls = self.ref.gradcam(x)
        self.assertEqual(a.predictions[0].cls, cls)
        self.assertGreaterEqual(pearson(a["gradcam"].raw, want), 0.999)

    def test_errors_are_python_exceptions_with_lumens_message(self):
        e = self.explainer
        cases = [
            (lambda: lumen.Model.load("/nonexistent/model.pt"), "not found|does not exist|no such"),
            (lambda: e.explain("/nonexistent.jpg"), "image not found"),
            (lambda: e.explain(IMAGES[0], layers=["features.99"]), "features.99"),
            (lambda: e.explain(IMAGES[0], methods=["gradcam-xl"]), "gradcam-xl"),
            (lambda: e.explain(IMAGES[0], methods=["integrated-gradients"], steps=float("nan")), "steps"),
            (lambda: e.explain(IMAGES[0], samples=4), "samples"),
            (lambda: e.explain(np.full((8, 8, 3), np.nan, np.float32)), "NaN"),
            (lambda: e.explain(np.zeros((8, 8, 5), np.uint8)), "shape"),
            (lambda: e.explain(IMAGES[0], classes=[5000]), "5000"),
            (lambda: e.explain_tensor(np.zeros((3, 224, 224), np.float32)), r"\[N, C, H, W\]"),
            (lambda: e.explain(IMAGES[0], compat="grad-cam"), "compat"),
        ]
        for call, message in cases:
            with self.assertRaisesRegex(lumen.Error, message):
                call()
        with tempfile.TemporaryDirectory() as tmp:
            bad = os.path.join(tmp, "corrupt.pt")
            with open(bad, "wb") as f:
                f.write(b"PK\x03\x04" + os.urandom(2000))
            with self.assertRaises(lumen.Error):
                lumen.Model.load(bad)
        self.assertTrue(issubclass(lumen.Error, ValueError))

    def test_threads_share_one_explainer_and_the_gil_is_released(self):
        inputs = [model_input(p, 160) for p in IMAGES]
        alone = [self.explainer.explain_tensor(x)[0]["gradcam"].raw.copy() for x in inputs]
        results, errors = {}, []

        def work(k):
            try:
                for i in range(3):
                    j = (k + i) % len(inputs)
                    results[(k, i)] = (j, self.explainer.explain_tensor(inputs[j])[0]["gradcam"].raw.copy())
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 12)
        for j, raw in results.values():
            self.assertGreaterEqual(pearson(raw, alone[j]), 0.9999)
            np.testing.assert_allclose(raw, alone[j], rtol=1e-3, atol=1e-4 * float(alone[j].max()))
        # While one thread is inside lumen, Python code runs in another: a held GIL would stop this loop.
        done = threading.Event()
        worker = threading.Thread(target=lambda: (self.explainer.explain(IMAGES[0], methods=["smoothgrad"], samples=16), done.set()))
        spins = 0
        worker.start()
        while not done.is_set():
            spins += 1
        worker.join()
        self.assertGreater(spins, 10000)

    def test_no_memory_growth_over_1000_calls(self):
        x = model_input(IMAGES[3], 64)

        def rss_mib():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
            return 0.0

        def call():
            [r] = self.explainer.explain_tensor(x, methods=["gradcam", "saliency"])
            _ = r["gradcam"].map.sum() + r["saliency"].attribution.sum()
            r.to_dict()

        for _ in range(100):
            call()
        before = rss_mib()
        for _ in range(1000):
            call()
        grown = rss_mib() - before
        self.assertLess(grown, 25.0, "resident memory grew by %.1f MiB over 1000 calls" % grown)

    def test_evaluate_a_dataset(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "report")
            summary = self.explainer.evaluate(os.path.join(SHARED, "data", "imagenet-loc-dev"), out, methods=["gradcam"],
                                              metrics=["loc", "pointing"], limit=4, batch=4)
            self.assertEqual(summary["methods"], ["gradcam"])
            self.assertEqual(summary["pairs"], 4)
            self.assertIn("gradcam", summary["summary"])
            for name in ("results.json", "table.md", "index.html", "records.jsonl"):
                self.assertTrue(os.path.exists(os.path.join(out, name)), name)


if __name__ == "__main__":
    unittest.main()
