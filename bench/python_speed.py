"""lumen from Python against the Python tools' own call paths, in the same process and run.

    PYTHONPATH=build/python /usr/bin/python3 bench/python_speed.py [--batch 8] [--rounds 7]

pytorch-grad-cam and Captum cannot be installed here (no PyPI), so their call paths are written out
below as their code runs them (pytorch-grad-cam 1.5 BaseCAM.forward with ActivationsAndGradients and
GradCAM.get_cam_weights; Captum's GuidedBackprop: backward hooks on every nn.ReLU that pass only the
positive gradient, then autograd.grad to the input). Both need an eager nn.Module (their hooks do not
work on TorchScript), so each runs on a torchvision model with random weights, and lumen on the same
model traced into TorchScript in memory: same weights, same input, and the maps are compared too.
lumen runs in the forward mode a short probe finds faster (as --forward-mode auto). Rounds alternate
lumen and the Python path; the figures are medians of per-image times. Both run on
the one LibTorch of the process, with the same intra-op threads (--threads, default all cores).
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

import lumen

try:
    import cv2  # what pytorch-grad-cam resizes with
except ImportError:  # python3-opencv not installed: torch's bilinear resize, the same work
    cv2 = None


def scale_cam_image(cam, size):
    """pytorch-grad-cam's scale_cam_image: per image min-max, then resize to the input size."""
    out = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if cv2 is not None:
            img = cv2.resize(img, size)
        else:
            img = F.interpolate(torch.from_numpy(img)[None, None], size=size[::-1], mode="bilinear", align_corners=False)[0, 0].numpy()
        out.append(img)
    return np.float32(out)


class PytorchGradCam:
    """pytorch-grad-cam 1.5 GradCAM(model, target_layers=[layer])(input_tensor=x), targets = the top class."""

    def __init__(self, model, layer):
        self.model = model.eval()
        self.activations, self.gradients = [], []
        layer.register_forward_hook(self.save)

    def save(self, module, inputs, output):
        self.activations.append(output.cpu().detach())

        def store_grad(grad):
            self.gradients = [grad.cpu().detach()] + self.gradients

        output.register_hook(store_grad)

    def __call__(self, x):
        self.activations, self.gradients = [], []
        outputs = self.model(x)
        targets = np.argmax(outputs.cpu().data.numpy(), axis=-1)
        self.model.zero_grad()
        loss = sum(output[t] for t, output in zip(targets, outputs))
        loss.backward(retain_graph=True)
        a = self.activations[0].numpy()
        g = self.gradients[0].numpy()
        weights = np.mean(g, axis=(2, 3))
        cam = np.maximum((weights[:, :, None, None] * a).sum(axis=1), 0)
        return scale_cam_image(cam, (x.shape[-1], x.shape[-2]))


class PytorchScoreCam:
    """pytorch-grad-cam 1.5 ScoreCAM(model, [layer])(x): each channel of the layer, upsampled to the input and
    min-max normalised, masks the input; the masked inputs run through the model in batches of 16 (its
    default) and the softmax of the target class weights the channel."""

    def __init__(self, model, layer, batch_size=16):
        self.model, self.batch_size = model.eval(), batch_size
        self.activations = []
        layer.register_forward_hook(lambda m, i, o: self.activations.append(o.detach()))

    def __call__(self, x):
        self.activations = []
        with torch.no_grad():
            out = self.model(x)
            targets = out.argmax(1)
            acts = self.activations[0]
            upsampled = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=False)
            flat = upsampled.view(*upsampled.shape[:2], -1)
            lo, hi = flat.min(-1)[0][:, :, None, None], flat.max(-1)[0][:, :, None, None]
            upsampled = (upsampled - lo) / (hi - lo + 1e-8)
            cams = []
            for i in range(x.shape[0]):
                inputs = x[i:i + 1] * upsampled[i][:, None]
                scores = []
                for b in range(0, inputs.shape[0], self.batch_size):
                    scores.append(torch.softmax(self.model(inputs[b:b + self.batch_size]), -1)[:, targets[i]])
                w = torch.cat(scores)
                cams.append(F.relu((w[:, None, None] * acts[i]).sum(0)).numpy())
        return scale_cam_image(np.float32(cams), (x.shape[-1], x.shape[-2]))


