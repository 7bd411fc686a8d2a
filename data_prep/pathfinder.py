"""Pathfinder / Path-X generator: the snakes2 algorithm (Linsley et al. 2018; drewlinsley/pathfinder snakes2), fast.

    python -m data_prep.pathfinder --out-dir DIR --resolution 32|64|128|256 \
        --difficulty curv_baseline|curv_contour_length_9|curv_contour_length_14 --num-images N [--seed S] [--workers K]

writes ``DIR/pathfinder<R>/<difficulty>/imgs/<k>/sample_<i>.png`` (8-bit grayscale) and
``metadata/<k>.npy`` (text lines, as released: ``imgs/<k> sample_<i>.png <i> <label> <continuity>
<contour_length> <distractor_length> <paddle_length> <paddle_thickness> <margin> <n_paddle_contrasts>``).

The algorithm is the original's, step for step: paddles drawn with PIL at ``antialias`` scale and
LANCZOS-downsampled after legacy ``bytescale``; soft masks from a disk dilation; a target pair seeded
``seed_distance`` apart and grown alternately with continuity-weighted turns on a circle of candidate
pixels, any failure restarting the pair; distractor snakes placed while space remains; two markers,
on the same snake for label 1; min-max ``bytescale`` to uint8. The quirks that shape the distribution
are kept: ``cv2.dilate`` ignores pixels outside the image and leaves a pixel with no sample at -DBL_MAX
(which fails a seed attempt), the seed kernel holds only the mask's saturated pixels, the previous
paddle's mask joins the occupancy one step late, and the first target snake's last paddle never does.

Why it is fast (same distribution): paddle/mask stamps are computed once per (orientation, margin)
and cached, seed kernels and the first seed's free pixels once per orientation; every mask test reads
only the stamp's window or the candidate pixels instead of the whole image; batches of
``--images-per-batch`` images run in parallel, each seeded from (seed, resolution, difficulty, batch),
so output is deterministic whatever the worker count.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data_prep.listops import generator_lock
from lra_bench.errors import RunFolderBusy

DIFFICULTIES = {"curv_baseline": 6, "curv_contour_length_9": 9, "curv_contour_length_14": 14}


@dataclass(frozen=True)
class PathfinderParams:
    """Generator settings of one resolution (LRA's ``lra_benchmarks/data/pathfinder.py`` docstrings)."""

    resolution: int
    padding: int
    antialias: int
    margins: tuple[int, ...]
    paddle_length: int
    paddle_thickness: float
    marker_radius: float
    seed_distance: int
    continuity: float
    distractor_base: int  # num_distractor_snakes = distractor_base // distractor_length
    snake_contrasts: tuple[float, ...]
    paddle_contrasts: tuple[float, ...]
    contour_length: int = 14
    distractor_retrials: int = 4
    paddle_retrials: int = 2

    @property
    def distractor_length(self) -> int:
        return self.contour_length // 3  # Python 2 integer division in the original

    @property
    def num_distractor_snakes(self) -> int:
        return self.distractor_base // self.distractor_length


# Values not overridden by LRA keep snakes2_wrapper's defaults (paddle length 5, padding 22, seed distance 27,
# paddle contrast 1.0); the antialias scale's final value is 2 everywhere.
RESOLUTIONS = {
    32: PathfinderParams(32, 1, 2, (1,), 2, 0.5, 1.5, 7, 1.0, 20, (2.0,), (0.75,)),
    64: PathfinderParams(64, 1, 2, (1,), 5, 1, 2.5, 12, 1.8, 22, (0.8,), (1.0,)),
    128: PathfinderParams(128, 1, 2, (2, 3), 5, 1.5, 3, 20, 1.8, 35, (0.9,), (1.0,)),
    256: PathfinderParams(256, 22, 2, (3,), 5, 2, 5, 27, 1.8, 30, (1.0,), (1.0,)),
}


def params_for(resolution: int, difficulty: str) -> PathfinderParams:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"--resolution must be one of {sorted(RESOLUTIONS)}, got {resolution}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"--difficulty must be one of {list(DIFFICULTIES)}, got {difficulty!r}")
    return replace(RESOLUTIONS[resolution], contour_length=DIFFICULTIES[difficulty])


# --- image primitives (legacy scipy.misc semantics) ---------------------------------------------

def bytescale(data: np.ndarray) -> np.ndarray:
    """Legacy ``scipy.misc.bytescale``: min-max to 0..255, ``+ 0.4999``, cast to uint8."""
    lo, hi = float(data.min()), float(data.max())
    span = hi - lo if hi != lo else 1.0
    return ((data - lo) * (255.0 / span) + 0.4999).clip(0, 255).astype(np.uint8)


def lanczos_resize(data: np.ndarray, size: int) -> np.ndarray:
    """Legacy ``scipy.misc.imresize(..., interp='lanczos')``: bytescale floats, PIL LANCZOS, uint8 out."""
    if data.dtype != np.uint8:
        data = bytescale(data)
    return np.asarray(Image.fromarray(data, mode="L").resize((size, size), Image.LANCZOS))


def disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def dilate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``cv2.dilate`` with its defaults: max over the kernel's nonzero offsets around the centre anchor;
    samples outside the image are ignored, and a pixel with none gets -inf (OpenCV: -DBL_MAX)."""
    h, w = image.shape
    ay, ax = (kernel.shape[0] - 1) // 2, (kernel.shape[1] - 1) // 2
    out = np.full((h, w), -np.inf)
    for ky, kx in zip(*np.nonzero(kernel)):
        dy, dx = ky - ay, kx - ax  # out[y, x] takes image[y + dy, x + dx]
        ys, ye = max(0, -dy), min(h, h - dy)
        xs, xe = max(0, -dx), min(w, w - dx)
        if ys < ye and xs < xe:
            np.maximum(out[ys:ye, xs:xe], image[ys + dy : ye + dy, xs + dx : xe + dx], out=out[ys:ye, xs:xe])
    return out


def translate(coord: tuple[int, int], orientation: float, dist: float) -> tuple[int, int]:
    """The original's ``translate_coord``: ceil of the displaced (y, x)."""
    return (int(math.ceil(coord[0] + dist * math.sin(orientation))), int(math.ceil(coord[1] + dist * math.cos(orientation))))


def flip_by_pi(orientation: float) -> float:
    return orientation + math.pi if orientation < 0 else orientation - math.pi


@dataclass
class Stamp:
    """A paddle drawn at the origin: line and mask, (2 half + 1)^2, centred on the paddle's start."""

    half: int
    line: np.ndarray  # float64 in [0, 1], before contrast
    mask: np.ndarray  # float32 in [0, 1]


class StampCache:
    """Paddle stamps per (orientation, margin): the original redraws each one (~2/3 of its time)."""

    def __init__(self, params: PathfinderParams):
        self.p = params
        self._stamps: dict[tuple[float, int], Stamp] = {}
        self._kernels: dict[tuple[float, int], np.ndarray] = {}
        self._seed_free: dict[tuple[float, int], tuple[np.ndarray, np.ndarray] | None] = {}
        self._big_disks = {m: disk(m * params.antialias) for m in params.margins}

    def stamp(self, orientation: float, margin: int) -> Stamp:
        key = (orientation, margin)
        s = self._stamps.get(key)
        if s is None:
            p, aa = self.p, self.p.antialias
            half = p.paddle_length + int(math.ceil(p.paddle_thickness)) + margin
            blown_size = half * 2 * aa + 1
            centre = half * aa
            head = translate((centre, centre), orientation, p.paddle_length * aa)
            canvas = Image.new("F", (blown_size, blown_size), "black")
            ImageDraw.Draw(canvas).line([(centre, centre), (head[1], head[0])], fill="white",
                                        width=int(round(p.paddle_thickness * aa)))
            blown = np.asarray(canvas)
            size = half * 2 + 1
            line = lanczos_resize(blown, size).astype(np.float64) / 255
            blown_mask = dilate(blown, self._big_disks[margin]).astype(np.uint8)
            mask = (lanczos_resize(blown_mask, size).astype(np.float64) / 255).astype(np.float32)
            s = self._stamps[key] = Stamp(half, line, mask)
        return s

    def seed_kernel(self, orientation: float, margin: int) -> np.ndarray:
        """The head-centric kernel of ``seed_snake``: the paddle's mask drawn at (L+m+1, L+m+1) in a
        (2(L+m)+1)^2 image, keeping only saturated pixels (the original's ``.astype(uint8)``)."""
        key = (orientation, margin)
        k = self._kernels.get(key)
        if k is None:
            size = (self.p.paddle_length + margin) * 2 + 1
            head = self.p.paddle_length + margin + 1
            canvas = np.zeros((size, size), dtype=np.float32)
            paste_max(canvas, self.stamp(orientation, margin), (head, head), "mask", 1.0)
            k = self._kernels[key] = canvas.astype(np.uint8)
        return k

    def target_seed_free(self, orientation: float, margin: int, lined: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Free pixels for the first target seed: they depend only on the orientation (the mask is the fixed
        border band), so they are computed once. None = the dilation reached -inf (the attempt fails)."""
        key = (orientation, margin)
        if key not in self._seed_free:
            dilated = dilate(lined, self.seed_kernel(orientation, margin))
            self._seed_free[key] = None if dilated.min() < 0 else np.nonzero(np.ceil(dilated - 0.3) == 0)
        return self._seed_free[key]


def window(shape: tuple[int, int], centre: tuple[int, int], half: int) -> tuple[slice, slice, slice, slice] | None:
    """Image and stamp slices of a (2 half + 1)^2 stamp centred at ``centre``, clipped to the image."""
    h, w = shape
    y0, x0 = centre[0] - half, centre[1] - half
    iy0, ix0, iy1, ix1 = max(y0, 0), max(x0, 0), min(centre[0] + half, h - 1), min(centre[1] + half, w - 1)
    if iy0 > iy1 or ix0 > ix1:
        return None
    return slice(iy0, iy1 + 1), slice(ix0, ix1 + 1), slice(iy0 - y0, iy1 - y0 + 1), slice(ix0 - x0, ix1 - x0 + 1)


def paste_max(target: np.ndarray, stamp: Stamp, centre: tuple[int, int], which: str, contrast: float) -> None:
    """target = max(target, stamp placed at centre): the original's full-size l_im / m_im, windowed."""
    win = window(target.shape, centre, stamp.half)
    if win is None:
        return
    ys, xs, sy, sx = win
    src = stamp.line[sy, sx] * contrast if which == "line" else stamp.mask[sy, sx]
    np.maximum(target[ys, xs], src.astype(np.float32), out=target[ys, xs])


@dataclass
class Segment:
    """A drawn paddle: where its stamp sits and with what contrast (its full-size images stay implicit)."""

    stamp: Stamp
    centre: tuple[int, int]
    contrast: float


class SnakeDrawer:
    """Draws one image at a time with one RNG; see the module docstring for the algorithm."""

    def __init__(self, params: PathfinderParams, rng: random.Random):
        self.p = params
        self.rng = rng
        self.stamps = StampCache(params)
        n = params.resolution
        self.shape = (n, n)
        self.border = np.zeros(self.shape)
        pad = params.padding
        self.border[:pad, :], self.border[-pad:, :], self.border[:, :pad], self.border[:, -pad:] = 1, 1, 1, 1
        sd2 = params.seed_distance * 2
        self.target_lined = self.border.copy()
        self.target_lined[:sd2, :], self.target_lined[n - sd2 :, :] = 1, 1
        self.target_lined[:, :sd2], self.target_lined[:, n - sd2 :] = 1, 1
        self._rings: dict[tuple[tuple[int, int], int], tuple | None] = {}
        self._small_disks = {m: np.argwhere(disk(m)) - m for m in params.margins}
        self.pad = max(params.margins)
        self.framed_border = np.pad(self.border, self.pad, constant_values=-np.inf)
        framed_width = n + 2 * self.pad
        self._disk_flat = {m: (o[:, 0] * framed_width + o[:, 1])[None, :] for m, o in self._small_disks.items()}
        self.restarts = 0

    # -- candidate ring of extend_snake --------------------------------------------------------
    def ring(self, pivot: tuple[int, int], margin: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The candidate pixels of ``get_coords_cmf`` around ``pivot``, as the original computes them (float
        samples one pixel of arc apart on radius L + m, out-of-bounds dropped, int(), unique in (y, x) order),
        their orientations, and their flat indices in the framed mask.
        They depend only on (pivot, margin), so they are computed once."""
        key = (pivot, margin)
        if key in self._rings:
            return self._rings[key]
        h, w = self.shape
        radius = self.p.paddle_length + margin
        angles = np.arange(0, 360, 360.0 / (2 * radius * np.pi)) * np.pi / 180
        fy, fx = pivot[0] + radius * np.sin(angles), pivot[1] + radius * np.cos(angles)
        ok = (fy < h) & (fy >= 0) & (fx < w) & (fx >= 0)
        found = None
        if ok.any():
            keys = np.unique(fy[ok].astype(np.int64) * w + fx[ok].astype(np.int64))  # sorts as (y, x)
            ys, xs = keys // w, keys % w
            orient = np.arctan2(ys - pivot[0], xs - pivot[1])
            found = (ys, xs, orient, ((ys + self.pad) * (w + 2 * self.pad) + xs + self.pad)[:, None])
        self._rings[key] = found
        return found

    def candidates(self, pivot: tuple[int, int], orientation: float, mask: np.ndarray, margin: int):
        """``get_coords_cmf`` on the margin-dilated mask, read only at the candidate pixels (the padding
        around the mask is -inf: cv2.dilate ignores samples outside the image)."""
        ring = self.ring(pivot, margin)
        if ring is None:
            return None
        ys, xs, orient, centres = ring
        vals = mask.base.take(centres + self._disk_flat[margin]).max(axis=1)
        delta = np.abs(orient - orientation)
        delta = np.minimum(np.minimum(delta, 2 * np.pi - delta) * self.p.continuity, 0.5 * np.pi)
        pmf = (1 - vals) * np.maximum(np.cos(delta), 0) ** 2
        total = pmf.sum()
        if total < 1e-4:
            return None
        return ys, xs, orient, np.cumsum(pmf / total)

    def new_mask(self) -> np.ndarray:
        """An occupancy mask (float64, the padding border set to 1) viewed inside a -inf frame."""
        framed = self.framed_border.copy()
        return framed[self.pad : self.pad + self.shape[0], self.pad : self.pad + self.shape[1]]

    # -- snakes ---------------------------------------------------------------------------------
    def extend(self, last_pivot, last_orientation, last_segment: Segment, image, mask, margin, contrast):
        """``extend_snake``: returns (new segment, pivot, orientation, head) or None; updates image and mask."""
        p = self.p
        pivot = translate(last_pivot, last_orientation, p.paddle_length + 2 * margin)
        found = self.candidates(pivot, last_orientation, mask, margin)
        if found is None:
            return None
        ys, xs, orient, cmf = found
        for _ in range(p.paddle_retrials + 1):
            idx = int(cmf.searchsorted(self.rng.random(), side="right"))  # = argmax(cmf - r > 0)
            if idx == len(cmf):  # r beyond a cmf that sums to just under 1: argmax of all-False is 0
                idx = 0
            head = (int(ys[idx]), int(xs[idx]))
            stamp = self.stamps.stamp(flip_by_pi(float(orient[idx])), margin)
            win = window(self.shape, head, stamp.half)
            ys_, xs_, sy, sx = win
            if (mask[ys_, xs_] + stamp.mask[sy, sx]).max() < 1.8:
                paste_max(image, stamp, head, "line", contrast)
                paste_max(mask, last_segment.stamp, last_segment.centre, "mask", 1.0)  # one step late
                return Segment(stamp, head, contrast), pivot, float(orient[idx]), head
        return None

    def random_orientation(self) -> float:
        return self.rng.randrange(-180, 180) * math.pi / 180

    def two_snakes(self, margin: int):
        """``two_snakes``: the target pair, or None (the caller restarts)."""
        p, rng, n = self.p, self.rng, self.p.resolution
        mus = list(p.snake_contrasts) * 2
        rng.shuffle(mus)
        mus = mus[:2]
        images = [np.zeros(self.shape, np.float32), np.zeros(self.shape, np.float32)]
        mask = self.new_mask()  # float64, as the original's: mask + paddle sums at the 1.8 test in float64

        def paddle_contrast(draw: bool) -> float:
            return p.paddle_contrasts[rng.randrange(len(p.paddle_contrasts)) if draw else 0]

        def inside(c: tuple[int, int]) -> bool:
            return 0 <= c[0] < n and 0 <= c[1] < n

        # first seed: a free pixel of the border band dilated by the paddle's head-centric kernel
        contrast = paddle_contrast(len(p.paddle_contrasts) > 1) * mus[0]
        for _ in range(p.paddle_retrials + 1):
            theta1 = self.random_orientation()
            free = self.stamps.target_seed_free(theta1, margin, self.target_lined)
            if free is None or len(free[0]) == 0:
                return None
            k = rng.randrange(len(free[0]))
            tail1 = (int(free[0][k]), int(free[1][k]))
            head1 = translate(tail1, theta1, p.paddle_length)
            pivot1 = translate(head1, flip_by_pi(theta1), p.paddle_length + margin)
            if inside(head1) and inside(pivot1):
                break
        else:
            return None
        seg1 = Segment(self.stamps.stamp(theta1, margin), tail1, contrast)
        paste_max(images[0], seg1.stamp, tail1, "line", contrast)

        # second seed: seed_distance away from the first tail, no occupancy test
        contrast = paddle_contrast(len(p.paddle_contrasts) > 1) * mus[1]
        for _ in range(p.paddle_retrials + 1):
            theta2 = self.random_orientation()
            phi = rng.randrange(0, 360) * math.pi / 180
            tail2 = (int(round(tail1[0] + p.seed_distance * math.sin(phi))), int(round(tail1[1] + p.seed_distance * math.cos(phi))))
            head2 = translate(tail2, theta2, p.paddle_length)
            pivot2 = translate(head2, flip_by_pi(theta2), p.paddle_length + margin)
            if inside(head2) and inside(pivot2):
                break
        else:
            return None
        seg2 = Segment(self.stamps.stamp(theta2, margin), tail2, contrast)
        paste_max(images[1], seg2.stamp, tail2, "line", contrast)

        segments, pivots, orientations = [seg1, seg2], [pivot1, pivot2], [theta1, theta2]
        terminal = [tail1, tail2]
        paddles: list[list[tuple[int, int]]] = [[tail1], [tail2]]  # where each paddle starts
        for _ in range(p.contour_length - 1):
            c = p.paddle_contrasts[rng.randrange(len(p.paddle_contrasts))]
            for s in (0, 1):
                step = self.extend(pivots[s], orientations[s], segments[s], images[s], mask, margin, c * mus[s])
                if step is None:
                    return None
                segments[s], pivots[s], orientations[s], terminal[s] = step
                paddles[s].append(terminal[s])
        paste_max(mask, segments[1].stamp, segments[1].centre, "mask", 1.0)  # only the second snake's last paddle
        return images, mask, [tail1, tail2], terminal, paddles

    def seed_snake(self, image, mask, margin, contrast):
        """``seed_snake`` for a distractor: (segment, pivot, orientation) or None."""
        p, rng, n = self.p, self.rng, self.p.resolution
        lined = mask.astype(np.float64)
        lined[0, :], lined[-1, :], lined[:, 0], lined[:, -1] = 1, 1, 1, 1
        raw_free = int((np.ceil(mask - 0.3) == 0).sum()) if mask.min() >= 0 else 0
        if raw_free / (n * n) < 0.01:  # stop_with_availability: under 1% of the image is free
            return None
        for _ in range(p.paddle_retrials + 1):
            theta = self.random_orientation()
            dilated = dilate(lined, self.stamps.seed_kernel(theta, margin))
            if dilated.min() < 0:
                return None
            free = np.nonzero(np.ceil(dilated - 0.3) == 0)
            if len(free[0]) == 0:
                return None
            k = rng.randrange(len(free[0]))
            tail = (int(free[0][k]), int(free[1][k]))
            head = translate(tail, theta, p.paddle_length)
            pivot = translate(head, flip_by_pi(theta), p.paddle_length + margin)
            if 0 <= head[0] < n and 0 <= head[1] < n and 0 <= pivot[0] < n and 0 <= pivot[1] < n:
                seg = Segment(self.stamps.stamp(theta, margin), tail, contrast)
                paste_max(image, seg.stamp, tail, "line", contrast)
                return seg, pivot, theta
        return None

    def distractor(self, image, mask, margin) -> bool:
        """``make_snake`` for one distractor: draws it into image/mask and returns True, or leaves both as they were."""
        p, rng = self.p, self.rng
        work_image = image.copy()
        work_mask = mask.base.copy()[self.pad : self.pad + self.shape[0], self.pad : self.pad + self.shape[1]]
        contrast = p.snake_contrasts[rng.randrange(len(p.snake_contrasts))]
        seeded = self.seed_snake(work_image, work_mask, margin, contrast)
        if seeded is None:
            return False
        segment, pivot, theta = seeded
        for _ in range(p.distractor_length - 1):
            contrast = p.snake_contrasts[rng.randrange(len(p.snake_contrasts))]
            step = self.extend(pivot, theta, segment, work_image, work_mask, margin, contrast)
            if step is None:
                return False
            segment, pivot, theta, _ = step
        paste_max(work_mask, segment.stamp, segment.centre, "mask", 1.0)
        image[:], mask[:] = work_image, work_mask
        return True

    def marker(self, coord: tuple[int, int]) -> np.ndarray:
        """``draw_circle``: an antialiased disk of ``marker_radius`` at a pixel, uint8."""
        n, aa = self.p.resolution, self.p.antialias
        y, x = np.ogrid[-coord[0] * aa : (n - coord[0]) * aa, -coord[1] * aa : (n - coord[1]) * aa]
        big = (x * x + y * y <= (self.p.marker_radius * aa) ** 2).astype(np.float64)
        return lanczos_resize(big, n)

    def sample(self) -> Sample:
        """One image with what the tests check: both target snakes, their tips, and where the markers went."""
        p, rng = self.p, self.rng
        label = rng.randrange(2)
        margin = p.margins[rng.randrange(len(p.margins))]
        while True:
            pair = self.two_snakes(margin)
            if pair is not None:
                break
            self.restarts += 1
        images, mask, origins, terminals, paddles = pair
        image = np.maximum(images[0], images[1])
        placed = 0
        for _ in range(p.num_distractor_snakes):
            for _ in range(p.distractor_retrials + 1):
                if self.distractor(image, mask, margin):
                    placed += 1
                    break
        origin = rng.randrange(2)
        end = origin if label == 1 else 1 - origin
        markers = np.maximum(self.marker(origins[origin]), self.marker(terminals[end])).astype(np.float64) / 255
        marked = np.maximum(image.astype(np.float64), markers)
        return Sample(bytescale(marked), label, margin, placed, images, origins, terminals, origin, end, paddles)


@dataclass
class Sample:
    image: np.ndarray  # uint8, as saved
    label: int  # 1 = both markers on one snake
    margin: int
    distractors: int  # distractor snakes placed
    snakes: list[np.ndarray]  # the two target snakes alone (float, before bytescale)
    origins: list[tuple[int, int]]  # seed tails
    terminals: list[tuple[int, int]]  # heads of the last paddles
    origin_snake: int  # the snake carrying the origin marker
    terminal_snake: int  # the snake carrying the terminal marker
    paddles: list[list[tuple[int, int]]]  # per target snake, where each paddle starts


# --- batches and CLI ----------------------------------------------------------------------------

def metadata_line(k: int, i: int, label: int, p: PathfinderParams, margin: int) -> str:
    return (f"imgs/{k} sample_{i}.png {i} {label} {p.continuity} {p.contour_length} {p.distractor_length} "
            f"{p.paddle_length} {p.paddle_thickness} {margin} {len(p.paddle_contrasts)}")


def generate_batch(args: tuple[Path, PathfinderParams, str, int, int, int]) -> dict[str, int]:
    """Write batch ``k`` (images ``imgs/k/sample_*.png`` and ``metadata/k.npy``); deterministic in its seed."""
    root, params, difficulty, seed, k, count = args
    drawer = SnakeDrawer(params, random.Random(f"{seed}:{params.resolution}:{difficulty}:{k}"))
    folder = root / "imgs" / str(k)
    folder.mkdir(parents=True, exist_ok=True)
    lines, labels, placed = [], 0, 0
    for i in range(count):
        sample = drawer.sample()
        Image.fromarray(sample.image, mode="L").save(folder / f"sample_{i}.png")
        lines.append(metadata_line(k, i, sample.label, params, sample.margin))
        labels += sample.label
        placed += sample.distractors
    meta = root / "metadata" / f"{k}.npy"
    tmp = meta.with_name(meta.name + ".partial")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, meta)  # the metadata file is the batch's completion marker
    return {"images": count, "label1": labels, "restarts": drawer.restarts, "distractors": placed}


def generate(out_dir: str | os.PathLike, resolution: int, difficulty: str, num_images: int, seed: int = 0,
             workers: int = 1, images_per_batch: int = 1000, progress: bool = True) -> dict[str, int]:
    """Write ``num_images`` images under ``out_dir/pathfinder<R>/<difficulty>``; batches already written are kept.

    The folder is locked while it is written: a second generator on it (images written in place, so another seed
    would mix its PNGs with this one's metadata) stops with ``RunFolderBusy`` naming the first."""
    params = params_for(resolution, difficulty)
    if num_images < 1 or images_per_batch < 1:
        raise ValueError("--num-images and --images-per-batch must be >= 1")
    root = Path(out_dir) / f"pathfinder{resolution}" / difficulty
    with generator_lock(root):
        return _generate(root, params, difficulty, num_images, seed, workers, images_per_batch, progress)


def _generate(root: Path, params: PathfinderParams, difficulty: str, num_images: int, seed: int, workers: int,
              images_per_batch: int, progress: bool) -> dict[str, int]:
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    jobs = []
    for k, start in enumerate(range(0, num_images, images_per_batch)):
        if not (root / "metadata" / f"{k}.npy").exists():
            jobs.append((root, params, difficulty, seed, k, min(images_per_batch, num_images - start)))
    totals = {"images": 0, "label1": 0, "restarts": 0, "distractors": 0}
    bar = _Progress(sum(j[-1] for j in jobs)) if progress and jobs else None
    pool = mp.get_context("fork" if sys.platform != "win32" else "spawn").Pool(workers) if workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.imap_unordered(generate_batch, jobs) if pool else map(generate_batch, jobs)
        for stats in results:
            for key in totals:
                totals[key] += stats[key]
            if bar:
                bar.update(totals["images"])
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if bar:
            bar.close()
    return totals


class _Progress:
    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self._p = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self._p.start()
        self._task = self._p.add_task("Pathfinder images", total=total)

    def update(self, done: int) -> None:
        self._p.update(self._task, completed=done)

    def close(self) -> None:
        self._p.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep.pathfinder", description="Generate Pathfinder / Path-X in the LRA release layout.")
    p.add_argument("--out-dir", required=True, help="data root: writes pathfinder<R>/<difficulty>/ below it")
    p.add_argument("--resolution", type=int, default=32, choices=sorted(RESOLUTIONS), help="32 = Pathfinder, 128 = Path-X")
    p.add_argument("--difficulty", default="curv_contour_length_14", choices=list(DIFFICULTIES))
    p.add_argument("--num-images", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--images-per-batch", type=int, default=1000, help="images per imgs/<k>/ folder and metadata file")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        print(f"data_prep.pathfinder: --workers must be >= 1 (got {args.workers})", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        stats = generate(args.out_dir, args.resolution, args.difficulty, args.num_images, args.seed, args.workers,
                         args.images_per_batch, progress=not args.quiet)
    except (ValueError, RunFolderBusy) as e:
        print(f"data_prep.pathfinder: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    n = max(stats["images"], 1)
    print(f"wrote {stats['images']} images to {Path(args.out_dir) / f'pathfinder{args.resolution}' / args.difficulty} "
          f"in {elapsed:.1f} s ({1000 * elapsed / n:.1f} ms/image wall); label 1: {stats['label1'] / n:.1%}; "
          f"pair restarts/image: {stats['restarts'] / n:.0f}; distractors/image: {stats['distractors'] / n:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
