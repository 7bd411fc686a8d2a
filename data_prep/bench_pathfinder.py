"""Benchmark the Pathfinder generator on a sample and project the full 200K-image set.

    python -m data_prep.bench_pathfinder [--resolution 32] [--num-images 400] [--workers 2] [--repeats 3]

Each repeat generates ``--num-images`` images (``curv_contour_length_14``) into a temporary folder with a
different seed and times the whole command; the median is projected to 200,000 images. No speed-up against
the original generator (drewlinsley/pathfinder ``snakes2``, Python 2) is printed: it does not run here, and a
ratio against a figure measured on another day is not a measurement. Prints a JSON summary last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from data_prep.pathfinder import generate

FULL_SET = 200_000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.bench_pathfinder", description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=32, choices=(32, 64, 128, 256))
    p.add_argument("--num-images", type=int, default=400)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    per_image, stats = [], {}
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            stats = generate(out, args.resolution, "curv_contour_length_14", args.num_images, seed=100 + r,
                             workers=args.workers, images_per_batch=max(1, args.num_images // (4 * args.workers)), progress=False)
            elapsed = time.perf_counter() - start
        per_image.append(elapsed / args.num_images)
        print(f"repeat {r}: {elapsed:.1f} s for {args.num_images} images = {1000 * per_image[-1]:.1f} ms/image (wall, "
              f"{args.workers} workers); restarts/image {stats['restarts'] / args.num_images:.0f}", flush=True)
    wall = statistics.median(per_image)
    summary = {
        "resolution": args.resolution, "workers": args.workers, "images": args.num_images, "repeats": args.repeats,
        "median_ms_per_image_wall": round(1000 * wall, 2),
        "projected_hours_for_200k": round(wall * FULL_SET / 3600, 2),
        "cpus": os.cpu_count(),
    }
    summary["speedup_vs_original"] = "reference not run"
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