class CaptumGuidedBackprop:
    """Captum GuidedBackprop(model).attribute(x, target=t): hooks on nn.ReLU modules, autograd.grad to x."""

    def __init__(self, model):
        self.model = model.eval()
        for m in model.modules():
            if isinstance(m, torch.nn.ReLU):
                m.inplace = False  # a backward hook cannot sit on an in-place op (Captum turns it off too)
                m.register_full_backward_hook(lambda mod, gin, gout: (F.relu(gin[0]),))

    def __call__(self, x, targets):
        x = x.clone().requires_grad_(True)
        out = self.model(x)
        (g,) = torch.autograd.grad(out[torch.arange(len(targets)), targets].sum(), x)
        return g


def per_image_ms(fn, batch, rounds, other):
    times = []
    for _ in range(rounds):
        other()  # alternate: both see the same machine state
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) / batch * 1000)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--scorecam", action="store_true", help="also Score-CAM against pytorch-grad-cam's (about a minute per round)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads of the one LibTorch both sides run on")
    args = ap.parse_args()
    lumen.set_threads(args.threads)  # process-wide, so the Python paths get the same threads
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 224, 224)
    pre = lumen.Preprocess(width=224, height=224)
    print("torch threads %d, batch %d, %d alternating rounds, medians per image" % (torch.get_num_threads(), args.batch, args.rounds))

    # Grad-CAM on MobileNetV2 at features.18
    net = torchvision.models.mobilenet_v2().eval()
    ours = lumen.Explainer(lumen.Model.load(torch.jit.trace(net, x[:1])).fastest(list(x.shape), cache="")[0], preprocess=pre)
    anchor = PytorchGradCam(net, net.features[18])
    run_ours = lambda: ours.explain_tensor(x, layers=["features.18"])
    run_anchor = lambda: anchor(x)
    mine, theirs = run_ours(), run_anchor()
    r = min(float(np.corrcoef(m["gradcam"].map.ravel(), t.ravel())[0, 1]) for m, t in zip(mine, theirs))
    a = per_image_ms(run_anchor, args.batch, args.rounds, run_ours)
    b = per_image_ms(run_ours, args.batch, args.rounds, run_anchor)
    print("Grad-CAM, MobileNetV2: pytorch-grad-cam path %.1f ms/image, lumen %.1f ms/image: lumen %.2fx faster (maps r >= %.4f)"
          % (a, b, a / b, r))

    if args.scorecam:
        # Score-CAM on MobileNetV2 (1,280 channels: 1,280 masked forwards per image), one image per call.
        x1 = x[:1]
        net = torchvision.models.mobilenet_v2().eval()
        ours = lumen.Explainer(lumen.Model.load(torch.jit.trace(net, x1)).fastest(list(x1.shape), cache="")[0], preprocess=pre)
        anchor = PytorchScoreCam(net, net.features[18])
        run_ours = lambda: ours.explain_tensor(x1, methods=["scorecam"], layers=["features.18"])
        run_anchor = lambda: anchor(x1)
        mine, theirs = run_ours(), run_anchor()
        r = float(np.corrcoef(mine[0]["scorecam"].map.ravel(), theirs[0].ravel())[0, 1])
        rounds = max(1, args.rounds // 3)
        a = per_image_ms(run_anchor, 1, rounds, run_ours)
        b = per_image_ms(run_ours, 1, rounds, run_anchor)
        print("Score-CAM, MobileNetV2: pytorch-grad-cam path %.0f ms/image, lumen %.0f ms/image: lumen %.2fx faster (maps r = %.4f)"
              % (a, b, a / b, r))

    # Guided backprop on resnet18 (nn.ReLU modules, which Captum's hooks need)
    net = torchvision.models.resnet18().eval()
    ours = lumen.Explainer(lumen.Model.load(torch.jit.trace(net, x[:1])).fastest(list(x.shape), cache="")[0], preprocess=pre)
    anchor = CaptumGuidedBackprop(net)
    targets = net(x).argmax(1)
    run_ours = lambda: ours.explain_tensor(x, methods=["guided-backprop"], classes=None)
    run_anchor = lambda: anchor(x, targets)
    mine, theirs = run_ours(), run_anchor()
    r = min(float(np.corrcoef(m["guided-backprop"].attribution.ravel(), t.permute(1, 2, 0).numpy().ravel())[0, 1])
            for m, t in zip(mine, theirs))
    a = per_image_ms(run_anchor, args.batch, args.rounds, run_ours)
    b = per_image_ms(run_ours, args.batch, args.rounds, run_anchor)
    print("Guided backprop, resnet18: Captum path %.1f ms/image, lumen %.1f ms/image: lumen %.2fx faster (attributions r >= %.4f)"
          % (a, b, a / b, r))


if __name__ == "__main__":
    main()
