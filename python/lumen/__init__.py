"""lumen: why a deep network decided what it decided.

The C++ engine of the `lumen` command, from Python: Grad-CAM and its family, pixel-space gradients,
perturbation and attention methods on TorchScript and ONNX models, with the command line's names and
defaults. Maps come back as numpy arrays that look into lumen's memory (no copies); `Map.tensor()`
gives the same memory as a torch tensor. The GIL is released while lumen computes.

    import lumen
    model = lumen.Model.load("model.pt")            # or .onnx, or a torch.jit.ScriptModule
    card = lumen.load_card("model.json")
    explainer = lumen.Explainer(model, card)
    [result] = explainer.explain(["cat.jpg"], methods=["gradcam", "layercam"], layers=["features.18"], top_k=2)
    result.predictions[0].label, result["gradcam"].map.shape      # normalised map at image size

docs/python.md has the reference and the side-by-side with pytorch-grad-cam and Captum.
"""

import inspect as _inspect
import io as _io
import warnings as _warnings

import numpy as _np

from . import _lumen
from ._lumen import (Error, ImageExplanation, LayerInfo, Map, ModelCard, Prediction, Preprocess, load_card, load_ops_library, method_names, methods,
                     set_deterministic, set_threads, settings)

__version__ = _lumen.__version__
__all__ = ["Model", "Explainer", "Error", "ImageExplanation", "Map", "Prediction", "Preprocess", "ModelCard", "LayerInfo",
           "load_card", "load_ops_library", "method_names", "methods", "settings", "set_threads", "set_deterministic", "__version__"]

Model = _lumen.Model
_load_file = _lumen.Model.load


def _model_from_module(module, name="in-memory"):
    """A model from a torch.jit.ScriptModule (scripted or traced) already in memory.

    The module is serialised once (torch.jit.save into memory) and read by lumen's LibTorch, which is
    the same library python3-torch runs on; lumen works on its own copy, so the module is not changed.
    """
    import torch  # only needed here: lumen itself does not need torch in Python

    if isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule):
        raise Error("lumen takes TorchScript: pass torch.jit.script(model) or torch.jit.trace(model, example), not an eager nn.Module")
    buffer = _io.BytesIO()
    torch.jit.save(module, buffer)
    return _lumen.Model._from_bytes(buffer.getvalue(), name)


def _load(source):
    """Load a TorchScript (.pt) or ONNX (.onnx) file, or take a torch.jit.ScriptModule in memory."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        import os

        return _load_file(os.fsdecode(source))
    return _model_from_module(source, type(source).__name__)


Model.load = staticmethod(_load)
Model.from_module = staticmethod(_model_from_module)


def _map_tensor(self, which="map"):
    """The map's `which` array ("map", "raw", "upsampled", "attribution") as a torch tensor over the same memory."""
    import torch

    array = getattr(self, which)
    if array is None:
        return None
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # the view is read-only; torch warns about that and shares it anyway
        return torch.from_numpy(array)


Map.tensor = _map_tensor


def _as_image(image):
    """numpy arrays and file paths go to lumen as they are; a torch tensor (H x W x C, 0..255) as its numpy view."""
    if hasattr(image, "detach") and hasattr(image, "numpy"):
        return image.detach().cpu().numpy()
    if hasattr(image, "__fspath__"):
        import os

        return os.fspath(image)
    return image


