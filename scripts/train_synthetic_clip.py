"""Train the small image-text model ``synthetic_clip`` on synthetic concept scenes.

Usage::

    python scripts/train_synthetic_clip.py [--out src/netdissect/imagetext/weights/synthetic_clip.safetensors]

Seeded and CPU-only (a few minutes on two cores).  Training images come from
:class:`netdissect.data.synthetic.SyntheticConcepts` with seeds 101-103 at
sizes 96, 128 and 224 (resized to the model's 96 pixels by its own
preprocessing), so the model sees the scenes at several scales; captions are
made from their labels by :func:`netdissect.imagetext.small.synthetic_caption`.
Each step pairs every image with its caption or a random part of it (one to
a few of its concept words) and minimises the CLIP loss, counting a text as
a positive for every image in the batch that carries all its words.

At the end it prints, on held-out scenes (seeds 201 at 96 pixels and 202 at
224 pixels, never seen in training): image -> caption and caption -> image
retrieval among 1000 / 500 captions (R@1, R@5), and for every concept word
the AUC of ranking images that carry the concept (any labelled pixel) above
those without, by the cosine between image and word.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from netdissect.data.synthetic import SyntheticConcepts
from netdissect.imagetext.small import (
    CONCEPT_WORDS,
    TRANSFORM,
    SyntheticClip,
    SyntheticClipImageText,
    clip_loss,
    label_words,
    load_synthetic_clip,
    save_synthetic_clip,
    synthetic_caption,
    vocabulary_words,
)
from netdissect.imagetext.transforms import resize_center_crop

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "netdissect" / "imagetext" / "weights" / "synthetic_clip.safetensors"
# (seed, image size, share of the training images)
TRAIN_PARTS = ((101, 96, 0.5), (102, 128, 0.25), (103, 224, 0.25))


def make_set(seed: int, size: int, n: int, words: list[str], min_fraction: float = 0.002, batch: int = 500):
    """Images at the model's input size, their captions and multi-hot concept words.

    Returns (images (n, 3, 96, 96) uint8, captions list, present (n, V) bool
    with min_fraction, present_any (n, V) bool for any labelled pixel).
    """
    data = SyntheticConcepts(n=n, seed=seed, size=size)
    index = {w: i for i, w in enumerate(words)}
    images, captions = [], []
    present = np.zeros((n, len(words)), dtype=bool)
    present_any = np.zeros((n, len(words)), dtype=bool)
    for start in range(0, n, batch):
        chunk = []
        for i in range(start, min(n, start + batch)):
            s = data[i]
            chunk.append(s.image)
            text, ws = synthetic_caption(s.pixel_labels, s.image_labels, min_fraction)
            captions.append(text)
            present[i, [index[w] for w in ws]] = True
            labelled = set(np.unique(s.pixel_labels).tolist()) | set(s.image_labels.tolist())
            present_any[i, [index[w] for w in label_words(labelled)]] = True
        x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2)
        images.append(resize_center_crop(x, TRANSFORM.resize, TRANSFORM.crop, interpolation=TRANSFORM.interpolation))
    return torch.cat(images), captions, present, present_any


def sample_texts(rng: np.random.Generator, present: np.ndarray, weight: np.ndarray) -> list[list[int]]:
    """For each image, a bag of its concept words: all (25%), one (35%), or two to five (40%).

    Single words and small sets are drawn with probabilities proportional to
    ``weight`` (rarer words more often), so textures and small parts are
    asked for as often as the colours that are in every image.
    """
    bags = []
    for row in present:
        ws = np.flatnonzero(row)
        u = rng.random()
        if u < 0.25:
            bag = ws
        else:
            k = 1 if u < 0.6 else int(rng.integers(2, 6))
            p = weight[ws] / weight[ws].sum()
            bag = rng.choice(ws, size=min(k, len(ws)), replace=False, p=p)
        bags.append(sorted(int(b) for b in bag))
    return bags


def bags_to_tensors(bags):
    """Word bags -> (flat indices, offsets) for ``EmbeddingBag``."""
    indices = torch.tensor([i for b in bags for i in b], dtype=torch.long)
    offsets = torch.tensor(np.cumsum([0] + [len(b) for b in bags[:-1]]), dtype=torch.long)
    return indices, offsets


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    # average ranks over ties
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def retrieval(sim: torch.Tensor) -> dict:
    """R@1 and R@5 both ways for a square similarity (row i: image i; column i: its caption)."""
    diag = sim.diag()
    i2t = (sim > diag[:, None]).sum(1) + 1  # rank of the own caption (ties: counted in favour)
    t2i = (sim > diag[None, :]).sum(0) + 1
    out = {}
    for name, ranks in (("image_to_caption", i2t), ("caption_to_image", t2i)):
        for k in (1, 5):
            out[f"{name}_r{k}"] = float((ranks <= k).float().mean())
    return out


def evaluate(model: SyntheticClipImageText, images, captions, present_any, words) -> dict:
    """Retrieval between images and their captions, and the AUC of every concept word."""
    emb = torch.cat([model.encode_images(images[i : i + 250]) for i in range(0, len(images), 250)])
    emb = torch.nn.functional.normalize(emb, dim=1)
    cap = torch.nn.functional.normalize(model.encode_text(captions), dim=1)
    out = retrieval(emb @ cap.T)
    wemb = torch.nn.functional.normalize(model.encode_text(words), dim=1)
    scores = (emb @ wemb.T).numpy()
    out["auc"] = {w: auc(scores[:, j], present_any[:, j]) for j, w in enumerate(words)}
    out["auc_by_category"] = {cat: float(np.nanmean([out["auc"][w] for w in ws])) for cat, ws in CONCEPT_WORDS.items()}
    out["auc_mean"] = float(np.nanmean(list(out["auc"].values())))
    return out


def main(argv=None):
    """Train, evaluate on held-out scenes, write the weights; returns the evaluation."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--n-train", type=int, default=24000)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--stem", choices=("patch", "conv"), default="conv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    words = vocabulary_words()

    t0 = time.time()
    parts = [make_set(seed, size, int(round(args.n_train * share)), words) for seed, size, share in TRAIN_PARTS]
    images = torch.cat([p[0] for p in parts])
    present = np.concatenate([p[2] for p in parts])
    t_data = time.time() - t0
    print(f"training set: {len(images)} images in {t_data:.0f} s; "
          f"{present.sum(1).mean():.1f} concept words per image", flush=True)

    net = SyntheticClip(len(words), width=args.width, stem=args.stem).to(memory_format=torch.channels_last)
    decay = [p for n, p in net.named_parameters() if p.dim() > 1 and not n.startswith("words")]
    other = [p for n, p in net.named_parameters() if not (p.dim() > 1 and not n.startswith("words"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr)
    steps_per_epoch = len(images) // args.batch_size
    total = steps_per_epoch * args.epochs
    warmup = min(100, total // 10)

    def schedule(s):
        return (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    present_t = torch.from_numpy(present).float()
    weight = (present.mean(0) + 1e-3) ** -0.7  # draw rare words more often
    t1 = time.time()
    step = 0
    for epoch in range(args.epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(len(images)))
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            x = images[idx]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = TRANSFORM(x).contiguous(memory_format=torch.channels_last)
            bags = sample_texts(rng, present[idx.numpy()], weight)
            bag_hot = torch.zeros(len(idx), len(words))
            for i, bag in enumerate(bags):
                bag_hot[i, bag] = 1.0
            match = ((1 - present_t[idx]) @ bag_hot.T) == 0  # match[i, j]: image i has every word of text j
            loss = clip_loss(net.encode_image(x), net.encode_bags(*bags_to_tensors(bags)), match, net.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
        print(f"epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.3f}, "
              f"temperature {1 / net.logit_scale.exp().item():.4f}, {time.time() - t1:.0f} s", flush=True)
    t_train = time.time() - t1

    args.out.parent.mkdir(parents=True, exist_ok=True)
    net = net.to(memory_format=torch.contiguous_format).eval()
    # evaluate the fp16 weights as shipped
    save_synthetic_clip(net, words, args.out)
    model = load_synthetic_clip(args.out)
    results = {}
    for name, (seed, size, n) in {"heldout96": (201, 96, 1000), "heldout224": (202, 224, 500)}.items():
        ims, caps, _, pany = make_set(seed, size, n, words)
        r = evaluate(model, ims, caps, pany, words)
        results[name] = r
        print(f"{name} ({n} scenes at {size} px): image->caption R@1 {r['image_to_caption_r1']:.3f} "
              f"R@5 {r['image_to_caption_r5']:.3f}; caption->image R@1 {r['caption_to_image_r1']:.3f} "
              f"R@5 {r['caption_to_image_r5']:.3f}; concept AUC mean {r['auc_mean']:.3f} "
              + ", ".join(f"{c} {v:.3f}" for c, v in r["auc_by_category"].items()))
    worst = sorted(results["heldout224"]["auc"].items(), key=lambda kv: kv[1])[:8]
    print("lowest AUC (224 px):", ", ".join(f"{w} {a:.3f}" for w, a in worst))
    print("AUC per concept (96 px / 224 px):", ", ".join(
        f"{w} {results['heldout96']['auc'][w]:.2f}/{results['heldout224']['auc'][w]:.2f}" for w in words))
    summary = {
        "n_train": len(images), "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "width": args.width, "stem": args.stem, "seed": args.seed,
        "data_seconds": round(t_data, 1), "train_seconds": round(t_train, 1),
        **{f"{name}_{k}": round(v, 4) for name, r in results.items() for k, v in r.items() if isinstance(v, float)},
    }
    save_synthetic_clip(net, words, args.out, training=json.dumps(summary))
    print(f"data {t_data:.0f} s, training {t_train:.0f} s; wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return results


if __name__ == "__main__":
    main()
