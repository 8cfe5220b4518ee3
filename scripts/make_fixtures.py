#!/usr/bin/python3
"""Test fixtures and independent reference results for lumen (test tooling only; users never need Python).

Writes into OUT (default build/fixtures):
  * torchvision resnet18, vgg11, mobilenet_v2 with seeded random weights, each traced and scripted;
  * small models for edge cases (tuple/dict outputs, functional and in-place ReLUs, a zero-gradient head);
  * Grad-CAM references computed here with eager PyTorch forward hooks + autograd, for several layers,
    batch 1 and 3, positive and counterfactual, on those models and on ../shared's MobileNetV2;
  * manifest.json describing every case for tests/test_parity.cpp.

The reference is written from the paper's formula, not from lumen's code:
  alpha_k = mean_ij dy/dA_k(ij), map = relu(sum_k alpha_k A_k), upsampled bilinearly (half-pixel
  centres) to the image size and min-max normalised.
Usage: make_fixtures.py OUT SHARED_DIR
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.io import read_image, ImageReadMode

OUT = sys.argv[1] if len(sys.argv) > 1 else "build/fixtures"
SHARED = sys.argv[2] if len(sys.argv) > 2 else "../shared"
os.makedirs(OUT, exist_ok=True)
torch.set_num_threads(2)

IMAGENET_CARD = {
    "name": "torchvision random-weight fixture",
    "input": {"size": [224, 224], "color_order": "RGB", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]},
}
SHARED_IMAGES = [os.path.join(SHARED, "images", n) for n in ("cat.png", "pets.jpg", "bird.png")]


def write_json(name, obj):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, indent=1)


def load_batch(paths, card):
    """Model input as lumen documents it: RGB float, antialiased bilinear stretch, (x - mean) / std."""
    h, w = card["input"]["size"]
    mean = torch.tensor(card["input"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["input"]["std"]).view(1, 3, 1, 1)
    xs, sizes = [], []
    for p in paths:
        img = read_image(p, ImageReadMode.RGB).float()[None]
        sizes.append((img.shape[2], img.shape[3]))
        if card["input"].get("color_order", "RGB") == "BGR":
            img = img.flip(1)
        x = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        xs.append((x - mean) / std)
    return torch.cat(xs), sizes


def save_maps(prefix, maps):
    """One float32 .npy per image of a [N, ...] tensor, named <prefix>_<i>.npy; returns the names."""
    files = []
    for i in range(maps.shape[0]):
        f = f"{prefix}_{i}.npy"
        np.save(os.path.join(OUT, f), maps[i].detach().numpy().astype(np.float32))
        files.append(f)
    return files


def module_at(model, path):
    m = model
    for part in path.split("."):
        m = getattr(m, part)
    return m


def capture_layer(model, x, layer):
    """The layer's output as a leaf that requires grad, and the model's output, through a forward hook.
    The hook hands a clone downstream so that an in-place op after the layer (vgg's ReLU(inplace=True))
    cannot overwrite the captured activation."""
    store = {}

    def hook(module, inputs, output):
        a = output.detach().requires_grad_(True)
        store["a"] = a
        return a.clone()

    handle = module_at(model, layer).register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        handle.remove()
    return store["a"], out


def reference_gradcam(model, x, layer, classes, counterfactual):
    """Eager Grad-CAM from the paper's formula."""
    a, logits = capture_layer(model, x, layer)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    y = logits[torch.arange(x.shape[0]), torch.tensor(classes)]
    if counterfactual:
        y = -y
    (g,) = torch.autograd.grad(y.sum(), a)
    a = a.detach()
    alpha = g.mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * a).sum(1)), logits.detach()


