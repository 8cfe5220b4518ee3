"""lumen from Python against the Python tools' own call paths, in the same process and run.

    PYTHONPATH=build/python /usr/bin/python3 bench/python_speed.py [--batch 8] [--rounds 7] [--scorecam] [--groups]

pytorch-grad-cam and Captum cannot be installed here (no PyPI), so their call paths are written out
below as their code runs them (pytorch-grad-cam 1.5 BaseCAM.forward with ActivationsAndGradients and
GradCAM.get_cam_weights; Captum's GuidedBackprop: backward hooks on every nn.ReLU that pass only the
positive gradient, then autograd.grad to the input). Both need an eager nn.Module (their hooks do not
work on TorchScript), so each runs on a torchvision model with random weights, and lumen on the same
model traced into TorchScript in memory: same weights, same input, and the maps are compared too.
Captum's KernelShap and Lime (--groups) are written out the same way: LimeBase.attribute's loop (one
coalition drawn at a time, the model called every perturbations_per_eval of them, Captum's default 1,
and once more at 32), then the scikit-learn fit Captum calls (LinearRegression; Lasso(alpha=0.01)).
They need no hooks and run on the same TorchScript module as lumen.
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


class CaptumFeatureGroups:
    """Captum's KernelShap(f) / Lime(f).attribute(x, target=t, baselines=b, feature_mask=groups, n_samples=n,
    perturbations_per_eval=p), as LimeBase.attribute runs it: under no_grad, each coalition drawn and turned
    into a model input on its own (the interpretable 0/1 vector over the groups, then torch.where over the
    mask), its similarity to the image computed, and the model called on every p inputs gathered; then
    scikit-learn's weighted fit of the target score on the coalitions, whose coefficients are the map.
    KernelShap's draws: the full and the empty coalition first (weight 1e6), then a size k from the Shapley
    kernel (M-1)/(k(M-k)) and the k largest of M normal draws; Lime's: each group kept with probability
    1/2, weighted by exp(-d^2/2), d = 1 - cos(x, x_z)."""

    def __init__(self, model, kind, groups, samples, per_eval):
        self.model, self.kind, self.groups, self.samples, self.per_eval = model, kind, groups, samples, per_eval
        self.count = int(groups.max()) + 1
        k = torch.arange(1, self.count, dtype=torch.float64)
        self.sizes = torch.distributions.Categorical(probs=(self.count - 1) / (k * (self.count - k)))

    def draw(self, i):
        if self.kind == "lime":
            return torch.bernoulli(torch.full((1, self.count), 0.5)).long()
        if i < 2:
            return torch.full((1, self.count), 1 - i, dtype=torch.long)
        k = int(self.sizes.sample()) + 1
        v = torch.randn(1, self.count)
        return (v > torch.kthvalue(v, self.count - k).values.item()).long()

    def similarity(self, x, xz, z):
        if self.kind == "lime":
            d = 1 - F.cosine_similarity(x.flatten().float(), xz.flatten().float(), dim=0)
            return torch.exp(-d * d / 2)
        selected = int(z.sum())
        return torch.tensor(1e6 if selected in (0, self.count) else 1.0)

    def __call__(self, x, target, baseline):
        from sklearn.linear_model import Lasso, LinearRegression
        with torch.no_grad():
            zs, sims, outs, pending = [], [], [], []
            for i in range(self.samples):
                z = self.draw(i)
                xz = torch.where(z[0][self.groups].bool(), x, baseline)
                zs.append(z)
                pending.append(xz)
                sims.append(self.similarity(x, xz, z).flatten())
                if len(pending) == self.per_eval or i + 1 == self.samples:
                    outs.append(self.model(torch.cat(pending))[:, target].flatten())
                    pending = []
            z, y, w = torch.cat(zs).double().numpy(), torch.cat(outs).double().numpy(), torch.cat(sims).double().numpy()
        fit = (Lasso(alpha=0.01) if self.kind == "lime" else LinearRegression()).fit(z, y, sample_weight=w)
        return torch.as_tensor(fit.coef_, dtype=torch.float32)[self.groups]


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
    ap.add_argument("--groups", action="store_true",
                    help="also KernelSHAP and LIME against Captum's call path (49 squares of 32 px, --samples coalitions)")
    ap.add_argument("--shared", default="../shared", help="--groups: the shared model and photos")
    ap.add_argument("--samples", type=int, default=200, help="--groups: coalitions per image")
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

    if args.groups:
        # KernelSHAP and LIME on the shared MobileNetV2 and photo, over 7 x 7 squares of 32 px, black baseline,
        # the top class: --samples forwards per image either way. A trained model, so that the two samplings'
        # maps can be compared (a random one moves its score by too little for Lasso to keep any group).
        card = lumen.load_card(os.path.join(args.shared, "models", "mobilenet_v2_imagenet.json"))
        net = torch.jit.load(os.path.join(args.shared, "models", "mobilenet_v2_imagenet.pt")).eval()
        ours = lumen.Explainer(lumen.Model.load(os.path.join(args.shared, "models", "mobilenet_v2_imagenet.pt")).fastest([1, 3, 224, 224], cache="")[0],
                               preprocess=card.preprocess)
        mean, std = torch.tensor(card.preprocess.mean).view(1, 3, 1, 1), torch.tensor(card.preprocess.std).view(1, 3, 1, 1)
        rgb = np.asarray(cv2.resize(cv2.imread(os.path.join(args.shared, "images", "pets.jpg"))[:, :, ::-1], (224, 224),
                                    interpolation=cv2.INTER_LINEAR), dtype=np.float32)
        x1 = (torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None] - mean) / std
        black = (torch.zeros_like(x1) - mean) / std
        with torch.no_grad():
            target = int(net(x1).argmax())
        groups = (torch.arange(224) // 32).view(-1, 1) * 7 + (torch.arange(224) // 32).view(1, -1)
        for kind in ("kernel-shap", "lime"):
            def run_ours(seed=0, kind=kind):
                return ours.explain_tensor(x1, methods=[kind], classes=[target], features="grid", patch=32, samples=args.samples, seed=seed)
            for per_eval in (1, 32):
                anchor = CaptumFeatureGroups(net, kind, groups, args.samples, per_eval)

                def run_anchor(anchor=anchor):
                    torch.manual_seed(0)  # as lumen's seed 0: LIME's draws are then the same coalitions
                    return anchor(x1, target, black)
                mine, theirs = run_ours()[0][kind].raw[::32, ::32].ravel(), run_anchor().numpy()[::32, ::32].ravel()
                r = float(np.corrcoef(mine, theirs)[0, 1])
                rounds = max(1, args.rounds // 2)
                a = per_image_ms(run_anchor, 1, rounds, run_ours)
                b = per_image_ms(run_ours, 1, rounds, run_anchor)
                print("%s, MobileNetV2, %d coalitions: Captum path (perturbations_per_eval=%d) %.0f ms/image, lumen %.0f ms/image: "
                      "lumen %.2fx faster" % (kind, args.samples, per_eval, a, b, a / b))
            if kind == "lime":
                print("  maps: r = %.4f (the same coalitions)" % r)
            else:
                # KernelSHAP draws its coalitions another way than Captum: the maps agree as two seeds of one tool do.
                again = run_ours(seed=1)[0][kind].raw[::32, ::32].ravel()
                print("  maps: r = %.3f against Captum's path (other coalitions); lumen seed 0 against seed 1: r = %.3f"
                      % (r, float(np.corrcoef(mine, again)[0, 1])))

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
