"""Benchmark the Pathfinder generator on a sample and project the full 200K-image set.

    python -m data_prep.bench_pathfinder [--resolution 32] [--num-images 400] [--workers 2] [--repeats 3]

Each repeat generates ``--num-images`` images (``curv_contour_length_14``) into a temporary folder with a
different seed and times the whole command; the median is projected to 200,000 images and set against
the original generator's cost measured on a 2-core x86 machine (reference/lra_data.md §4: about 0.25 s per
32px hard image, 2.8 s per Path-X image, single process). Prints a JSON summary last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from data_prep.pathfinder import generate

ORIGINAL_SECONDS_PER_IMAGE = {32: 0.25, 128: 2.8}  # single process, incl. restarts
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
    original = ORIGINAL_SECONDS_PER_IMAGE.get(args.resolution)
    if original:
        original_wall = original / args.workers  # the original parallelised the same way, one process per core
        summary["original_projected_hours_for_200k"] = round(original_wall * FULL_SET / 3600, 1)
        summary["speedup_vs_original"] = round(original_wall / wall, 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
