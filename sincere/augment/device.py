"""SupCon's two-view augmentation as batched tensor ops on the training device
(``data.pipeline=device``), the twin of :mod:`sincere.augment.pil`.

The same chain as the PIL pipeline runs on a whole batch of uint8 images at once, on whatever
device holds them, with every random parameter drawn **per view** (torchvision's v2 transforms
draw one set per call, i.e. per batch, which would give every image of a batch the same crop).
:meth:`TwoViewAugment.sample_params` draws them, one named step per torchvision transform:

- crop (``RandomResizedCrop.get_params``, vectorised in :func:`sample_crop_params`): area fraction
  uniform in ``scale``, log aspect ratio uniform in ``log(ratio)``, integer width/height rounded
  half to even, the first of 10 tries that fits, else torchvision's central fallback crop;
  top-left uniform over the positions where the crop fits.
- flip (``RandomHorizontalFlip``): a coin per view.
- colour jitter (``RandomApply([ColorJitter])``): a coin per view, brightness, contrast,
  saturation and hue factors from torchvision's ranges (``[max(0, 1-b), 1+b]``, hue ``[-h, h]``)
  and a per-view random order (a uniform permutation of the four, as ``ColorJitter.get_params``).
- grayscale (``RandomGrayscale``): a coin per view.

:meth:`TwoViewAugment.apply` then runs the steps of the same names with the batched ops of
:mod:`sincere.augment.ops`: resized crop and flip in one resampling, the colour stage, and
normalisation with the dataset's mean and std. On 1-channel images PIL's saturation and hue are
no-ops, so only brightness and contrast act (in their drawn order), and grayscale is a no-op.

All random numbers come from one CPU ``torch.Generator`` (or the global CPU RNG), so a seed gives
the same views on every device. The colour stage runs each operation only on the views that
take it: before each of the four jitter steps (and grayscale) the views are rearranged with one
gather so that those groups are contiguous, and the operations run in place on slices (a
:class:`ColourPlan`). The rearrangements are planned on the CPU and copied to the device once per
batch, so nothing waits on the device. Everything runs in fp32 with autocast off. On a CPU the
intermediates live in buffers kept between batches (fresh allocations page-fault, which costs
more than the arithmetic), so one :class:`TwoViewAugment` must not be called from two threads at
once; the returned views are always a fresh tensor.

The loader that feeds a training loop from this augmentation is
:class:`sincere.loaders.DeviceTwoViewLoader`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import torch

from sincere.augment.ops import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    JITTER_OPS,
    N_JITTER_OPS,
    SATURATION,
    check_images,
    resized_crop_buffered,
    rgb_to_gray,
)

# Codes of what a view does in one step of the colour stage: one of the four jitter operations
# (BRIGHTNESS..HUE), SKIP (nothing in this step) or GRAYSCALE. Views are sorted by code, so the
# codes are small consecutive integers.
SKIP = 4
GRAYSCALE = 5
N_CODES = 6


# ---------------------------------------------------------------------------------------------
# Random parameters (drawn on the CPU)
# ---------------------------------------------------------------------------------------------


def check_generator(generator: Optional[torch.Generator]) -> None:
    """Raise a ValueError unless ``generator`` is None (the global RNG) or a CPU generator."""
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"the augmentation's generator must be a CPU torch.Generator (got one on "
                         f"{generator.device}); parameters are drawn on the CPU so that a seed "
                         "gives the same views on every device: pass torch.Generator()")


def sample_crop_params(n: int, height: int, width: int,
                       scale: Sequence[float] = (0.08, 1.0),
                       ratio: Sequence[float] = (3 / 4, 4 / 3),
                       generator: Optional[torch.Generator] = None,
                       tries: int = 10) -> torch.Tensor:
    """``n`` crops of an ``height`` x ``width`` image with torchvision's
    ``RandomResizedCrop.get_params`` rule, each drawn independently.

    Returns an int64 (n, 4) tensor of (top, left, crop height, crop width)."""
    check_generator(generator)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive; got {height}x{width}")
    h, w, none_fit = _crop_sizes(n, height, width, scale, ratio, generator, tries)
    u_top = torch.rand(n, generator=generator, dtype=torch.float64)
    u_left = torch.rand(n, generator=generator, dtype=torch.float64)
    top = torch.floor(u_top * (height - h + 1)).long()     # uniform over the positions that fit
    left = torch.floor(u_left * (width - w + 1)).long()
    fh, fw = _fallback_size(height, width, ratio)
    h = torch.where(none_fit, fh, h)
    w = torch.where(none_fit, fw, w)
    top = torch.where(none_fit, (height - fh) // 2, top)
    left = torch.where(none_fit, (width - fw) // 2, left)
    return torch.stack([top, left, h, w], dim=1)


def _crop_sizes(n: int, height: int, width: int, scale, ratio, generator, tries: int):
    """``RandomResizedCrop.get_params``' size rule for ``n`` crops at once: ``tries`` draws each
    of an area fraction uniform in ``scale`` and a log aspect ratio uniform in ``log(ratio)``,
    width and height rounded half to even, the first try that fits. Returns height, width (n,)
    int64 and none_fit (n,) bool (no try fits: the caller takes :func:`_fallback_size`)."""
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0])
                     * torch.rand(n, tries, generator=generator, dtype=torch.float64))
    aspect = torch.exp(log_lo + (log_hi - log_lo)
                       * torch.rand(n, tries, generator=generator, dtype=torch.float64))
    w = torch.round(torch.sqrt(target * aspect)).long()     # round half to even, as Python's
    h = torch.round(torch.sqrt(target / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # the first try that fits
    return h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1), ~fits.any(dim=1)


def _fallback_size(height: int, width: int, ratio) -> tuple[int, int]:
    """torchvision's crop when no try fits: the whole image cut to the nearest allowed aspect
    ratio (the caller centres it). Returns (height, width)."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


