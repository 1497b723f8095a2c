"""Train the built-in ``scene_gan`` generator and ``scene_seg`` segmenter on synthetic concept scenes.

Usage::

    python scripts/train_scene_gan.py [--threads 1] [--gan-iters 4000] [--seg-iters 4000]
                                      [--out src/netdissect/generators/weights] [--samples runs/scene_gan]

Seeded and CPU-only (one thread: on a shared two-core machine two threads ran
10-20x slower than one).  Training scenes are
:class:`netdissect.data.synthetic.SyntheticConcepts` images (seed 1) painted
at 64 pixels and averaged down 2x2 to 32x32; their object label layer at
32x32 (the data set's labels at half the painted size) is the segmenter's
target, 16 classes (8 background bands, 8 foreground objects).

1. The segmenter (:class:`~netdissect.generators.scene.SceneSegNet`):
   Adam, cross-entropy, horizontal flips.
2. The GAN (:class:`~netdissect.generators.scene.SceneGAN` against
   :class:`~netdissect.generators.scene.SceneDiscriminator`): the DCGAN
   recipe (Adam 2e-4, betas 0.5/0.999, batch 64, non-saturating loss).

At the end it prints, on held-out scenes (seed 999, never seen in training):
the segmenter's pixel accuracy and per-class IoU; and the share of each
object the segmenter sees in 500 GAN samples against 500 real scenes.  Both
networks are written as fp16 safetensors (under 2 MB together); a grid of
GAN samples with their segmentations goes to ``--samples``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from netdissect.data.synthetic import NUMBER, SyntheticConcepts
from netdissect.generators.scene import (
    GAN_FILE,
    NZ,
    OBJECTS,
    SEG_FILE,
    SceneDiscriminator,
    SceneGAN,
    SceneSegNet,
    save_fp16,
)

ROOT = Path(__file__).resolve().parents[1]
#: synthetic label number -> class index (OBJECTS order); -1 for non-objects
LOOKUP = np.full(max(NUMBER.values()) + 1, -1, dtype=np.int64)
for _i, _name in enumerate(OBJECTS):
    LOOKUP[NUMBER[_name]] = _i
#: a colour per class for the segmentation grid
PALETTE = np.array([[110, 170, 240], [30, 60, 200], [230, 210, 120], [60, 170, 60], [150, 150, 150], [70, 70, 70],
                    [230, 230, 210], [140, 90, 50], [220, 30, 30], [0, 100, 0], [250, 130, 0], [250, 120, 200],
                    [250, 250, 0], [0, 250, 250], [255, 255, 255], [140, 0, 200]], dtype=np.uint8)


def make_set(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes ``0..n-1`` of ``synthetic:seed=SEED,size=64`` at 32x32.

    Returns
    -------
    images : torch.Tensor
        (n, 3, 32, 32) float in [-1, 1] (2x2 averages of the painted pixels).
    labels : torch.Tensor
        (n, 32, 32) int64 object class (index into OBJECTS).
    """
    data = SyntheticConcepts(n=n, seed=seed, size=64)
    ims = np.empty((n, 64, 64, 3), np.uint8)
    labs = np.empty((n, 32, 32), np.int64)
    for i in range(n):
        s = data[i]
        ims[i] = s.image
        labs[i] = LOOKUP[s.pixel_labels[1]]
    assert (labs >= 0).all(), "every pixel of a synthetic scene has an object label"
    x = torch.from_numpy(ims).permute(0, 3, 1, 2).float() / 255
    x = F.avg_pool2d(x, 2) * 2 - 1
    return x, torch.from_numpy(labs)