class Explainer:
    """Explains a model's decisions; one explainer may be used from several threads at once.

    Explainer(model, card) with a model card (lumen.load_card), or Explainer(model, preprocess=lumen.Preprocess(...),
    labels=[...]). `model` is a lumen.Model, a file path or a torch.jit.ScriptModule.
    """

    def __init__(self, model, card=None, preprocess=None, labels=None):
        if not isinstance(model, _lumen.Model):
            model = Model.load(model)
        if isinstance(card, str):
            card = load_card(card)
        if card is not None:
            if preprocess is not None:
                raise Error("give a card or a preprocess, not both")
            self._native = _lumen.Explainer(model, card)
            self.default_layer = card.cam_layer
        else:
            self._native = _lumen.Explainer(model, preprocess or Preprocess(), list(labels or []))
            self.default_layer = ""
        self.card = card

    @property
    def model(self):
        return self._native.model

    @property
    def labels(self):
        return self._native.labels

    @property
    def preprocess(self):
        return self._native.preprocess

    def _options(self, methods, layers, top_k, classes, score, counterfactual, output, aggregate, layer_weights, contrast,
                 box_threshold, compat, rows_per_pass, memory_mib, aug_smooth, nonlinearity, tokens, progress, settings):
        if layers is None:
            layers = [self.default_layer] if self.default_layer else []
        if isinstance(classes, int):
            classes = [classes]
        return _lumen._options(methods, layers, top_k, classes, score, counterfactual, output, aggregate, layer_weights, contrast,
                               box_threshold, compat, rows_per_pass, memory_mib, aug_smooth, nonlinearity, tokens, progress, **settings)

    def embed(self, images, output=""):
        """The model's output for images (paths or arrays, preprocessed as explain does) as an [N, D] float32 array: an
        embedding model's vectors. output: the output path when the model returns several."""
        images = [_as_image(i) for i in (images if isinstance(images, (list, tuple)) else [images])]
        return self._native._embed(images, output)

    def _similarity(self, opt, similar_to, dissimilar, output):
        """explain()'s similar_to: a 1-D embedding, or images whose mean embedding is the concept."""
        if hasattr(similar_to, "detach"):
            similar_to = similar_to.detach().cpu().numpy()
        if isinstance(similar_to, _np.ndarray) and similar_to.ndim == 1:
            concept = similar_to
        else:
            concept = self.embed(similar_to, output).mean(0)
        return _lumen._with_similarity(opt, _np.ascontiguousarray(concept, dtype=_np.float32), dissimilar, output)

    def _segmentation(self, opt, classes, mask, region, output, image_sizes_of):
        """explain()'s task="segmentation": one target per class, its scores summed over a mask (as `lumen explain
        --task segmentation`)."""
        if mask is not None and region is not None:
            raise Error("give mask= or region=, not both")
        classes = [classes] if isinstance(classes, int) else list(classes)
        if region is not None:
            if len(region) != 4 or region[2] <= region[0] or region[3] <= region[1]:
                raise Error("region= must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1 (image pixels)")
            # In each image's own pixels, drawn as the CLI draws --region (lumen::rectangle_region).
            return _lumen._with_segmentation(opt, classes, None, output, [float(v) for v in region], list(image_sizes_of()))
        masks = None if mask is None else [mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask]
        return _lumen._with_segmentation(opt, classes, masks, output)

    def _task(self, opt, task, classes, top_k, mask, region, output, score, counterfactual, contrast, similar_to, dissimilar,
              image_sizes_of, detection, box=None, sources=None, input_size=None):
        """The target a task asks for: classes (the default), segmentation, similarity or detection. image_sizes_of: a
        function giving each image's (width, height), called only for region=. detection: explain()'s detection
        settings (score_threshold, iou_threshold, max_boxes, detection_output). Which arguments go with which task is
        lumen's rule, shared with the CLI and the server."""
        if similar_to is not None and task == "classification":
            task = "similarity"  # similar_to= alone asks for it
        given = [name for name, on in (("classes", classes is not None), ("top_k", top_k != 1), ("score", score != "logit"),
                                       ("counterfactual", bool(counterfactual)), ("contrast", bool(contrast)), ("output", bool(output)),
                                       ("mask", mask is not None), ("region", region is not None),
                                       ("similar_to", similar_to is not None), ("dissimilar", bool(dissimilar)),
                                       ("box", box is not None)) if on]
        # A detection setting away from explain()'s default is "given" (the defaults are read from its signature).
        defaults = _inspect.signature(Explainer.explain).parameters
        given += [name for name, value in detection.items() if value != defaults[name].default]
        _lumen._check_task(task, given)
        if task == "detection":
            classes = [] if classes is None else [classes] if isinstance(classes, int) else list(classes)
            scales = []  # box= is in each image's pixels: the model input's pixels per image pixel
            if box is not None:
                iw, ih = input_size or (self.preprocess.width, self.preprocess.height)
                scales = [(iw / w, ih / h) for w, h in image_sizes_of()]
            return _lumen._with_detection(opt, detection["score_threshold"], detection["max_boxes"], detection["iou_threshold"], classes,
                                          detection["detection_output"], [] if box is None else [float(v) for v in box], scales,
                                          list(sources or []))
        if task == "segmentation":
            return self._segmentation(opt, classes, mask, region, output, image_sizes_of)
        if task == "similarity":
            return self._similarity(opt, similar_to, dissimilar, output)
        return opt

    def explain(self, images, methods=("gradcam",), layers=None, top_k=1, classes=None, score="logit", counterfactual=False,
                output="", aggregate="", layer_weights=None, contrast=False, box_threshold=0.15, compat="papers", rows_per_pass=0,
                memory_mib=0, aug_smooth=False, nonlinearity="strict", tokens="", progress=None, sources=None, similar_to=None,
                dissimilar=False, task="classification", mask=None, region=None, score_threshold=0.5, iou_threshold=0.5, max_boxes=100,
                detection_output="torchvision", box=None, boxes=True, **settings):
        """Explain images: one forward pass for the batch, one backward per target.

        images: a file path, an H x W x 3 RGB array (uint8 or float 0..255; a torch tensor works too), or a list of them.
        methods, layers: names as on the command line (lumen.method_names(); module paths or ONNX node names);
            layers defaults to the card's suggested layer.
        top_k / classes: explain the top-k predictions, or these classes for every image.
        score: "logit", "prob" or "logprob"; counterfactual: evidence against the class; output: the output path of
            a tuple/dict model ("heads.1"); aggregate ("mean", "max", "product", "weighted" with layer_weights) and
            contrast: as `lumen explain --aggregate/--contrast`.
        settings: any method setting by name (steps=64, samples=25, smooth_base="integrated-gradients"; see
            lumen.settings()), checked before anything runs.
        progress: called as progress(what, done, total) during long methods.
        similar_to: an embedding model's concept, as `lumen explain --task similarity`: reference images (paths or arrays;
            their mean embedding) or a 1-D embedding; each map explains the cosine similarity to it (pytorch-grad-cam's
            SimilarityToConceptTarget), or with dissimilar=True its negation.
        task="segmentation" (a [N, classes, h, w] output, or a dict's "out"): each map explains the sum of a class's
            (classes=) scores over the pixels predicted as it, or over mask= (a 2-D array, nonzero = inside, stretched
            over the output) or region= ((x0, y0, x1, y1) in each image's own pixels); pytorch-grad-cam's
            SemanticSegmentationTarget. task="similarity" is similar_to= given.
        task="detection" (a torchvision detector: scripted, with lumen.load_ops_library first, or its ONNX export, whose
            images run one per forward): one map per box found scoring at least
            score_threshold (at most max_boxes; of classes= when given), each explaining pytorch-grad-cam's
            FasterRCNNBoxScoreTarget for its box (iou_threshold); map.detections holds the box. The images share one
            forward, and each image's k-th box one backward.
            detection_output: "torchvision" (dicts), or a raw YOLO tensor, "yolov5" ([N, B, 5+C]) or "yolov8" ([N, 4+C, B]),
            or "boxes" ([N, K, 6]: x0, y0, x1, y1, score, class of a model that ran its own NMS).
            box=(x0, y0, x1, y1) in each image's pixels, with one class in classes=: that box instead (a missed or wrong
            detection), as `lumen explain --box`; scored through the detection of its class it overlaps best.
        boxes=False: no paper's box on the maps (map.box is None), which saves its cost where only the maps are read.
        Returns one ImageExplanation per image (.predictions, .maps, result["gradcam"], .to_dict()).
        """
        single = not isinstance(images, (list, tuple))
        images = [_as_image(i) for i in ([images] if single else images)]
        opt = self._options(methods, layers, top_k, None if task == "detection" else classes, score, counterfactual, output, aggregate,
                            layer_weights, contrast, box_threshold, compat, rows_per_pass, memory_mib, aug_smooth, nonlinearity, tokens,
                            progress, settings)
        if sources is None:
            sources = [i if isinstance(i, str) else "image %d" % n for n, i in enumerate(images)]
        opt = self._task(opt, task, classes, top_k, mask, region, output, score, counterfactual, contrast, similar_to, dissimilar,
                         lambda: [_lumen._image_size(i) if isinstance(i, str) else (i.shape[1], i.shape[0]) for i in images],
                         dict(score_threshold=score_threshold, iou_threshold=iou_threshold, max_boxes=max_boxes,
                              detection_output=detection_output), box, sources)
        opt.boxes = bool(boxes)
        return self._native._explain(images, sources, opt)

    def explain_tensor(self, batch, sizes=None, sources=None, methods=("gradcam",), layers=None, top_k=1, classes=None, score="logit",
                       counterfactual=False, output="", aggregate="", layer_weights=None, contrast=False, box_threshold=0.15,
                       compat="papers", rows_per_pass=0, memory_mib=0, aug_smooth=False, nonlinearity="strict", tokens="",
                       progress=None, similar_to=None, dissimilar=False, task="classification", mask=None, region=None,
                       score_threshold=0.5, iou_threshold=0.5, max_boxes=100, detection_output="torchvision", box=None, boxes=True,
                       **settings):
        """Explain an already preprocessed batch [N, C, H, W] (float32 numpy array or torch tensor), as pytorch-grad-cam's
        input_tensor. Maps come back at `sizes` ([(width, height)] per row; default: the input size). A 3-D network's
        batch [N, C, D, H, W] (clips, volumes) gives volume maps: .map is (D, H, W), .box is (x0, y0, z0, x1, y1, z1).
        task, mask, region, similar_to and the detection settings: as explain(); region= is in the pixels of `sizes`
        (default: the input's). task="detection": the rows as the detector takes them (torchvision's: RGB in [0, 1]); map.detections' boxes are in `sizes`' pixels.
        boxes: as explain()."""
        if hasattr(batch, "detach"):
            batch = batch.detach().cpu().contiguous().numpy()
        opt = self._options(methods, layers, top_k, None if task == "detection" else classes, score, counterfactual, output,
                            aggregate, layer_weights, contrast, box_threshold, compat, rows_per_pass, memory_mib, aug_smooth,
                            nonlinearity, tokens, progress, settings)
        opt = self._task(opt, task, classes, top_k, mask, region, output, score, counterfactual, contrast, similar_to, dissimilar,
                         lambda: [tuple(s) for s in sizes] if sizes is not None else [(batch.shape[-1], batch.shape[-2])] * batch.shape[0],
                         dict(score_threshold=score_threshold, iou_threshold=iou_threshold, max_boxes=max_boxes,
                              detection_output=detection_output), box, sources, (batch.shape[-1], batch.shape[-2]))
        opt.boxes = bool(boxes)
        return self._native._explain_tensor(batch, sizes, sources, opt)

    def evaluate(self, data, out, methods=("gradcam",), layers=None, metrics=("loc", "pointing", "deletion", "insertion", "drop"),
                 aggregate="", limit=0, batch=8, steps=50, sanity_images=8, seed=0, fresh=False, report=True, progress=None,
                 rows_per_pass=0, memory_mib=0):
        """`lumen eval` over a dataset folder (images/, labels.csv, boxes.csv): the records, table and report in `out`
        (resumable), and the summary as a dict."""
        if layers is None:
            layers = [self.default_layer] if self.default_layer else []
        shared = self._options(list(methods), list(layers), 1, None, "logit", False, "", "", None, False, 0.15, "papers",
                               rows_per_pass, memory_mib, False, "strict", "", progress, {})
        return _lumen._evaluate(self._native, str(data), str(out), list(methods), list(layers), list(metrics), aggregate, limit, batch,
                                steps, sanity_images, seed, fresh, report, shared)
