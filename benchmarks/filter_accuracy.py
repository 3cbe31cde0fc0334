"""The offline text-detector classifier (``ocr``) against the synthetic ground truth.

Generates a fresh synthetic corpus (a seed the thresholds were not chosen on), runs the light
and heavy decisions of ``webssl_cli.data.classifiers.ocr`` on every image, and prints the
confusion matrices, precision/recall, the confusions by kind, and images/s per core (CPU time
of the detector with one onnxruntime thread, median of rounds interleaved over the corpus).

    .venv/bin/python benchmarks/filter_accuracy.py            # 2,000 images, seed 2026, 224 px
    .venv/bin/python benchmarks/filter_accuracy.py --n 3000 --seed 7 --image-size 320

Targets (issue 5): light precision and recall >= 0.90, heavy precision and recall >= 0.80.
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter

os.environ.setdefault("OMP_NUM_THREADS", "1")


def confusion(pairs: list[tuple[bool, bool]]) -> dict[str, int]:
    c = Counter((t, p) for t, p in pairs)
    return {
        "tp": c[(True, True)],
        "fp": c[(False, True)],
        "fn": c[(True, False)],
        "tn": c[(False, False)],
    }


def report(name: str, cm: dict[str, int]) -> tuple[float, float]:
    precision = cm["tp"] / max(1, cm["tp"] + cm["fp"])
    recall = cm["tp"] / max(1, cm["tp"] + cm["fn"])
    print(f"\n{name}: precision {precision:.3f}  recall {recall:.3f}")
    print("                 predicted keep  predicted drop")
    print(f"  truly keep     {cm['tp']:>14}  {cm['fn']:>14}")
    print(f"  truly drop     {cm['fp']:>14}  {cm['tn']:>14}")
    return precision, recall


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument(
        "--rounds", type=int, default=8, help="timing rounds (the corpus split in this many parts)"
    )
    args = ap.parse_args()

    from webssl_cli.data.classifiers import ocr
    from webssl_cli.data.shards import decode_image, iter_shards
    from webssl_cli.data.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = synthesize(
            tmp, n=args.n, seed=args.seed, shard_size=500, image_size=args.image_size
        )
        print(
            f"synthesised {args.n} images ({args.image_size} px, seed {args.seed}) in {time.perf_counter() - t0:.1f} s"
        )
        samples = [(s.meta(), decode_image(s.image_bytes)) for s in iter_shards(paths)]
    detector = ocr.TextDetector(threads=1)
    light: list[tuple[bool, bool]] = []
    heavy: list[tuple[bool, bool]] = []
    by_kind: dict[str, Counter[str]] = {}
    cpu_per_image: list[float] = []
    chunk = max(1, len(samples) // args.rounds)
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        c0 = time.process_time()
        # heavy needs the image as well, for rule lines
        results = [ocr.features(detector(rgb), rgb) for _, rgb in part]
        cpu_per_image.append((time.process_time() - c0) / len(part))
        for (meta, _), f in zip(part, results, strict=True):
            lp = ocr.light_score(f) >= ocr.LIGHT_MIN_BOXES
            hp = ocr.heavy_score(f) >= ocr.HEAVY_THRESHOLD
            light.append((bool(meta["has_text"]), lp))
            heavy.append((bool(meta["is_chart_or_document"]), hp))
            k = by_kind.setdefault(
                meta["kind"] + (f"/{meta['chart']['type']}" if meta["chart"] else ""), Counter()
            )
            k["n"] += 1
            k["light"] += lp
            k["heavy"] += hp

    lp, lr = report("light (has readable text)", confusion(light))
    hp, hr = report("heavy (chart, table or document)", confusion(heavy))
    print("\nby kind: kept by light / kept by heavy")
    for kind, c in sorted(by_kind.items()):
        print(
            f"  {kind:<14} n={c['n']:>5}  light {c['light'] / c['n']:.3f}  heavy {c['heavy'] / c['n']:.3f}"
        )
    med = statistics.median(cpu_per_image)
    print(
        f"\nspeed: {1 / med:.1f} images/s per core (detector + features, 1 thread, CPU time, "
        f"median of {len(cpu_per_image)} rounds; min {1 / max(cpu_per_image):.1f}, max {1 / min(cpu_per_image):.1f})"
    )
    ok = lp >= 0.9 and lr >= 0.9 and hp >= 0.8 and hr >= 0.8
    print("targets (light P,R >= 0.90; heavy P,R >= 0.80):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