@dataclass
class AugmentParams:
    """Every random choice for ``n`` views (CPU tensors)."""
    crops: torch.Tensor      # (n, 4) int64: top, left, height, width
    flip: torch.Tensor       # (n,) bool
    jitter: torch.Tensor     # (n,) bool: colour jitter applied
    order: torch.Tensor      # (n, 4) int64: the jitter operations in the order applied
    factors: torch.Tensor    # (n, 4) float32: brightness, contrast, saturation, hue
    gray: torch.Tensor       # (n,) bool

    def __len__(self) -> int:
        return len(self.flip)


@dataclass
class ColourPlan:
    """The colour stage of one batch, planned on the CPU. Step i runs with the views arranged as
    ``arrangements[i]`` (the view at each position), so that the views taking each operation are
    contiguous: ``slices[i]`` lists them as (code, start, stop) and ``factors[i]`` holds the
    factor at each position. Steps: jitter steps 1-4 (each view's k-th operation), then
    grayscale; a step in which no view does anything is left out."""
    slices: list = field(default_factory=list)
    factors: list = field(default_factory=list)
    arrangements: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.slices)

    def first(self, n: int) -> torch.Tensor:
        """The arrangement of the first step (the crop writes the views in it)."""
        return self.arrangements[0] if self.arrangements else torch.arange(n)

    def to_device(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(moves, factors), each (steps, n) and copied to ``device`` in one go: ``moves[i]``
        gathers step i's arrangement into step i + 1's, the last one back to the views' own
        order."""
        arrangements, n_steps = self.arrangements, len(self)
        moves = torch.cat([torch.argsort(arrangements[i])[arrangements[i + 1]]
                           for i in range(n_steps - 1)]
                          + [torch.argsort(arrangements[-1])])
        moves = moves.to(device, non_blocking=True).view(n_steps, len(arrangements[0]))
        factors = torch.stack(self.factors).to(device, non_blocking=True)
        return moves, factors


# ---------------------------------------------------------------------------------------------
# The two-view augmentation
# ---------------------------------------------------------------------------------------------


def _check_output_args(size, n_views, mean, std) -> None:
    """Raise a ValueError naming the bad output size, view count or normalisation statistics."""
    if int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels; got {size}")
    if int(n_views) < 1:
        raise ValueError(f"n_views must be at least 1; got {n_views}")
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise ValueError(f"mean and std need one entry per channel (1 or 3); got mean={mean},"
                         f" std={std}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std entries must be positive; got {std}")


def _check_random_args(crop_scale, crop_ratio, jitter, threads, probabilities: dict) -> None:
    """Raise a ValueError naming the bad crop range, jitter, thread count or probability."""
    if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1]:
        raise ValueError(f"crop_scale must be (lo, hi) with 0 < lo <= hi; got {crop_scale}")
    if len(crop_ratio) != 2 or not 0 < crop_ratio[0] <= crop_ratio[1]:
        raise ValueError(f"crop_ratio must be (lo, hi) with 0 < lo <= hi; got {crop_ratio}")
    if len(jitter) != 4 or any(j < 0 for j in jitter):
        raise ValueError("jitter must be 4 non-negative numbers (brightness, contrast, "
                         f"saturation, hue); got {jitter}")
    if jitter[HUE] > 0.5:
        raise ValueError(f"the hue jitter must be in [0, 0.5] (a fraction of a turn); got "
                         f"{jitter[HUE]}")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be a positive number of CPU threads or None; got "
                         f"{threads}")
    for name, p in probabilities.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1]; got {p}")


def jitter_ranges(jitter: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """``ColorJitter(b, c, s, h)``'s factor ranges: ``[max(0, 1-x), 1+x]`` for brightness,
    contrast and saturation, ``[-h, h]`` for hue. A zero entry is torchvision's None (the
    operation is skipped)."""
    b, c, s, h = jitter
    return ((max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c),
            (max(0.0, 1 - s), 1 + s), (-h, h))


class TwoViewAugment:
    """SupCon's augmentation for a batch: ``augment(images, generator)`` -> float32
    (B, n_views, C, size, size), normalised, every view with its own random parameters.

    Fields as :class:`sincere.config.AugmentConfig` (``jitter`` = brightness, contrast,
    saturation, hue of ``ColorJitter``); ``mean``/``std`` one entry per channel. On a CPU an
    instance keeps scratch buffers between calls: use one instance per thread.

    ``threads`` (CPU only): run each call with this many intra-op threads
    (``torch.set_num_threads`` for the call, restored after); None keeps torch's setting. One
    thread already outpaces a CPU model by far, and it does not stall when other processes
    compete for the cores (OpenMP's multi-threaded ops wait at every barrier for a descheduled
    thread, which on a shared 2-core machine can make them slower than one thread)."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], n_views: int = 2,
                 crop_scale: Sequence[float] = (0.2, 1.0),
                 crop_ratio: Sequence[float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1), jitter_p: float = 0.8,
                 grayscale_p: float = 0.2, threads: Optional[int] = None):
        _check_output_args(size, n_views, mean, std)
        _check_random_args(crop_scale, crop_ratio, jitter, threads, {
            "flip_p": flip_p, "jitter_p": jitter_p, "grayscale_p": grayscale_p})
        self.size, self.n_views = int(size), int(n_views)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.flip_p, self.jitter_p, self.grayscale_p = float(flip_p), float(jitter_p), \
            float(grayscale_p)
        self.jitter = tuple(float(j) for j in jitter)
        self.threads = None if threads is None else int(threads)
        self.ranges = jitter_ranges(self.jitter)
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._workspace: dict[str, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (f"TwoViewAugment(size={self.size}, n_views={self.n_views}, threads={self.threads}, "
                f"crop_scale={self.crop_scale}, "
                f"crop_ratio={tuple(round(r, 4) for r in self.crop_ratio)}, "
                f"flip_p={self.flip_p}, jitter={self.jitter}, jitter_p={self.jitter_p}, "
                f"grayscale_p={self.grayscale_p}, mean={self.mean}, std={self.std})")

    def __call__(self, images: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n_views`` independently augmented views of every image: (B, n_views, C, size,
        size) float32, normalised, on the images' device."""
        check_images(images)
        b, c, height, width = images.shape
        n = b * self.n_views
        params = self.sample_params(n, height, width, generator)
        source = torch.arange(b).repeat_interleave(self.n_views)   # view b * V + v <- image b
        with self._threads(images.device):
            views = self.apply(images, params, source)
        return views.view(b, self.n_views, c, self.size, self.size)

    @contextlib.contextmanager
    def _threads(self, device: torch.device) -> Iterator[None]:
        """On a CPU, run the body with ``threads`` intra-op threads and restore torch's after."""
        previous = torch.get_num_threads()
        switch = self.threads is not None and device.type == "cpu" and self.threads != previous
        if switch:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if switch:
                torch.set_num_threads(previous)

    # -- parameters, in the PIL chain's order ------------------------------------------------

    def sample_params(self, n: int, height: int, width: int,
                      generator: Optional[torch.Generator] = None) -> AugmentParams:
        """Draw every random choice for ``n`` views of ``height`` x ``width`` images: crop, flip,
        colour jitter, grayscale."""
        check_generator(generator)
        crops = sample_crop_params(n, height, width, self.crop_scale, self.crop_ratio, generator)
        flip = self._sample_flip(n, generator)
        jitter, order, factors = self._sample_jitter(n, generator)
        gray = self._sample_grayscale(n, generator)
        return AugmentParams(crops, flip, jitter, order, factors, gray)

    def _sample_flip(self, n: int, generator) -> torch.Tensor:
        """``RandomHorizontalFlip(flip_p)``: which views are flipped, (n,) bool."""
        return torch.rand(n, generator=generator) < self.flip_p

    def _sample_jitter(self, n: int, generator):
        """``RandomApply([ColorJitter(...)], p=jitter_p)``: which views are jittered (n,) bool,
        and ``ColorJitter.get_params`` per view: a uniform random permutation of the four
        operations (n, 4) and their factors (n, 4), uniform in :attr:`ranges`."""
        jitter = torch.rand(n, generator=generator) < self.jitter_p
        order = torch.rand(n, N_JITTER_OPS, generator=generator).argsort(dim=1)
        lo = torch.tensor([r[0] for r in self.ranges])
        hi = torch.tensor([r[1] for r in self.ranges])
        factors = lo + (hi - lo) * torch.rand(n, N_JITTER_OPS, generator=generator)
        return jitter, order, factors

    def _sample_grayscale(self, n: int, generator) -> torch.Tensor:
        """``RandomGrayscale(grayscale_p)``: which views turn gray, (n,) bool."""
        return torch.rand(n, generator=generator) < self.grayscale_p

    # -- application, in the PIL chain's order -----------------------------------------------

    @torch.no_grad()
    def apply(self, images: torch.Tensor, params: AugmentParams,
              source: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The views described by ``params`` of ``images`` (view k from image ``source[k]``,
        default k), normalised: float32 (n, C, size, size) on the images' device."""
        self._check_channels(images)
        device, n = images.device, len(params)
        if source is None:
            source = torch.arange(n)
        plan = self._plan(params, images.shape[1])
        # crop straight into the first step's arrangement; on a CPU the intermediates live in
        # buffers kept between batches (the returned views are always a fresh tensor)
        workspace = self._workspace if device.type == "cpu" and len(plan) else None
        x, spare = self._crop_and_flip(images, params, source, plan.first(n), workspace)
        moves, factors = plan.to_device(device) if len(plan) else (None, None)
        with torch.autocast(device.type, enabled=False):
            x = self._colour(x, spare, plan, moves, factors, workspace)
            x = self._normalise(x)
            if len(plan):                           # back to the views' own order
                x = x.index_select(0, moves[-1])
            return x

    def _check_channels(self, images: torch.Tensor) -> None:
        """Raise a ValueError unless ``images`` are valid with one channel per mean/std entry."""
        check_images(images)
        if images.shape[1] != len(self.mean):
            raise ValueError(f"images have {images.shape[1]} channel(s) but mean/std have "
                             f"{len(self.mean)} entries; build the augmentation with the "
                             "dataset's per-channel statistics")

    def _plan(self, params: AugmentParams, channels: int) -> ColourPlan:
        """The colour stage of a batch (see :class:`ColourPlan`): per step of
        :meth:`_colour_codes`, the views sorted by code (stably) and cut into one slice per
        operation."""
        plan = ColourPlan()
        for code in self._colour_codes(params, channels):
            counts = torch.bincount(code, minlength=N_CODES).tolist()
            if counts[SKIP] == len(code):
                continue
            order = torch.argsort(code, stable=True)
            bounds = [0] + list(itertools.accumulate(counts))
            plan.slices.append([(op, bounds[op], bounds[op + 1])
                                for op in (BRIGHTNESS, CONTRAST, SATURATION, HUE, GRAYSCALE)
                                if counts[op]])
            # SKIP and GRAYSCALE take no factor: any in-range column will do
            plan.factors.append(params.factors[order, code[order].clamp(max=N_JITTER_OPS - 1)])
            plan.arrangements.append(order)
        return plan

    def _colour_codes(self, params: AugmentParams, channels: int) -> list[torch.Tensor]:
        """What each view does in each step of the colour stage, (n,) codes per step: jitter
        step k does each view's k-th ``ColorJitter`` operation (SKIP where ``RandomApply`` did
        not fire, the operation's jitter is 0, or it is a no-op on 1 channel), then
        ``RandomGrayscale`` (GRAYSCALE or SKIP; none on 1 channel)."""
        active_ops = [op for op in range(N_JITTER_OPS) if self.jitter[op] > 0
                      and (channels == 3 or op in (BRIGHTNESS, CONTRAST))]
        codes = []
        if active_ops and self.jitter_p > 0:
            usable = torch.zeros(N_JITTER_OPS, dtype=torch.bool)
            usable[active_ops] = True
            for step in range(N_JITTER_OPS):
                op = params.order[:, step]
                codes.append(torch.where(params.jitter & usable[op], op, SKIP))
        if channels == 3 and self.grayscale_p > 0:
            codes.append(torch.where(params.gray, GRAYSCALE, SKIP))
        return codes

    def _crop_and_flip(self, images, params: AugmentParams, source, arrangement, workspace):
        """``RandomResizedCrop(size)`` + ``RandomHorizontalFlip`` + ``ToTensor``'s scaling to
        [0, 1]: every view's crop resized with PIL's bilinear filter, the flip by reversing the
        column taps (:func:`sincere.augment.ops.resized_crop`), the views written in
        ``arrangement``. Returns the views and a spare tensor of their shape (or None)."""
        return resized_crop_buffered(images, params.crops[arrangement], self.size,
                                     params.flip[arrangement], source[arrangement], workspace)

    def _colour(self, x, spare, plan: ColourPlan, moves, factors, workspace) -> torch.Tensor:
        """``RandomApply([ColorJitter])`` then ``RandomGrayscale``, step by step of ``plan``,
        each operation in place on the slice of the views that take it."""
        for i, slices in enumerate(plan.slices):
            if i > 0:
                x, spare = self._rearrange(x, spare, moves[i - 1], workspace)
            for op, a, b in slices:
                if op == GRAYSCALE:
                    self._grayscale(x[a:b])
                else:
                    self._jitter(x[a:b], op, factors[i, a:b])
        return x

    @staticmethod
    def _rearrange(x, spare, move, workspace):
        """Gather the views of ``x`` into the next step's arrangement, in ``spare`` (ping-pong
        buffers); returns (views, spare)."""
        spare = torch.index_select(x, 0, move, out=spare)
        if workspace is not None:                   # keep the names on the buffers in use
            workspace["out"], workspace["scratch"] = spare, x
        return spare, x

    @staticmethod
    def _jitter(x: torch.Tensor, op: int, factors: torch.Tensor) -> None:
        """One of ``ColorJitter``'s operations (``adjust_brightness`` / ``_contrast`` /
        ``_saturation`` / ``_hue``, code ``op``) on the views ``x``, in place."""
        JITTER_OPS[op](x, factors, inplace=True)

    @staticmethod
    def _grayscale(x: torch.Tensor) -> None:
        """``RandomGrayscale``'s conversion on the views ``x`` in place: PIL's ``convert("L")``
        luma, kept as three equal channels (``num_output_channels=3``)."""
        x.copy_(rgb_to_gray(x).expand(-1, 3, -1, -1))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``Normalize(mean, std)``, in place."""
        if x.device not in self._stats:
            self._stats[x.device] = (torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1),
                                     torch.tensor(self.std, device=x.device).view(1, -1, 1, 1))
        mean, std = self._stats[x.device]
        return x.sub_(mean).div_(std)


def build_augment(augment, size: int, mean: Sequence[float], std: Sequence[float],
                  n_views: int = 2, threads: Optional[int] = None) -> TwoViewAugment:
    """The on-device twin of :func:`sincere.augment.pil.contrastive_transform`, from the same
    :class:`sincere.config.AugmentConfig` fields (crop_scale, flip_p, jitter, jitter_p,
    grayscale_p) plus the output size, the dataset's mean and std, and (CPU only) the threads
    to augment with (see :class:`TwoViewAugment`)."""
    return TwoViewAugment(size, mean, std, n_views=n_views, crop_scale=tuple(augment.crop_scale),
                          flip_p=augment.flip_p, jitter=tuple(augment.jitter),
                          jitter_p=augment.jitter_p, grayscale_p=augment.grayscale_p,
                          threads=threads)