def train_segmenter(x, y, iters: int, batch: int = 32, lr: float = 2e-3) -> SceneSegNet:
    """Adam on cross-entropy with horizontal flips and mild noise (GAN samples are not clean)."""
    net = SceneSegNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iters, pct_start=0.1)
    g = torch.Generator().manual_seed(1)
    net.train()
    t = time.perf_counter()
    for it in range(iters):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb, yb = x[idx], y[idx]
        flip = torch.rand(batch, generator=g) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        yb = torch.where(flip[:, None, None], yb.flip(-1), yb)
        xb = xb + 0.05 * torch.randn(xb.shape, generator=g)
        loss = F.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % 250 == 0 or it == iters - 1:
            print(f"  seg iter {it:5d} loss {loss.item():.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
    return net.eval()


def train_gan(x, iters: int, batch: int = 64, lr: float = 2e-4, samples_dir: Path | None = None):
    """The DCGAN recipe; returns the generator (eval mode) and the loss history."""
    gen, disc = SceneGAN(), SceneDiscriminator()
    for m in list(gen.modules()) + list(disc.modules()):
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(m.weight, 1.0, 0.02)
            torch.nn.init.zeros_(m.bias)
    og = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    od = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(2)
    fixed = torch.randn(64, NZ, 1, 1, generator=g)
    history = []
    t = time.perf_counter()
    gen.train()
    disc.train()
    ones, zeros = torch.ones(batch), torch.zeros(batch)
    for it in range(iters):
        real = x[torch.randint(0, len(x), (batch,), generator=g)]
        flip = torch.rand(batch, generator=g) < 0.5
        real = torch.where(flip[:, None, None, None], real.flip(-1), real)
        fake = gen(torch.randn(batch, NZ, 1, 1, generator=g))
        ld = F.binary_cross_entropy_with_logits(disc(real), ones * 0.9) + \
            F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros)
        od.zero_grad()
        ld.backward()
        od.step()
        lg = F.binary_cross_entropy_with_logits(disc(fake), ones)
        og.zero_grad()
        lg.backward()
        og.step()
        history.append((ld.item(), lg.item()))
        if it % 250 == 0 or it == iters - 1:
            d, gl = np.mean(history[-250:], axis=0)
            print(f"  gan iter {it:5d} loss D {d:.3f} G {gl:.3f} ({time.perf_counter() - t:.0f}s)", flush=True)
            if samples_dir is not None and (it % 1000 == 0 or it == iters - 1):
                gen.eval()
                with torch.no_grad():
                    save_grid(gen(fixed), samples_dir / f"gan_iter{it:05d}.png")
                gen.train()
    return gen.eval(), history


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def save_grid(x: torch.Tensor, path: Path, labels: torch.Tensor | None = None, cols: int = 8, scale: int = 3):
    """A grid of images (and, below each row, their label maps in PALETTE colours), enlarged ``scale`` times."""
    ims = to_uint8(x)
    if labels is not None:
        ims = np.concatenate([ims, PALETTE[labels.numpy()]], axis=1)
    n, h, w, _ = ims.shape
    rows = (n + cols - 1) // cols
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = ims[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def predict(net, x, batch: int = 250) -> torch.Tensor:
    """Argmax classes of the segmenter for images in [-1, 1]: (N, 32, 32) int64."""
    with torch.no_grad():
        return torch.cat([net(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def evaluate_segmenter(net, x, y) -> dict:
    """Pixel accuracy, per-class IoU and mean IoU (over classes present) on labelled scenes."""
    pred = predict(net, x)
    acc = float((pred == y).double().mean())
    ious = {}
    for c, name in enumerate(OBJECTS):
        inter = int(((pred == c) & (y == c)).sum())
        union = int(((pred == c) | (y == c)).sum())
        if int((y == c).sum()):
            ious[name] = inter / union
    return {"pixel_accuracy": acc, "mean_iou": float(np.mean(list(ious.values()))), "iou": ious}


def main():
    """Train both networks, write their weights, print the held-out figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-images", type=int, default=20000)
    p.add_argument("--seg-iters", type=int, default=4000)
    p.add_argument("--gan-iters", type=int, default=4000)
    p.add_argument("--out", type=Path, default=ROOT / "src" / "netdissect" / "generators" / "weights")
    p.add_argument("--samples", type=Path, default=ROOT / "runs" / "scene_gan")
    p.add_argument("--skip-seg", action="store_true", help="keep the segmenter in --out; train only the GAN")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    timing = {}
    t0 = time.perf_counter()
    x, y = make_set(1, args.train_images)
    xt, yt = make_set(999, 500)
    timing["data_s"] = time.perf_counter() - t0
    print(f"data: {len(x)} training scenes, 500 held-out ({timing['data_s']:.0f}s)", flush=True)
    if args.skip_seg:
        from netdissect.generators.scene import load_scene_segnet

        seg = load_scene_segnet(args.out / SEG_FILE)
    else:
        t = time.perf_counter()
        seg = train_segmenter(x, y, args.seg_iters)
        timing["segmenter_s"] = time.perf_counter() - t
        save_fp16(seg, args.out / SEG_FILE)
    from netdissect.generators.scene import load_scene_segnet

    seg = load_scene_segnet(args.out / SEG_FILE)  # evaluate what ships (fp16 weights)
    ev = evaluate_segmenter(seg, xt, yt)
    print(f"segmenter on 500 held-out scenes: pixel accuracy {ev['pixel_accuracy']:.4f}, "
          f"mean IoU {ev['mean_iou']:.4f}", flush=True)
    print("  IoU " + ", ".join(f"{k} {v:.3f}" for k, v in ev["iou"].items()), flush=True)
    t = time.perf_counter()
    gen, history = train_gan(x, args.gan_iters, samples_dir=args.samples)
    timing["gan_s"] = time.perf_counter() - t
    save_fp16(gen, args.out / GAN_FILE)
    from netdissect.generators.scene import load_scene_gan

    gen = load_scene_gan(args.out / GAN_FILE)
    with torch.no_grad():
        fake = gen(torch.randn(500, NZ, 1, 1, generator=torch.Generator().manual_seed(3)))
    pf, pr = predict(seg, fake), predict(seg, xt)
    share = {name: (float((pf == c).double().mean()), float((pr == c).double().mean()))
             for c, name in enumerate(OBJECTS)}
    print("object share seen by the segmenter, GAN samples vs real scenes:")
    print("  " + ", ".join(f"{k} {a:.3f}/{b:.3f}" for k, (a, b) in share.items()))
    present = {name: (float((pf == c).flatten(1).any(1).double().mean()), float((pr == c).flatten(1).any(1)
                                                                            .double().mean()))
               for c, name in enumerate(OBJECTS)}
    print("images where the segmenter sees the object, GAN vs real:")
    print("  " + ", ".join(f"{k} {a:.2f}/{b:.2f}" for k, (a, b) in present.items()))
    save_grid(fake[:32], args.samples / "gan_samples_segmented.png", pf[:32])
    save_grid(xt[:32], args.samples / "real_segmented.png", pr[:32])
    timing["total_s"] = time.perf_counter() - t0
    print("timing: " + ", ".join(f"{k} {v:.0f}" for k, v in timing.items()) + f" (threads {args.threads})")
    args.samples.mkdir(parents=True, exist_ok=True)
    (args.samples / "train_summary.json").write_text(json.dumps(
        {"segmenter": ev, "share_gan_vs_real": share, "present_gan_vs_real": present, "timing": timing,
         "args": {k: str(v) for k, v in vars(args).items()},
         "final_losses": history[-1] if history else None}, indent=2) + "\n")


if __name__ == "__main__":
    main()