def normalised(raw, size):
    up = F.interpolate(raw[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    lo, hi = up.min(), up.max()
    if hi - lo <= 1e-6 * max(abs(float(hi)), 1e-30):
        return torch.zeros_like(up), True
    return (up - lo) / (hi - lo), False


cases = []


def add_cases(tag, model_file, model, card_file, card, layers, batches):
    for layer in layers:
        for paths in batches:
            x, sizes = load_batch(paths, card)
            with torch.no_grad():
                out = model(x)
                logits = out[0] if isinstance(out, (tuple, list)) else out
            ranked = logits.argsort(1, descending=True)
            for cf in (False, True):
                # A counterfactual map of the top class is mostly empty at late layers (all evidence is
                # for it); the lowest-ranked class has evidence against it, which tests more.
                classes = ranked[:, -1 if cf else 0].tolist()
                raw, _ = reference_gradcam(model, x, layer, classes, cf)
                name = f"{tag}_{layer}_b{len(paths)}_{'cf' if cf else 'pos'}"
                entry = {"name": name, "model": model_file, "card": card_file, "images": paths, "layer": layer,
                         "classes": classes, "counterfactual": cf, "raw": [], "normalised": [], "empty": []}
                for i in range(len(paths)):
                    norm, empty = normalised(raw[i], sizes[i])
                    rf, nf = f"{name}_{i}.raw.npy", f"{name}_{i}.norm.npy"
                    np.save(os.path.join(OUT, rf), raw[i].numpy().astype(np.float32))
                    np.save(os.path.join(OUT, nf), norm.numpy().astype(np.float32))
                    entry["raw"].append(rf)
                    entry["normalised"].append(nf)
                    entry["empty"].append(empty)
                cases.append(entry)


def torchvision_models():
    write_json("imagenet_card.json", IMAGENET_CARD)
    specs = {
        "resnet18": ["layer4", "layer3.1", "layer4.1.conv2"],
        "vgg11": ["features.18", "features.20"],
        "mobilenet_v2": ["features.18", "features.17.conv.2", "features.14"],
    }
    batches = [SHARED_IMAGES[:1], SHARED_IMAGES]
    for arch, layers in specs.items():
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None).eval()
        for p in model.parameters():
            p.requires_grad_(True)  # as a user's export would have them
        example = torch.randn(1, 3, 224, 224)
        for kind in ("traced", "scripted"):
            f = f"{arch}_{kind}.pt"
            path = os.path.join(OUT, f)
            if not os.path.exists(path):
                m = torch.jit.trace(model, example) if kind == "traced" else torch.jit.script(model)
                m.save(path)
        # The eager model is the reference; one set of maps serves the traced and the scripted file.
        for kind in ("traced", "scripted"):
            add_cases(f"{arch}_{kind}", f"{arch}_{kind}.pt", model, "imagenet_card.json", IMAGENET_CARD, layers,
                      batches if kind == "traced" else batches[1:])


def shared_model():
    card_path = os.path.join(SHARED, "models", "mobilenet_v2_imagenet.json")
    with open(card_path) as f:
        card = json.load(f)
    model = torch.jit.load(os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt")).eval()

    # The shared file is TorchScript (no hooks): shared_split calls its submodules one by one.
    def ref(x, layer, classes, cf):
        parts = layer.split(".")
        assert parts[0] == "features"
        a, logits = shared_split(model, int(parts[1]))[0](x)
        y = logits[torch.arange(x.shape[0]), torch.tensor(classes)]
        y = -y if cf else y
        (g,) = torch.autograd.grad(y.sum(), a)
        alpha = g.mean(dim=(2, 3), keepdim=True)
        return torch.relu((alpha * a.detach()).sum(1))

    images = SHARED_IMAGES + [os.path.join(SHARED, "images", n) for n in ("grace_hopper.png", "parrot.jpg")]
    for layer in ("features.18", "features.16"):
        for paths in (images[:1], images[:3]):
            x, sizes = load_batch(paths, card)
            with torch.no_grad():
                ranked = model(x).argsort(1, descending=True)
            for cf in (False, True):
                classes = ranked[:, -1 if cf else 0].tolist()
                raw = ref(x, layer, classes, cf)
                name = f"shared_mobilenet_v2_{layer}_b{len(paths)}_{'cf' if cf else 'pos'}"
                entry = {"name": name, "model": os.path.abspath(os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt")),
                         "card": os.path.abspath(card_path), "images": paths, "layer": layer, "classes": classes,
                         "counterfactual": cf, "raw": [], "normalised": [], "empty": []}
                for i in range(len(paths)):
                    norm, empty = normalised(raw[i].detach(), sizes[i])
                    rf, nf = f"{name}_{i}.raw.npy", f"{name}_{i}.norm.npy"
                    np.save(os.path.join(OUT, rf), raw[i].detach().numpy().astype(np.float32))
                    np.save(os.path.join(OUT, nf), norm.numpy().astype(np.float32))
                    entry["raw"].append(rf)
                    entry["normalised"].append(nf)
                    entry["empty"].append(empty)
                cases.append(entry)


class TupleOut(nn.Module):
    """Functional and in-place ReLUs, and a forward that returns (logits, features)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.conv2(x)
        x.relu_()
        f = x.mean((2, 3))
        return self.fc(f), f


class DictOut(TupleOut):
    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.conv2(x)
        x.relu_()
        f = x.mean((2, 3))
        return {"logits": self.fc(f), "embedding": f}


class ZeroHead(nn.Module):
    """Class 0 does not depend on the image: its gradient at every layer is exactly zero."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight[0].zero_()

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


def small_models():
    torch.manual_seed(1)
    card = {"name": "small", "input": {"size": [32, 32], "color_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}}
    write_json("small_card.json", card)
    example = torch.randn(2, 3, 32, 32)
    m = TupleOut().eval()
    torch.jit.script(m).save(os.path.join(OUT, "tuple_out_scripted.pt"))
    torch.jit.trace(m, example).save(os.path.join(OUT, "tuple_out_traced.pt"))
    d = DictOut().eval()
    d.load_state_dict(m.state_dict())
    torch.jit.script(d).save(os.path.join(OUT, "dict_out_scripted.pt"))
    torch.jit.script(ZeroHead().eval()).save(os.path.join(OUT, "zero_head.pt"))
    torch.jit.script(GeluNet().eval()).save(os.path.join(OUT, "gelu_net.pt"))
    # conv2's output is ReLU'd in place right after the layer; conv1's through F.relu.
    add_cases("tuple_out_scripted", "tuple_out_scripted.pt", m, "small_card.json", card, ["conv2", "conv1"], [SHARED_IMAGES])
    add_cases("tuple_out_traced", "tuple_out_traced.pt", m, "small_card.json", card, ["conv2"], [SHARED_IMAGES])
    # Bad files.
    with open(os.path.join(OUT, "not_a_model.pt"), "w") as f:
        f.write("this is not a TorchScript archive\n")
    with open(os.path.join(OUT, "not_an_image.png"), "w") as f:
        f.write("plain text, not a PNG\n")
    with open(SHARED_IMAGES[0], "rb") as f:
        png = f.read()
    with open(os.path.join(OUT, "truncated.png"), "wb") as f:
        f.write(png[: len(png) // 40])


# ---------------------------------------------------------------------------------------------------
# Pixel-space references: plain gradients, and ReLU backward rules swapped in eager PyTorch with a
# Python autograd Function on the activation modules (not lumen's graph rewrite).

class RuleClampFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo, hi, rule):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi, ctx.rule = lo, hi, rule
        return x.clamp(min=lo, max=hi)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        pos = g.clamp(min=0)
        if ctx.rule == "guided":
            hi = float("inf") if ctx.hi is None else ctx.hi
            pos = pos * ((x > ctx.lo) & (x < hi)).to(pos.dtype)
        return pos, None, None, None


class RuleAct(nn.Module):
    def __init__(self, lo, hi):
        super().__init__()
        self.lo, self.hi, self.rule = lo, hi, "plain"

    def forward(self, x):
        if self.rule == "plain":
            return x.clamp(min=self.lo, max=self.hi)
        return RuleClampFn.apply(x, self.lo, self.hi, self.rule)


def swap_activations(model):
    """Replaces nn.ReLU / nn.ReLU6 / nn.Hardtanh modules by RuleAct; returns the new modules."""
    acts = []
    for name, module in list(model.named_modules()):
        for cname, child in list(module.named_children()):
            if isinstance(child, (nn.ReLU, nn.ReLU6, nn.Hardtanh)):
                lo, hi = (0.0, None) if isinstance(child, nn.ReLU) else (float(child.min_val), float(child.max_val))
                act = RuleAct(lo, hi)
                setattr(module, cname, act)
                acts.append(act)
    return acts


class SharedMobileNetV2(nn.Module):
    """Eager re-implementation of ../shared's MobileNetV2 (TF 'SAME' padding, ReLU6), weights copied
    from the TorchScript file; checked against its logits before use."""

    def __init__(self, scripted):
        super().__init__()
        sd = scripted.state_dict()
        self.sd = {k: v.clone() for k, v in sd.items()}
        self.blocks = []
        for i in range(19):
            p = f"features.{i}."
            if i == 0 or i == 18:
                self.blocks.append(("convact", [p]))
            else:
                parts = [p + n + "." for n in ("expand", "depthwise", "project") if p + n + ".conv.weight" in sd]
                self.blocks.append(("block", parts))
        self.strides = {}
        for name, mod in scripted.named_modules():
            if name.endswith(".conv"):
                self.strides[name + "."] = int(mod.stride[0])
        self.acts = nn.ModuleList()

    def convact(self, x, prefix, act):
        w, b = self.sd[prefix + "conv.weight"], self.sd[prefix + "conv.bias"]
        k, stride = w.shape[-1], self.strides[prefix + "conv."]
        if k == 3:
            x = F.pad(x, (0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1))
        groups = x.shape[1] if w.shape[1] == 1 and x.shape[1] > 1 else 1
        x = F.conv2d(x, w, b, stride=stride, groups=groups)
        if act:
            m = RuleAct(0.0, 6.0)
            m.rule = self.rule
            x = m(x)
        return x

    def forward(self, x):
        for kind, parts in self.blocks:
            if kind == "convact":
                x = self.convact(x, parts[0], True)
            else:
                h = x
                for p in parts:
                    h = self.convact(h, p, not p.endswith("project."))
                x = x + h if h.shape == x.shape else h  # residual iff stride 1 and in == out channels
        x = x.mean((2, 3))
        return F.linear(x, self.sd["classifier.weight"], self.sd["classifier.bias"])


def input_gradient(model, x, classes, set_rule, rule):
    set_rule(rule)
    x = x.clone().requires_grad_(True)
    y = model(x)[torch.arange(x.shape[0]), torch.tensor(classes)]
    (g,) = torch.autograd.grad(y.sum(), x)
    set_rule("plain")
    return g


def gauss_legendre01(m):
    z, w = np.polynomial.legendre.leggauss(m)
    return (z + 1) / 2, w / 2


pixel_cases = []


def add_pixel_cases(tag, model_file, model, set_rule, card_file, card, cam_layer, paths, include_rules=True):
    x, sizes = load_batch(paths, card)
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    grads = {r: input_gradient(model, x, classes, set_rule, r) for r in (["plain", "guided", "deconvnet"] if include_rules else ["plain"])}
    maps = {
        "saliency": grads["plain"].abs().amax(1),
        "input-x-gradient": (x * grads["plain"]).sum(1),
    }
    if include_rules:
        maps["guided-backprop"] = grads["guided"].abs().amax(1)
        maps["deconvnet"] = grads["deconvnet"].abs().amax(1)
        cam, _ = reference_gradcam(model, x, cam_layer, classes, False) if cam_layer else (None, None)
        if cam is not None:
            up = F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)
            maps["guided-gradcam"] = (grads["guided"] * up).abs().amax(1)
    # SmoothGrad (base saliency): noise of image i from a generator seeded with seed + i.
    n, noise, seed = 6, 0.15, 3
    sg = []
    for i in range(x.shape[0]):
        gen = torch.Generator().manual_seed(seed + i)
        sigma = noise * float(x[i].max() - x[i].min())
        rows = x[i : i + 1] + sigma * torch.randn((n,) + tuple(x.shape[1:]), generator=gen)
        g = input_gradient(model, rows, [classes[i]] * n, set_rule, "plain")
        sg.append(g.mean(0))
    maps["smoothgrad"] = torch.stack(sg).abs().amax(1)
    # Integrated gradients, black baseline, Gauss-Legendre and trapezoid.
    mean = torch.tensor(card["input"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["input"]["std"]).view(1, 3, 1, 1)
    base = ((torch.zeros_like(x) - mean) / std)
    ig_gaps = {}
    for rule_name, steps in (("gauss-legendre", 16), ("trapezoid", 8)):
        if rule_name == "gauss-legendre":
            a, w = gauss_legendre01(steps)
        else:
            a = np.linspace(0, 1, steps)
            w = np.full(steps, 1.0 / (steps - 1))
            w[0] /= 2
            w[-1] /= 2
        attrs, gaps = [], []
        for i in range(x.shape[0]):
            diff = x[i] - base[i]
            rows = base[i : i + 1] + torch.tensor(a, dtype=torch.float32).view(-1, 1, 1, 1) * diff[None]
            g = input_gradient(model, rows, [classes[i]] * steps, set_rule, "plain")
            attr = diff * (torch.tensor(w, dtype=torch.float32).view(-1, 1, 1, 1) * g).sum(0)
            with torch.no_grad():
                fx = float(model(x[i : i + 1])[0, classes[i]])
                fb = float(model(base[i : i + 1])[0, classes[i]])
            gaps.append(abs(float(attr.sum()) - (fx - fb)) / abs(fx - fb))
            attrs.append(attr)
        maps["integrated-gradients/" + rule_name] = torch.stack(attrs).sum(1)
        ig_gaps[rule_name] = gaps
    entry = {"name": tag, "model": model_file, "card": card_file, "images": paths, "classes": classes,
             "cam_layer": cam_layer, "smoothgrad": {"samples": n, "noise": noise, "seed": seed},
             "ig": {"gauss-legendre": 16, "trapezoid": 8, "gaps": ig_gaps}, "maps": {}}
    for method, mp in maps.items():
        entry["maps"][method] = save_maps(f"pixel_{tag}_{method.replace('/', '_')}", mp)
    pixel_cases.append(entry)


def pixel_references():
    paths = SHARED_IMAGES[:2]
    for arch, layer in (("resnet18", "layer4"), ("vgg11", "features.20"), ("mobilenet_v2", "features.18")):
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None).eval()
        acts = swap_activations(model)

        def set_rule(r, acts=acts):
            for a in acts:
                a.rule = r

        kind = "scripted" if arch == "vgg11" else "traced"
        add_pixel_cases(f"{arch}_{kind}", f"{arch}_{kind}.pt", model, set_rule, "imagenet_card.json", IMAGENET_CARD, layer, paths)
    # The shared MobileNetV2 through an eager re-implementation.
    scripted = torch.jit.load(os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt")).eval()
    eager = SharedMobileNetV2(scripted)
    eager.rule = "plain"
    card_path = os.path.join(SHARED, "models", "mobilenet_v2_imagenet.json")
    with open(card_path) as f:
        card = json.load(f)
    x, _ = load_batch(paths, card)
    with torch.no_grad():
        diff = float((eager(x) - scripted(x)).abs().max())
    assert diff < 1e-3, f"eager MobileNetV2 re-implementation differs from the TorchScript file by {diff}"

    def set_rule(r):
        eager.rule = r

    add_pixel_cases("shared_mobilenet_v2", os.path.abspath(os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt")),
                    eager, set_rule, os.path.abspath(card_path), card, None, paths)


# ---------------------------------------------------------------------------------------------------
# CAM-family and perturbation references, written from the papers' formulas (see docs/methods.md).

def hooked_split(model, layer):
    """(x -> (A leaf, logits), (x_row, acts) -> logits) for an eager model, through forward hooks that
    hand a clone downstream or replace the layer's output."""

    def run(x):
        return capture_layer(model, x, layer)

    def head(x_row, acts):
        handle = module_at(model, layer).register_forward_hook(lambda m, i, o: acts)
        try:
            return model(x_row.expand(acts.shape[0], -1, -1, -1))
        finally:
            handle.remove()

    return run, head


def shared_split(scripted, idx=18):
    """The same for the shared TorchScript MobileNetV2 (no hooks on ScriptModules): its children are
    called one by one from Python."""

    def run(x):
        h = x
        a = None
        for name, child in scripted.features.named_children():
            h = child(h)
            if int(name) == idx:
                a = h.detach().requires_grad_(True)
                h = a.clone()
        return a, scripted.classifier(scripted.pool(h))

    def head(x_row, acts):
        return scripted.classifier(scripted.pool(acts))

    return run, head


def projection(stack):
    maps = []
    for s in stack:
        m = s.reshape(s.shape[0], -1).t().double()
        m = m - m.mean(0, keepdim=True)
        _, _, vt = torch.linalg.svd(m, full_matrices=False)
        p = m @ vt[0]
        if float((p * m.sum(1)).sum()) < 0:
            p = -p
        maps.append(p.reshape(s.shape[1:]).float())
    return torch.stack(maps)


cam_cases = []


def add_cam_cases(tag, model_file, model, split, card_file, card, layer, paths, heavy=True, scorecam=True, fc=None):
    run, head = split
    x, _ = load_batch(paths, card)
    a, logits = run(x)
    classes = logits.argmax(1)
    y = logits[torch.arange(x.shape[0]), classes]
    (g,) = torch.autograd.grad(y.sum(), a)
    a = a.detach()
    y = y.detach()
    relu = torch.relu
    wsum = lambda w: relu((w[:, :, None, None] * a).sum(1))
    maps = {}

    def gradient_weighted(g, suffix):
        maps["gradcam" + suffix] = wsum(g.mean((2, 3)))
        g2, g3 = g ** 2, g ** 3
        alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g3 + 1e-7)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        maps["gradcam++" + suffix] = wsum((alpha * relu(g)).sum((2, 3)))
        maps["hirescam" + suffix] = relu((g * a).sum(1))
        maps["xgradcam" + suffix] = wsum((g * a).sum((2, 3)) / (a.sum((2, 3)) + 1e-7))
        maps["layercam" + suffix] = relu((relu(g) * a).sum(1))
        maps["gradcam-elementwise" + suffix] = relu(g * a).sum(1)
        maps["eigengradcam" + suffix] = relu(projection(g * a))

    gradient_weighted(g, "")
    # Counterfactual (the Grad-CAM paper's section 5.2): the same formulas with negated gradients.
    if heavy:
        gradient_weighted(-g, ":counterfactual")
    maps["eigencam"] = relu(projection(a))
    if fc is not None:  # CAM (Zhou et al.): the classifier's weight rows for the classes, on the activations
        maps["cam"] = relu((fc.weight.detach()[classes][:, :, None, None] * a).sum(1))
        if heavy:
            maps["cam:counterfactual"] = relu((-fc.weight.detach()[classes][:, :, None, None] * a).sum(1))
    if heavy:
        # Score-CAM: masks from min-max normalised upsampled channels, weight = f(x o H_k) - f(0).
        sc, ab = [], []
        for i in range(x.shape[0]):
            c = int(classes[i])
            up = F.interpolate(a[i : i + 1], size=x.shape[2:], mode="bilinear", align_corners=False)[0]
            lo = up.amin((1, 2), keepdim=True)
            hi = up.amax((1, 2), keepdim=True)
            w = torch.zeros(a.shape[1])
            if scorecam:
                with torch.no_grad():
                    fb = float(model(torch.zeros_like(x[i : i + 1]))[0, c])
                    live = [k for k in range(a.shape[1]) if float(hi[k] - lo[k]) > 0]
                    for s0 in range(0, len(live), 16):
                        ks = live[s0 : s0 + 16]
                        masks = (up[ks] - lo[ks]) / (hi[ks] - lo[ks])
                        w[ks] = model(x[i : i + 1] * masks[:, None])[:, c] - fb
                sc.append(relu((w[:, None, None] * a[i]).sum(0)))
            # Ablation-CAM: channel k zeroed, network re-run from the layer (forward hook).
            rows = a[i : i + 1].repeat(a.shape[1], 1, 1, 1)
            rows[torch.arange(a.shape[1]), torch.arange(a.shape[1])] = 0
            with torch.no_grad():
                yk = torch.cat([head(x[i : i + 1], rows[k : k + 64])[:, c] for k in range(0, rows.shape[0], 64)])
            wa = (float(y[i]) - yk) / float(y[i])
            ab.append(relu((wa[:, None, None] * a[i]).sum(0)))
        if scorecam:
            maps["scorecam"] = torch.stack(sc)
        maps["ablationcam"] = torch.stack(ab)
    entry = {"name": tag, "model": model_file, "card": card_file, "images": paths, "layer": layer,
             "classes": classes.tolist(), "maps": {}}
    for method, mp in maps.items():
        entry["maps"][method] = save_maps(f"cam_{tag}_{method.replace(':', '_')}", mp)
    cam_cases.append(entry)


def perturbation_references():
    """Occlusion by brute force on a small model and image; RISE with the documented mask recipe."""
    card = {"name": "small", "input": {"size": [32, 32], "color_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}}
    torch.manual_seed(1)
    m = TupleOut().eval()
    m.load_state_dict(torch.jit.load(os.path.join(OUT, "tuple_out_scripted.pt")).state_dict())
    x, _ = load_batch(SHARED_IMAGES[:1], card)
    with torch.no_grad():
        logits = m(x)[0]
        c = int(logits[0].argmax())
        y0 = float(logits[0, c])
        # Occlusion: patch 8, stride 6 -> positions 0,6,12,18,24 per axis (24 = 32 - 8 is on the grid).
        patch, stride, fill_pixel = 8, 6, 0.0
        fill = (fill_pixel - 127.5) / 127.5
        total = torch.zeros(32, 32)
        count = torch.zeros(32, 32)
        for py in range(0, 32 - patch + 1, stride):
            for px in range(0, 32 - patch + 1, stride):
                xo = x.clone()
                xo[:, :, py : py + patch, px : px + patch] = fill
                d = y0 - float(m(xo)[0][0, c])
                total[py : py + patch, px : px + patch] += d
                count[py : py + patch, px : px + patch] += 1
        occ = total / count.clamp(min=1)
        # RISE: 300 masks, 4 cells, keep 0.5, seed 5.
        n_masks, cells, keep, seed = 300, 4, 0.5, 5
        gen = torch.Generator().manual_seed(seed)
        grids = (torch.rand((n_masks, 1, cells, cells), generator=gen) < keep).float()
        cell = (32 + cells - 1) // cells
        shifts = torch.stack([torch.randint(0, cell, (n_masks,), generator=gen), torch.randint(0, cell, (n_masks,), generator=gen)], 1)
        up = F.interpolate(grids, size=((cells + 1) * cell, (cells + 1) * cell), mode="bilinear", align_corners=False)
        sal = torch.zeros(32, 32)
        for k in range(n_masks):
            mk = up[k, 0, shifts[k, 0] : shifts[k, 0] + 32, shifts[k, 1] : shifts[k, 1] + 32]
            sal += float(m(x * mk)[0][0, c]) * mk
        sal /= n_masks * keep
    np.save(os.path.join(OUT, "perturb_occlusion.npy"), occ.numpy().astype(np.float32))
    np.save(os.path.join(OUT, "perturb_rise.npy"), sal.numpy().astype(np.float32))
    write_json("perturbation.json", {"model": "tuple_out_scripted.pt", "card": "small_card.json", "image": SHARED_IMAGES[0],
                                     "class": c, "occlusion": {"patch": patch, "stride": stride, "fill": "0"},
                                     "rise": {"masks": n_masks, "cells": cells, "keep": keep, "seed": seed}})


def cam_references():
    paths = SHARED_IMAGES[:2]
    for arch, layer, heavy in (("resnet18", "layer4", True), ("vgg11", "features.20", False), ("mobilenet_v2", "features.18", False)):
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None).eval()
        fc = {"resnet18": lambda: model.fc, "mobilenet_v2": lambda: model.classifier[1]}.get(arch, lambda: None)()
        add_cam_cases(f"{arch}_traced", f"{arch}_traced.pt", model, hooked_split(model, layer), "imagenet_card.json",
                      IMAGENET_CARD, layer, paths[:1] if heavy else paths, heavy, fc=fc)
    scripted = torch.jit.load(os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt")).eval()
    card_path = os.path.join(SHARED, "models", "mobilenet_v2_imagenet.json")
    with open(card_path) as f:
        card = json.load(f)
    add_cam_cases("shared_mobilenet_v2", os.path.abspath(os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt")), scripted,
                  shared_split(scripted), os.path.abspath(card_path), card, "features.18", SHARED_IMAGES[1:2], True,
                  scorecam=False, fc=scripted.classifier)  # Score-CAM's reference runs on resnet18 only: 1280 masked forwards cost ~1 min


# ---------------------------------------------------------------------------------------------------
# Options shared by the CAM methods (--eigen-smooth, --aug-smooth), FullGrad, and pytorch-grad-cam's
# pipeline (--compat pytorch-grad-cam), written from that library's documented behaviour: ReLU, scale
# (m - min) / (max(m - min) + 1e-7) at the layer, resize to the input (bilinear; cv2.resize and
# interpolate(align_corners=False) agree when enlarging), scale again.

variant_cases = []


def pgc_scale(m):
    m = m - m.amin((-2, -1), keepdim=True)
    return m / (1e-7 + m.amax((-2, -1), keepdim=True))


def pgc_finish(cam, size):
    up = F.interpolate(pgc_scale(torch.relu(cam))[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return pgc_scale(up)


def add_variant(name, model_file, card_file, layer, paths, classes, method, options, compare, maps):
    files = save_maps(f"variant_{name}", maps)
    variant_cases.append({"name": name, "model": model_file, "card": card_file, "layer": layer, "images": paths,
                          "classes": [int(c) for c in classes], "method": method, "options": options,
                          "compare": compare, "files": files})


class BiasNet(nn.Module):
    """Conv layers with biases, batch norm with a non-default eps, in-place ReLUs (FullGrad's cases)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8, eps=1e-3)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.fc = nn.Linear(12, 6)

    def forward(self, x):
        x = torch.relu_(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x), inplace=True)
        return self.fc(x.mean((2, 3)))


def randomise_biases(model):
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.normal_(1, 0.3)
                mod.bias.normal_(0, 0.5)
            elif isinstance(mod, nn.Conv2d) and mod.bias is not None:
                mod.bias.normal_(0, 0.5)


def fullgrad_reference(model, x, classes, per_channel):
    """Input term plus every Conv2d/BatchNorm2d bias term; forward hooks keep each layer's output (and
    hand a clone downstream so in-place ReLUs cannot change it)."""
    outs, biases, handles = [], [], []
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            biases.append(mod.bias - mod.running_mean * mod.weight / torch.sqrt(mod.running_var + mod.eps))
        elif isinstance(mod, nn.Conv2d) and mod.bias is not None:
            biases.append(mod.bias)
        else:
            continue
        handles.append(mod.register_forward_hook(lambda m, i, o: (outs.append(o), o.clone())[1]))
    x = x.clone().requires_grad_(True)
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    y = logits[torch.arange(x.shape[0]), classes].sum()
    grads = torch.autograd.grad(y, [x] + outs)

    def psi(t):
        t = t.abs()
        dims = (2, 3) if per_channel else (1, 2, 3)
        t = t - t.amin(dims, keepdim=True)
        hi = t.amax(dims, keepdim=True)
        t = t / (hi + 1e-7) if per_channel else t / torch.where(hi > 0, hi, torch.ones_like(hi))
        return F.interpolate(t, size=x.shape[2:], mode="bilinear", align_corners=False).sum(1)

    total = psi(x.detach() * grads[0])
    for g, b in zip(grads[1:], biases):
        total = total + psi(g * b.detach()[None, :, None, None])
    return total.detach()


def variant_references():
    torch.manual_seed(0)
    r18 = torchvision.models.resnet18(weights=None).eval()
    path = [SHARED_IMAGES[0]]
    x, _ = load_batch(path, IMAGENET_CARD)
    a, logits = capture_layer(r18, x, "layer4")
    c = logits.argmax(1)

    def layer_tensors(xx):
        aa, ll = capture_layer(r18, xx, "layer4")
        (gg,) = torch.autograd.grad(ll[torch.arange(xx.shape[0]), c].sum(), aa)
        return aa.detach(), gg

    a, g = layer_tensors(x)
    relu = torch.relu
    alpha_a = g.mean((2, 3), keepdim=True) * a
    add_variant("gradcam_eigen", "resnet18_traced.pt", "imagenet_card.json", "layer4", path, c, "gradcam",
                {"eigen_smooth": True}, "raw", relu(projection(alpha_a)))
    add_variant("layercam_eigen", "resnet18_traced.pt", "imagenet_card.json", "layer4", path, c, "layercam",
                {"eigen_smooth": True}, "raw", relu(projection(relu(g) * a)))
    # Test-time augmentation: flip x scale 0.9/1/1.1 of the model input, same class, maps flipped back.
    raws, scaled = [], []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            xa = x * factor
            if flip:
                xa = xa.flip(3)
            aa, gg = layer_tensors(xa)
            cam = relu((gg.mean((2, 3), keepdim=True) * aa).sum(1))
            fin = pgc_finish(cam, x.shape[2:])
            if flip:
                cam, fin = cam.flip(-1), fin.flip(-1)
            raws.append(cam)
            scaled.append(fin)
    add_variant("gradcam_aug", "resnet18_traced.pt", "imagenet_card.json", "layer4", path, c, "gradcam",
                {"aug_smooth": True}, "raw", torch.stack(raws).mean(0))
    add_variant("gradcam_aug_compat", "resnet18_traced.pt", "imagenet_card.json", "layer4", path, c, "gradcam",
                {"aug_smooth": True, "compat": True}, "normalized", torch.stack(scaled).mean(0))
    # pytorch-grad-cam's Grad-CAM++ (eps 1e-6) and its scaling.
    g2, g3 = g ** 2, g ** 3
    alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g3 + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    cam = ((alpha * relu(g)).sum((2, 3))[:, :, None, None] * a).sum(1)
    add_variant("gradcampp_compat", "resnet18_traced.pt", "imagenet_card.json", "layer4", path, c, "gradcam++",
                {"compat": True}, "normalized", pgc_finish(cam, x.shape[2:]))

    # FullGrad on resnet18 (batch norm, eps from the scripted module) and a small traced net (conv biases,
    # eps 1e-3 baked into the traced graph), with non-trivial biases.
    torch.manual_seed(3)
    randomise_biases(r18)
    torch.jit.script(r18).save(os.path.join(OUT, "resnet18_bn_scripted.pt"))
    c18 = r18(x).argmax(1)
    for compat in (False, True):
        add_variant(f"fullgrad_resnet18{'_compat' if compat else ''}", "resnet18_bn_scripted.pt", "imagenet_card.json", None,
                    path, c18, "fullgrad", {"compat": compat}, "raw", fullgrad_reference(r18, x, c18, compat))
    small_card = {"name": "small", "input": {"size": [32, 32], "color_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}}
    # No conv or batch-norm bias anywhere: FullGrad must refuse it.
    torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                   nn.Linear(4, 3)).eval()).save(os.path.join(OUT, "no_bias_net.pt"))
    bn = BiasNet().eval()
    randomise_biases(bn)
    torch.jit.trace(bn, torch.randn(1, 3, 32, 32)).save(os.path.join(OUT, "bias_net_traced.pt"))
    paths = SHARED_IMAGES[:2]
    xs, _ = load_batch(paths, small_card)
    cs = bn(xs).argmax(1)
    for compat in (False, True):
        add_variant(f"fullgrad_biasnet{'_compat' if compat else ''}", "bias_net_traced.pt", "small_card.json", None, paths, cs,
                    "fullgrad", {"compat": compat}, "raw", fullgrad_reference(bn, xs, cs, compat))

    # pytorch-grad-cam's Score-CAM and Ablation-CAM on the small tuple-output model: conv1's output is
    # not yet ReLU'd (negative minimum: the large negative ablation fill, cascading within batches of 32).
    torch.manual_seed(1)
    m = TupleOut().eval()
    m.load_state_dict(torch.jit.load(os.path.join(OUT, "tuple_out_scripted.pt")).state_dict())
    xs, _ = load_batch(paths, small_card)
    with torch.no_grad():
        for layer in ("conv1", "conv2"):
            acts = []
            h = module_at(m, layer).register_forward_hook(lambda mod, i, o: (acts.append(o.clone()), o)[1])
            logits = m(xs)[0]
            h.remove()
            a = acts[0]
            cls = logits.argmax(1)
            sc, ab = [], []
            for i in range(xs.shape[0]):
                ci = int(cls[i])
                up = F.interpolate(a[i : i + 1], size=xs.shape[2:], mode="bilinear", align_corners=True)[0]
                lo = up.amin((1, 2), keepdim=True)
                hi = up.amax((1, 2), keepdim=True)
                masks = (up - lo) / (hi - lo + 1e-8)
                scores = torch.cat([m(xs[i : i + 1] * masks[k : k + 16, None])[0][:, ci] for k in range(0, a.shape[1], 16)])
                sc.append((torch.softmax(scores, 0)[:, None, None] * a[i]).sum(0))
                y0 = float(logits[i, ci])
                lowest = float(a[i].min())
                yk = []
                for start in range(0, a.shape[1], 32):
                    ks = list(range(start, min(a.shape[1], start + 32)))
                    rows = a[i : i + 1].repeat(len(ks), 1, 1, 1)
                    for r, k in enumerate(ks):
                        rows[r, k] = 0.0 if lowest == 0 else lowest - (r + 1) * 1e7
                    h = module_at(m, layer).register_forward_hook(lambda mod, inp, o, rows=rows: rows)
                    yk.append(m(xs[i : i + 1].expand(len(ks), -1, -1, -1))[0][:, ci])
                    h.remove()
                w = (y0 - torch.cat(yk)) / y0
                ab.append((w[:, None, None] * a[i]).sum(0))
            for method, cams in (("scorecam", sc), ("ablationcam", ab)):
                add_variant(f"{method}_compat_{layer}", "tuple_out_scripted.pt", "small_card.json", layer, paths, cls, method,
                            {"compat": True}, "normalized", pgc_finish(torch.stack(cams), xs.shape[2:]))


# ---------------------------------------------------------------------------------------------------
# `lumen eval` cross-check: Grad-CAM's localisation (the paper's protocol) and pointing game on the first
# 20 images of the shared localisation set, computed here with eager PyTorch, numpy and a flood fill.

def largest_component_box(mask):
    """Bounding box [x0, y0, x1, y1) of the largest 8-connected True region (first found on ties)."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best, best_box = 0, None
    for y0 in range(h):
        for x0 in range(w):
            if not mask[y0, x0] or seen[y0, x0]:
                continue
            stack, area = [(y0, x0)], 0
            seen[y0, x0] = True
            bx0, by0, bx1, by1 = x0, y0, x0, y0
            while stack:
                y, x = stack.pop()
                area += 1
                bx0, bx1, by0, by1 = min(bx0, x), max(bx1, x), min(by0, y), max(by1, y)
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            stack.append((yy, xx))
            if area > best:
                best, best_box = area, (bx0, by0, bx1 + 1, by1 + 1)
    return best_box


def box_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def eval_references(count=20):
    root = os.path.join(SHARED, "data", "imagenet-loc-dev")
    with open(os.path.join(root, "labels.csv")) as f:
        rows = [line.strip().split(",") for line in f.readlines()[1:] if line.strip()][:count]
    boxes = {}
    with open(os.path.join(root, "boxes.csv")) as f:
        for line in f.readlines()[1:]:
            name, label, *xy = line.strip().split(",")
            boxes.setdefault(name, []).append((int(label), [float(v) for v in xy]))
    scripted = torch.jit.load(os.path.join(SHARED, "models", "mobilenet_v2_imagenet.pt")).eval()
    with open(os.path.join(SHARED, "models", "mobilenet_v2_imagenet.json")) as f:
        card = json.load(f)
    run, _ = shared_split(scripted)
    paths = [os.path.join(root, "images", r[0]) for r in rows]
    labels = torch.tensor([int(r[1]) for r in rows])
    x, sizes = load_batch(paths, card)
    a, logits = run(x)
    (g,) = torch.autograd.grad(logits[torch.arange(len(rows)), labels].sum(), a)
    cam = torch.relu((g.mean((2, 3), keepdim=True) * a.detach()).sum(1))
    top5 = logits.detach().topk(5, 1).indices
    out, n1, n5, npoint = [], 0, 0, 0
    for i, (name, label) in enumerate(rows):
        label = int(label)
        h, w = sizes[i]
        up = F.interpolate(cam[i : i + 1, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
        own = [xy for lab, xy in boxes.get(name, []) if lab == label]
        mx = float(up.max())
        iou = 0.0
        if mx > 0:
            box = largest_component_box(up >= float(np.float32(0.15)) * mx)
            iou = max([box_iou(box, b) for b in own], default=0.0)
        py, px = np.unravel_index(int(np.argmax(up)), up.shape)
        cx, cy = px + 0.5, py + 0.5
        point = any(np.hypot(max(b[0] - cx, 0, cx - b[2]), max(b[1] - cy, 0, cy - b[3])) <= 15 for b in own)
        t1 = int(top5[i, 0]) == label
        t5 = label in top5[i].tolist()
        rec = {"image": name, "top1_correct": t1, "top5_correct": t5, "iou": iou, "loc_top1": t1 and iou >= 0.5,
               "loc_top5": t5 and iou >= 0.5, "pointing": bool(point)}
        n1, n5, npoint = n1 + rec["loc_top1"], n5 + rec["loc_top5"], npoint + rec["pointing"]
        out.append(rec)
    write_json("eval_reference.json", {"images": out, "loc_top1": n1, "loc_top5": n5, "pointing": npoint})


# ---------------------------------------------------------------------------------------------------
# Targets beyond one class logit: a model with a nested dict/tuple of heads, and a tiny captioner that
# emits [N, T, V] logits. References are eager Grad-CAM at conv2 for each head / token / caption.

class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.species = nn.Linear(16, 5)
        self.pose = nn.Linear(16, 7)

    def forward(self, x):
        a = F.relu(self.conv2(F.relu(self.conv1(x))))
        f = a.mean((2, 3))
        return {"heads": (self.species(f), self.pose(f)), "feature": f}


class TinyCaptioner(nn.Module):
    def __init__(self, vocab: int = 11, steps: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.init = nn.Linear(16, 12)
        self.cell = nn.GRUCell(16, 12)
        self.out = nn.Linear(12, vocab)
        self.steps = steps

    def forward(self, x):
        a = F.relu(self.conv2(F.relu(self.conv1(x))))
        f = a.mean((2, 3))
        h = torch.tanh(self.init(f))
        outs = []
        for _ in range(self.steps):
            h = self.cell(f, h)
            outs.append(self.out(h))
        return torch.stack(outs, 1)


target_cases = []
onnx_cases = {}


def target_references():
    card = {"name": "small", "input": {"size": [32, 32], "color_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}}
    paths = SHARED_IMAGES[:2]
    x, _ = load_batch(paths, card)
    torch.manual_seed(7)
    heads = TwoHeads().eval()
    cap = TinyCaptioner().eval()
    torch.jit.script(heads).save(os.path.join(OUT, "two_heads.pt"))
    torch.jit.script(cap).save(os.path.join(OUT, "tiny_captioner.pt"))
    cases = [
        ("head_pose_3", "two_heads.pt", heads, ["--output", "heads.1", "--class", "3"], "c3", lambda o: o["heads"][1][:, 3]),
        ("head_species_0", "two_heads.pt", heads, ["--output", "heads.0", "--class", "0"], "c0", lambda o: o["heads"][0][:, 0]),
        ("token_1_class_4", "tiny_captioner.pt", cap, ["--token", "1", "--class", "4"], "c4", lambda o: o[:, 1, 4]),
        ("caption_2_5_7", "tiny_captioner.pt", cap, ["--sequence", "2,5,7"], "sequence-2-5-7",
         lambda o: torch.log_softmax(o[:, :3], 2)[:, torch.arange(3), torch.tensor([2, 5, 7])].sum(1)),
    ]
    for name, file, model, args, target, fn in cases:
        a, out = capture_layer(model, x, "conv2")
        (g,) = torch.autograd.grad(fn(out).sum(), a)
        cam = torch.relu((g.mean((2, 3), keepdim=True) * a.detach()).sum(1))
        files = save_maps(f"target_{name}", cam)
        target_cases.append({"name": name, "model": file, "args": args, "target": target, "images": paths, "files": files})


class GeluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.GELU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))

# The ONNX zoo: every model's ONNX export must run in lumen like its TorchScript trace. Opsets are
# spread over 11..17 so that each version-dependent operator form (Clip/Split/Squeeze/ReduceSum inputs,
# HardSwish at 14, LayerNormalization at 17) is met. The layer is a module path; in the ONNX file the
# same path names the last node of that module's scope.
ONNX_ZOO = [
    ("resnet18", 11, "layer4"), ("resnet50", 12, "layer4"), ("vgg11", 13, "features"),
    ("mobilenet_v2", 14, "features"), ("mobilenet_v3_small", 15, "features"), ("efficientnet_b0", 16, "features"),
    ("densenet121", 17, "features"), ("squeezenet1_1", 11, "features"), ("shufflenet_v2_x0_5", 13, "conv5"),
    ("googlenet", 14, "inception5b"), ("regnet_x_400mf", 15, "trunk_output"), ("convnext_tiny", 17, "features"),
]


def onnx_export(model, x, path, opset):
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def onnx_references():
    import warnings
    warnings.filterwarnings("ignore")
    paths = SHARED_IMAGES[:2]
    x, _ = load_batch(paths, IMAGENET_CARD)
    zoo = []
    for i, (arch, opset, layer) in enumerate(ONNX_ZOO):
        torch.manual_seed(100 + i)
        kw = {"aux_logits": False, "init_weights": True} if arch == "googlenet" else {}
        model = getattr(torchvision.models, arch)(weights=None, **kw).eval()
        # Batch-norm statistics of real activations (one training-mode pass over the images), so that
        # folding them into convolutions is exercised on values of ordinary size. Random statistics on
        # randomly initialised weights leave channels nearly constant, and max-pool ties then flip on
        # rounding noise (the gradient of googlenet differed for that reason alone).
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 1.0
        model.train()
        with torch.no_grad():
            model(x)
        model.eval()
        with torch.no_grad():
            logits = model(x)
            torch.jit.trace(model, x[:1]).save(os.path.join(OUT, f"zoo_{arch}.pt"))
            onnx_export(model, x[:1], os.path.join(OUT, f"zoo_{arch}.onnx"), opset)
        np.save(os.path.join(OUT, f"zoo_{arch}_logits.npy"), logits.numpy().astype(np.float32))
        zoo.append({"arch": arch, "opset": opset, "layer": layer, "images": paths, "logits": f"zoo_{arch}_logits.npy"})
    onnx_cases["zoo"] = zoo
    onnx_ops()
    bad_onnx_files()


class TinyOnnxNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


class OnnxOpsNet(nn.Module):
    """Operators the zoo exports rarely or never, each in its usual PyTorch spelling."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=(1, 2), bias=True)
        self.c2 = nn.Conv2d(8, 6, 3, stride=2, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        a = F.leaky_relu(self.c1(x), 0.1)
        b, c = torch.split(a, [3, 5], 1)
        d = torch.cat([torch.tanh(b), torch.sigmoid(c) * c], 1)
        d = F.pad(d, (1, 2, 0, 1), mode="reflect")
        d = F.pad(d, (1, 1, 1, 1), value=0.5)
        d = F.pad(d, (0, 1, 1, 0), mode="replicate")
        e = F.interpolate(d, scale_factor=2.0, mode="nearest")
        f = F.interpolate(e, size=(20, 20), mode="bilinear", align_corners=False)
        f = f + F.interpolate(e, size=(20, 20), mode="bilinear", align_corners=True)
        g = self.bn(self.c2(torch.flip(f, [3])[:, :, 2:-1, 1:]))
        g = F.relu6(g) + F.elu(g) + torch.clamp(g, -0.5, 0.5)
        p = F.avg_pool2d(g, 3, stride=2, ceil_mode=True, count_include_pad=False)
        p = F.max_pool2d(p, 2, stride=1, padding=1)
        q = p.amax((2, 3)) + p.mean((2, 3)).unsqueeze(-1).squeeze(-1)
        r = torch.softmax(q, 1) * q + F.hardsigmoid(q) + F.hardswish(q) + torch.erf(q) + q.abs().sqrt() - q / 3
        s = r.reshape(r.shape[0], -1, 2).transpose(1, 2).flatten(1)
        s = torch.cat([s, s[:, :2]], 1) + torch.zeros(s.shape[0], 8)
        return F.log_softmax(self.fc(s), 1)


class OnnxOpsNet2(nn.Module):
    """More operators: ConvTranspose, InstanceNormalization, PRelu, GlobalMaxPool, ReduceSum/Min,
    Expand, Tile, Where/Greater/Equal, Exp, Log, Neg, Reciprocal, Softplus, Max/Min, Cast."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1)
        self.norm = nn.InstanceNorm2d(4, affine=True)
        self.prelu = nn.PReLU(4)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        a = self.prelu(self.norm(self.up(self.c1(x))))
        a = torch.where(a > 0.1, a, torch.exp(a) - 0.9) + (a == 0).float()
        g = F.adaptive_max_pool2d(a, 1).flatten(1)
        h = a.sum((2, 3)) / 1000.0 - a.amin((2, 3)).neg()
        k = torch.maximum(g, h) + torch.minimum(g, h) + F.softplus(h) + torch.log(1.5 + torch.sigmoid(g))
        k = k + 1.0 / (2.0 + k.abs()) + (k > 0).to(torch.int64).to(torch.float32)
        t = torch.cat([k, k.unsqueeze(1).expand(-1, 2, -1).reshape(k.shape[0], 8)[:, :4], k.repeat(1, 2)[:, 3:7]], 1)
        return self.fc(t)


def onnx_ops():
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    nets = []
    for tag, cls in (("ops", OnnxOpsNet), ("ops2", OnnxOpsNet2)):
        torch.manual_seed(11)
        net = cls().eval()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        xg = x.clone().requires_grad_(True)
        out = net(xg)
        (grad,) = torch.autograd.grad(out[:, 3].sum(), xg)
        np.save(os.path.join(OUT, f"onnx_{tag}_logits.npy"), out.detach().numpy())
        np.save(os.path.join(OUT, f"onnx_{tag}_grad.npy"), grad.reshape(-1, 16).numpy())
        for opset in (11, 13, 17):
            onnx_export(net, x[:1], os.path.join(OUT, f"onnx_{tag}_{opset}.onnx"), opset)
        nets.append(tag)
    np.save(os.path.join(OUT, "onnx_ops_input.npy"), x.reshape(-1, 16).numpy())
    onnx_cases["ops"] = {"nets": nets, "opsets": [11, 13, 17], "input_shape": list(x.shape), "class": 3}


def bad_onnx_files():
    """A tiny valid model and broken variants of it, for the loader's error paths and the fuzz smoke test."""
    import onnx
    from onnx import helper, TensorProto
    torch.manual_seed(5)
    net = TinyOnnxNet().eval()
    x = torch.randn(2, 3, 16, 16)
    good = os.path.join(OUT, "onnx_tiny.onnx")
    onnx_export(net, x[:1], good, 13)
    with torch.no_grad():
        np.save(os.path.join(OUT, "onnx_tiny_logits.npy"), net(x).numpy())
    np.save(os.path.join(OUT, "onnx_tiny_input.npy"), x.reshape(2 * 3 * 16, 16).numpy())
    raw = open(good, "rb").read()
    bad = os.path.join(OUT, "onnx_bad")
    os.makedirs(os.path.join(bad, "inner"), exist_ok=True)
    open(os.path.join(bad, "truncated.onnx"), "wb").write(raw[: len(raw) // 2])
    open(os.path.join(bad, "not_onnx.onnx"), "wb").write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    open(os.path.join(bad, "empty.onnx"), "wb").write(b"")

    m = onnx.load(good)
    nodes = list(m.graph.node)
    # Two unsupported operators: both must be named in one error.
    extra = [helper.make_node("TopK", [nodes[-1].output[0], "k"], ["vals", "idx"], name="topk_node", axis=1),
             helper.make_node("NonMaxSuppression", ["vals", "vals"], ["sel"], name="nms_node")]
    u = onnx.load(good)
    u.graph.node.extend(extra)
    u.graph.initializer.append(helper.make_tensor("k", TensorProto.INT64, [1], [2]))
    onnx.save(u, os.path.join(bad, "unsupported_ops.onnx"))

    o = onnx.load(good)
    o.opset_import[0].version = 9
    onnx.save(o, os.path.join(bad, "opset9.onnx"))

    a = onnx.load(good)
    t = a.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([1 << 40, 1 << 40])
    onnx.save(a, os.path.join(bad, "absurd_shape.onnx"))

    # Loads, but the first convolution's weight expects 6 input channels: fails when run.
    from onnx import numpy_helper
    r = onnx.load(good)
    w = next(i for i in r.graph.initializer if list(i.dims) == [4, 3, 3, 3])
    w.CopyFrom(numpy_helper.from_array(np.concatenate([numpy_helper.to_array(w)] * 2, axis=1), w.name))
    onnx.save(r, os.path.join(bad, "runtime_mismatch.onnx"))

    # External data: inside the folder loads; a location leaving the folder is refused.
    inside = onnx.load(good)
    onnx.save(inside, os.path.join(bad, "inner", "external_ok.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    outside = onnx.load(os.path.join(bad, "inner", "external_ok.onnx"), load_external_data=False)
    for init in outside.graph.initializer:
        for kv in init.external_data:
            if kv.key == "location":
                kv.value = "../secret.bin"
    open(os.path.join(bad, "secret.bin"), "wb").write(b"\0" * 4096)
    onnx.save(outside, os.path.join(bad, "inner", "external_escape.onnx"))
    onnx_cases["bad"] = {"dir": "onnx_bad", "good": "onnx_tiny.onnx"}


def bench_models():
    """Random-weight models for bench/ (not compared with references)."""
    torch.manual_seed(0)
    for arch in ("resnet50", "vgg16"):
        path = os.path.join(OUT, f"{arch}_traced.pt")
        if not os.path.exists(path):
            torch.jit.trace(getattr(torchvision.models, arch)(weights=None).eval(), torch.randn(1, 3, 224, 224)).save(path)


if __name__ == "__main__":
    import time

    for step in (bench_models, small_models, torchvision_models, shared_model, pixel_references, cam_references,
                 perturbation_references, variant_references, eval_references, target_references, onnx_references):
        t0 = time.time()
        step()
        print(f"  {step.__name__}: {time.time() - t0:.1f} s", flush=True)
    write_json("manifest.json", {"cases": cases, "pixel": pixel_cases, "cam": cam_cases, "variants": variant_cases,
                                 "targets": target_cases, "onnx": onnx_cases})
    print(f"fixtures: {len(cases)} Grad-CAM, {len(pixel_cases)} pixel-method and {len(cam_cases)} CAM-family reference cases in {OUT}")
