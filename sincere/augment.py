"""SupCon's two-view augmentation as batched tensor ops on the training device.

The PIL path (:func:`sincere.data.contrastive_transform`, run per image in DataLoader workers) is

    RandomResizedCrop(size, scale, ratio 3/4..4/3) -> RandomHorizontalFlip(flip_p)
    -> RandomApply([ColorJitter(b, c, s, h)], p=jitter_p) -> RandomGrayscale(grayscale_p)
    -> ToTensor -> Normalize(mean, std)

Here the same chain runs on a whole batch of uint8 images at once, on whatever device holds them,
with every random parameter drawn **per view** (torchvision's v2 transforms draw one set per call,
i.e. per batch, which would give every image of a batch the same crop):

- crop: torchvision's ``RandomResizedCrop.get_params`` rule, vectorised: area fraction uniform in
  ``scale``, log aspect ratio uniform in ``log(ratio)``, integer width/height rounded half to even,
  the first of 10 tries that fits, else torchvision's central fallback crop; top-left uniform
  over the positions where the crop fits.
- resampling: PIL's bilinear resize of the cropped window (what torchvision calls on PIL images),
  separable: each output row is a weighted sum of a few gathered source rows, each output column
  a weighted sum of a few gathered columns of that (:func:`resample_taps`). The weights are PIL's
  triangle-filter coefficients: pixel centres at ``+0.5``, samples clamped to the crop window
  (the crop is resized on its own, so pixels outside it never leak in), and the filter's support
  widened by the shrink factor when a crop is *larger* than the output (antialiasing, as PIL and
  ``antialias=True`` do). Upscaling therefore equals plain bilinear interpolation with border
  clamping (2 taps); downscaling equals PIL's area-aware bilinear filter (more taps). Only PIL's
  uint8 rounding of the intermediate and final images is not reproduced (|diff| <= 1/255). The
  horizontal flip reverses the column taps, so it costs nothing.
- colour jitter: brightness, contrast, saturation and hue factors drawn per view from
  torchvision's ranges (``[max(0, 1-b), 1+b]``, hue ``[-h, h]``) and applied in a per-view random
  order (a uniform permutation of the four, as ``ColorJitter.get_params``), each followed by a
  clamp to [0, 1]; contrast blends with the mean of the grayscale image, saturation with the
  grayscale image, hue rotates the HSV hue (saturation and value kept). Grayscale uses PIL's
  ``convert("L")`` weights (0.299, 0.587, 0.114). On 1-channel images PIL's saturation and hue are
  no-ops, so only brightness and contrast act (in their drawn order), and grayscale is a no-op.
- normalisation with the dataset's mean and std.

All random numbers come from one CPU ``torch.Generator`` (or the global CPU RNG), so a seed gives
the same views on every device. The colour stage runs each operation only on the views that
take it: before each of the four jitter steps (and grayscale) the views are rearranged with one
gather so that those groups are contiguous, and the operations run in place on slices. The
rearrangements are planned on the CPU and copied to the device once per batch, so nothing waits
on the device. Everything runs in fp32 with autocast off. On a CPU the intermediates live in
buffers kept between batches (fresh allocations page-fault, which costs more than the
arithmetic), so one :class:`TwoViewAugment` must not be called from two threads at once; the
returned views are always a fresh tensor.

:class:`DeviceTwoViewLoader` keeps a dataset as one uint8 tensor on the training device and yields
``(views (B, n_views, C, H, W) float32 normalised, labels (B,))`` like the PIL DataLoader of
:mod:`sincere.pretrain` (shuffled, ``drop_last``), from a generator or from any index sampler
(e.g. ``DistributedSampler``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import torch

GRAY_WEIGHTS = (0.299, 0.587, 0.114)   # ITU-R 601-2 luma: PIL's convert("L")

# Codes of the colour stage's operations. The four jitter operations index the columns of
# ``AugmentParams.factors``, the entries of ``AugmentParams.order`` and ``JITTER_OPS``; in the plan
# of a batch (``TwoViewAugment._plan``) each view also gets SKIP (no operation in this step) or
# GRAYSCALE. Views are sorted by code, so the codes are small consecutive integers.
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
N_JITTER_OPS = 4                       # also the number of jitter steps (``order`` permutes them)
SKIP = 4
GRAYSCALE = 5
N_CODES = 6


# ---------------------------------------------------------------------------------------------
# Random parameters (drawn on the CPU)
# ---------------------------------------------------------------------------------------------


def _check_generator(generator: Optional[torch.Generator]) -> None:
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
    _check_generator(generator)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive; got {height}x{width}")
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
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    u_top = torch.rand(n, generator=generator, dtype=torch.float64)
    u_left = torch.rand(n, generator=generator, dtype=torch.float64)
    top = torch.floor(u_top * (height - h + 1)).long()     # uniform over the positions that fit
    left = torch.floor(u_left * (width - w + 1)).long()

    # torchvision's fallback when no try fits: the central crop at the nearest allowed ratio
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    none_fit = ~fits.any(dim=1)
    h = torch.where(none_fit, fh, h)
    w = torch.where(none_fit, fw, w)
    top = torch.where(none_fit, (height - fh) // 2, top)
    left = torch.where(none_fit, (width - fw) // 2, left)
    return torch.stack([top, left, h, w], dim=1)


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


# ---------------------------------------------------------------------------------------------
# Batched operations (per-sample parameters; float images in [0, 1], (n, C, H, W))
# ---------------------------------------------------------------------------------------------


def resample_taps(start: torch.Tensor, length: torch.Tensor, out_size: int,
                  flip: Optional[torch.Tensor] = None, taps: Optional[int] = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's bilinear resampling of the windows [start, start + length) of an axis to
    ``out_size`` samples, as ``taps`` (pixel index, weight) pairs per output sample.

    Output sample o sits at ``start + (o + 0.5) * length / out_size`` and weighs the window's
    pixels (centres at ``x + 0.5``) by a triangle of half-width ``max(length / out_size, 1)`` —
    plain bilinear interpolation when enlarging, antialiased when shrinking — renormalised over
    the window, so pixels outside it never contribute. ``flip`` (n,) bool reverses the output
    order (a horizontal flip). ``taps`` defaults to the most any window needs,
    ceil(2 * max half-width) (2 when no window is larger than the output).

    Returns index (n, out_size, taps) int64 and weight (n, out_size, taps) float32."""
    device = start.device
    if taps is None:
        taps = max(1, math.ceil(2 * max(1.0, float(length.max()) / out_size)))
    start = start.to(torch.float32)[:, None]
    length = length.to(torch.float32)[:, None]
    step = length / out_size
    support = step.clamp(min=1.0)
    position = torch.arange(out_size, device=device, dtype=torch.float32).expand(len(start), -1)
    if flip is not None:
        position = torch.where(flip.to(device, non_blocking=True)[:, None], out_size - 1 - position,
                               position)
    centre = start + (position + 0.5) * step                              # (n, out)
    # the first pixel whose centre lies within the support: floor(centre - support + 0.5)
    first = torch.floor(centre - support + 0.5)
    pixel = first[..., None] + torch.arange(taps, device=device, dtype=torch.float32)
    weight = (1.0 - (pixel + 0.5 - centre[..., None]).abs() / support[..., None]).clamp_(min=0.0)
    start, end = start[..., None], (start + length - 1)[..., None]
    weight = weight * ((pixel >= start) & (pixel <= end))
    weight = weight / weight.sum(dim=2, keepdim=True)
    index = torch.minimum(torch.maximum(pixel, start), end).to(torch.int64)
    return index, weight


def resized_crop(images: torch.Tensor, crops: torch.Tensor, size: int,
                 flip: Optional[torch.Tensor] = None, source: Optional[torch.Tensor] = None,
                 ) -> torch.Tensor:
    """Crop ``crops`` (n, 4: top, left, height, width) out of ``images`` and resize each crop to
    ``size`` x ``size`` with PIL's bilinear filter (see :func:`resample_taps`), optionally
    flipped horizontally.

    ``images`` is (B, C, H, W), uint8 (scaled to [0, 1]) or float. View k is cut from image
    ``source[k]`` (default: view k from image k); returns float32 (n, C, size, size).
    Separable: each output row is a weighted sum of a few gathered source rows, each output
    column a weighted sum of a few gathered columns of that."""
    return _resized_crop(images, crops, size, flip, source)[0]


def _buffer(workspace: Optional[dict], name: str, shape, dtype, device) -> Optional[torch.Tensor]:
    """A tensor kept in ``workspace`` between calls (None without a workspace): on a CPU,
    reusing buffers avoids the page faults of fresh allocations, which cost more than the
    arithmetic here."""
    if workspace is None:
        return None
    buf = workspace.get(name)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype or buf.device != device:
        buf = workspace[name] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def _resized_crop(images, crops, size, flip=None, source=None, workspace=None):
    """:func:`resized_crop`, also returning a scratch tensor of the output's shape (or None)
    that the caller may reuse. With a ``workspace`` dict, the output and every intermediate
    live in buffers kept there."""
    _check_images(images)
    if images.dtype != torch.uint8:
        images = images.to(torch.float32)
    n = crops.shape[0]
    b, c, height, width = images.shape
    device = images.device
    if source is None:
        if n != b:
            raise ValueError(f"{n} crops for {b} images: pass source= to map views to images")
        source = torch.arange(b)
    # the tap counts from the crop sizes, read where the crops are (the CPU: no device sync)
    taps_y = max(1, math.ceil(2 * max(1.0, float(crops[:, 2].max()) / size)))
    taps_x = max(1, math.ceil(2 * max(1.0, float(crops[:, 3].max()) / size)))
    crops = crops.to(device, non_blocking=True)
    source = source.to(device, non_blocking=True)
    iy, wy = resample_taps(crops[:, 0], crops[:, 2], size, taps=taps_y)
    ix, wx = resample_taps(crops[:, 1], crops[:, 3], size, flip, taps=taps_x)
    if images.dtype == torch.uint8:
        wy = wy * (1.0 / 255.0)
    with torch.autocast(device.type, enabled=False):
        # rows: row y of channel ch of view k is
        #   sum_t wy[k, y, t] * image[source[k], ch, iy[k, y, t]]
        plane = (source * c)[:, None] + torch.arange(c, device=device)        # (n, C)
        row_ids = plane[:, :, None, None] * height + iy[:, None]              # (n, C, size, taps)
        flat = images.reshape(b * c * height, width)
        rows = _buffer(workspace, "rows", (n * c * size, width), torch.float32, device)
        for t in range(taps_y):                      # uint8 rows are promoted by mul / addcmul_
            picked = flat.index_select(0, row_ids[..., t].reshape(-1))
            w = wy[:, None, :, t].expand(n, c, size).reshape(-1, 1)
            rows = torch.mul(picked, w, out=rows) if t == 0 else rows.addcmul_(picked, w)
        rows = rows.view(n, c, size, width)
        # columns: column x of view k is sum_t wx[k, x, t] * rows[k, :, :, ix[k, x, t]]
        shape = (n, c, size, size)
        out = _buffer(workspace, "out", shape, torch.float32, device)
        scratch = _buffer(workspace, "scratch", shape, torch.float32, device)
        for t in range(taps_x):
            index = ix[..., t].contiguous()[:, None, None, :].expand(shape)
            w = wx[..., t].contiguous()[:, None, None, :]
            if t == 0:
                out = torch.gather(rows, 3, index, out=out).mul_(w)
            else:
                scratch = torch.gather(rows, 3, index, out=scratch)
                out.addcmul_(scratch, w)
        return out, scratch


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) -> (n, 1, H, W) luma with PIL's weights; 1-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    gray = x[:, 0:1] * GRAY_WEIGHTS[0]
    return gray.add_(x[:, 1:2], alpha=GRAY_WEIGHTS[1]).add_(x[:, 2:3], alpha=GRAY_WEIGHTS[2])


def _per_sample(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # non_blocking: a blocking host-to-device copy would wait for the GPU's queue (a host sync)
    return f.to(device=x.device, dtype=x.dtype, non_blocking=True).view(-1, 1, 1, 1)


# The colour operations take float images in [0, 1] and per-sample factors (n,). They work in
# place on ``x`` when ``inplace=True`` (what the pipeline does: on a CPU, allocating fresh
# full-size tensors costs several times the arithmetic) and on a copy otherwise.


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Scale by ``factor`` and clamp: PIL's ImageEnhance.Brightness (blend with black)."""
    x = x if inplace else x.clone()
    return x.mul_(_per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Blend with the mean of the grayscale image: PIL's ImageEnhance.Contrast."""
    f = _per_sample(factor, x)
    mean = rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = x if inplace else x.clone()
    return x.mul_(f).add_(mean.mul_(1.0 - f)).clamp_(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor, inplace: bool = False
                      ) -> torch.Tensor:
    """Blend with the grayscale image: PIL's ImageEnhance.Color (a no-op on 1 channel)."""
    x = x if inplace else x.clone()
    if x.shape[1] == 1:
        return x
    f = _per_sample(factor, x)
    gray = rgb_to_gray(x).mul_(1.0 - f)
    return x.mul_(f).add_(gray).clamp_(0.0, 1.0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` (n,) turns in [-0.5, 0.5], keeping saturation and value
    (torchvision's adjust_hue; a no-op on 1 channel).

    Written without a full HSV round trip: with V = max, m = min, C = V - m, H the hue in
    sextants and k_n = (n + H) mod 6, HSV->RGB gives channel n = V - C clamp(2 - |k_n - 2|, 0, 1)
    = m + C clamp(|k_n - 2| - 1, 0, 1) for n = 5, 3, 1 (R, G, B). Only arithmetic ops (no masks
    or ``where``, which are several times slower on a CPU)."""
    x = x if inplace else x.clone()
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    inv = chroma.clamp(min=1e-12).reciprocal_()      # chroma 0 (gray): every numerator is 0
    # which channel holds the max, with torchvision's tie order (red, then green, then blue):
    # 1 - ceil(max - channel) is 1 where the channel is the max and 0 elsewhere (x in [0, 1])
    is_r = (maxc - r).ceil_().clamp_(max=1.0).neg_().add_(1.0)
    is_g = (maxc - g).ceil_().clamp_(max=1.0).neg_().add_(1.0)
    hue = (r - g).mul_(inv).add_(4.0)                            # blue is the max
    hue.lerp_((b - r).mul_(inv).add_(2.0), is_g)                 # green
    hue.lerp_((g - b).mul_(inv), is_r)                           # red
    hue.add_(_per_sample(shift, x).view(-1, 1, 1), alpha=6.0)
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype).to(x.device, non_blocking=True)
    offsets = offsets.view(1, 3, 1, 1)
    k = torch.add(hue.unsqueeze(1), offsets, out=x)              # x's values are not needed now
    k.sub_(torch.floor_(k * (1.0 / 6.0)), alpha=6.0)             # mod 6
    k.sub_(2.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
    return k.mul_(chroma.unsqueeze(1)).add_(minc.unsqueeze(1))


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a (N, C, H, W) tensor; got "
                         + (f"shape {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                            else type(images).__name__))
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or float (0..1); got {images.dtype}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels (dimension 1 of N, C, H, W); got "
                         f"{images.shape[1]} — channels-last input needs .permute(0, 3, 1, 2)")


# ---------------------------------------------------------------------------------------------
# The two-view augmentation
# ---------------------------------------------------------------------------------------------


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
        if int(size) < 1:
            raise ValueError(f"size must be a positive number of pixels; got {size}")
        if int(n_views) < 1:
            raise ValueError(f"n_views must be at least 1; got {n_views}")
        if len(mean) != len(std) or len(mean) not in (1, 3):
            raise ValueError(f"mean and std need one entry per channel (1 or 3); got mean={mean},"
                             f" std={std}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std entries must be positive; got {std}")
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
        for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p), ("grayscale_p", grayscale_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]; got {p}")
        self.size, self.n_views = int(size), int(n_views)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.flip_p, self.jitter_p, self.grayscale_p = float(flip_p), float(jitter_p), \
            float(grayscale_p)
        self.jitter = tuple(float(j) for j in jitter)
        self.threads = None if threads is None else int(threads)
        b, c, s, h = self.jitter
        # ColorJitter's ranges; a zero entry is torchvision's None (the operation is skipped)
        self.ranges = ((max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c),
                       (max(0.0, 1 - s), 1 + s), (-h, h))
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._workspace: dict[str, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (f"TwoViewAugment(size={self.size}, n_views={self.n_views}, threads={self.threads}, "
                f"crop_scale={self.crop_scale}, "
                f"crop_ratio={tuple(round(r, 4) for r in self.crop_ratio)}, "
                f"flip_p={self.flip_p}, jitter={self.jitter}, jitter_p={self.jitter_p}, "
                f"grayscale_p={self.grayscale_p}, mean={self.mean}, std={self.std})")

    # -- parameters ------------------------------------------------------------------------

    def sample_params(self, n: int, height: int, width: int,
                      generator: Optional[torch.Generator] = None) -> AugmentParams:
        """Draw every random choice for ``n`` views of ``height`` x ``width`` images."""
        _check_generator(generator)
        crops = sample_crop_params(n, height, width, self.crop_scale, self.crop_ratio, generator)
        flip = torch.rand(n, generator=generator) < self.flip_p
        jitter = torch.rand(n, generator=generator) < self.jitter_p
        # a uniform random permutation of the jitter operations per view
        order = torch.rand(n, N_JITTER_OPS, generator=generator).argsort(dim=1)
        lo = torch.tensor([r[0] for r in self.ranges])
        hi = torch.tensor([r[1] for r in self.ranges])
        factors = lo + (hi - lo) * torch.rand(n, N_JITTER_OPS, generator=generator)
        gray = torch.rand(n, generator=generator) < self.grayscale_p
        return AugmentParams(crops, flip, jitter, order, factors, gray)

    # -- application -----------------------------------------------------------------------

    def _plan(self, params: AugmentParams, channels: int):
        """The colour stage as a list of steps (CPU tensors). Before each step the views are
        rearranged (one gather) so that the views taking each operation in it are contiguous,
        and the operations then run in place on slices: jitter steps 1-4 (each view's k-th
        operation), then grayscale. Returns (steps, arrangements): per step the slices
        [(op, start, stop)] and the factor of each position; ``arrangements[i]`` lists the view
        at each position during step i, and the last one the final arrangement."""
        n = len(params)
        active_ops = [op for op in range(N_JITTER_OPS) if self.jitter[op] > 0
                      and (channels == 3 or op in (BRIGHTNESS, CONTRAST))]
        keys = []
        if active_ops and self.jitter_p > 0:
            usable = torch.zeros(N_JITTER_OPS, dtype=torch.bool)
            usable[active_ops] = True
            for step in range(N_JITTER_OPS):
                op = params.order[:, step]
                keys.append(torch.where(params.jitter & usable[op], op, SKIP))
        if channels == 3 and self.grayscale_p > 0:
            keys.append(torch.where(params.gray, GRAYSCALE, SKIP))
        steps, arrangements = [], []
        for key in keys:
            counts = torch.bincount(key, minlength=N_CODES).tolist()
            if counts[SKIP] == len(key):
                continue
            order = torch.argsort(key, stable=True)
            bounds = [0] + list(itertools.accumulate(counts))
            slices = [(op, bounds[op], bounds[op + 1])
                      for op in (BRIGHTNESS, CONTRAST, SATURATION, HUE, GRAYSCALE) if counts[op]]
            # SKIP and GRAYSCALE take no factor: any in-range column will do
            factors = params.factors[order, key[order].clamp(max=N_JITTER_OPS - 1)]
            steps.append((slices, factors))
            arrangements.append(order)
        return steps, arrangements

    def _normalisation(self, device: torch.device):
        if device not in self._stats:
            self._stats[device] = (torch.tensor(self.mean, device=device).view(1, -1, 1, 1),
                                   torch.tensor(self.std, device=device).view(1, -1, 1, 1))
        return self._stats[device]

    @torch.no_grad()
    def apply(self, images: torch.Tensor, params: AugmentParams,
              source: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The views described by ``params`` of ``images`` (view k from image ``source[k]``,
        default k), normalised: float32 (n, C, size, size) on the images' device."""
        _check_images(images)
        channels = images.shape[1]
        if channels != len(self.mean):
            raise ValueError(f"images have {channels} channel(s) but mean/std have "
                             f"{len(self.mean)} entries; build the augmentation with the "
                             "dataset's per-channel statistics")
        device = images.device
        n = len(params)
        if source is None:
            source = torch.arange(n)
        steps, arrangements = self._plan(params, channels)
        first = arrangements[0] if arrangements else torch.arange(n)
        # crop straight into the first step's arrangement; on a CPU the intermediates live in
        # buffers kept between batches (the returned views are always a fresh tensor)
        workspace = self._workspace if device.type == "cpu" and steps else None
        x, spare = _resized_crop(images, params.crops[first], self.size, params.flip[first],
                                 source[first], workspace)
        if steps:
            # all index and factor tensors to the device in one copy each
            n_steps = len(steps)
            moves = torch.cat([torch.argsort(arrangements[i])[arrangements[i + 1]]
                               for i in range(n_steps - 1)]
                              + [torch.argsort(arrangements[-1])])
            moves = moves.to(device, non_blocking=True).view(n_steps, n)
            factors = torch.stack([f for _, f in steps]).to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=False):
            for i, (slices, _) in enumerate(steps):
                if i > 0:                           # rearrange for this step (ping-pong buffers)
                    spare = torch.index_select(x, 0, moves[i - 1], out=spare)
                    x, spare = spare, x
                    if workspace is not None:       # keep the names on the buffers in use
                        workspace["out"], workspace["scratch"] = x, spare
                for op, a, b in slices:
                    if op == GRAYSCALE:
                        x[a:b].copy_(rgb_to_gray(x[a:b]).expand(-1, 3, -1, -1))
                    else:
                        JITTER_OPS[op](x[a:b], factors[i, a:b], inplace=True)
            mean, std = self._normalisation(device)
            x.sub_(mean).div_(std)
            if steps:                               # back to the views' own order
                x = x.index_select(0, moves[-1])
            return x

    def __call__(self, images: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n_views`` independently augmented views of every image: (B, n_views, C, size,
        size) float32, normalised, on the images' device."""
        _check_images(images)
        b, c, height, width = images.shape
        n = b * self.n_views
        params = self.sample_params(n, height, width, generator)
        source = torch.arange(b).repeat_interleave(self.n_views)   # view b * V + v <- image b
        previous = torch.get_num_threads()
        switch = (self.threads is not None and images.device.type == "cpu"
                  and self.threads != previous)
        if switch:
            torch.set_num_threads(self.threads)
        try:
            views = self.apply(images, params, source)
        finally:
            if switch:
                torch.set_num_threads(previous)
        return views.view(b, self.n_views, c, self.size, self.size)


def build_augment(augment, size: int, mean: Sequence[float], std: Sequence[float],
                  n_views: int = 2, threads: Optional[int] = None) -> TwoViewAugment:
    """The on-device twin of :func:`sincere.data.contrastive_transform`, from the same
    :class:`sincere.config.AugmentConfig` fields (crop_scale, flip_p, jitter, jitter_p,
    grayscale_p) plus the output size, the dataset's mean and std, and (CPU only) the threads
    to augment with (see :class:`TwoViewAugment`)."""
    return TwoViewAugment(size, mean, std, n_views=n_views, crop_scale=tuple(augment.crop_scale),
                          flip_p=augment.flip_p, jitter=tuple(augment.jitter),
                          jitter_p=augment.jitter_p, grayscale_p=augment.grayscale_p,
                          threads=threads)


# ---------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------


class DeviceTwoViewLoader:
    """Batches of augmented views of a dataset that lives on the training device.

    ``images`` uint8 (N, C, H, W) and ``labels`` (N,) are moved to ``device`` once (pass tensors
    already there to share them between epochs' loaders). Each epoch visits the indices of
    ``sampler`` (any iterable of ints, e.g. a ``DistributedSampler``; iterated afresh every epoch)
    or a ``torch.randperm`` of all N drawn from ``generator`` (the same order as
    ``DataLoader(shuffle=True, generator=...)`` given an equally seeded generator), in batches of
    ``batch_size``; the last incomplete batch is dropped unless ``drop_last=False``. Yields
    ``(views, labels)``: float32
    (batch, n_views, C, size, size) and int64 (batch,), both on ``device``. ``generator`` (CPU)
    also draws the augmentation, so a seed fixes the whole epoch."""

    def __init__(self, images: torch.Tensor, labels, augment: TwoViewAugment, batch_size: int,
                 device: Optional[torch.device | str] = None,
                 generator: Optional[torch.Generator] = None,
                 sampler: Optional[Iterable[int]] = None, drop_last: bool = True):
        _check_images(images)
        if images.dtype != torch.uint8:
            raise ValueError(f"the loader keeps images as uint8 (N, C, H, W); got {images.dtype}"
                             " — convert with (x * 255).round().to(torch.uint8)")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be (N,) with N = {len(images)} images; got shape "
                             f"{tuple(labels.shape)}")
        if labels.is_floating_point():
            raise ValueError("labels must be integer class indices; got floats")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        _check_generator(generator)
        if sampler is not None and not hasattr(sampler, "__len__"):
            raise ValueError("sampler must have a length (a torch Sampler, a list or a range), "
                             f"so that len(loader) is known; got {type(sampler).__name__}")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device)
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        self.augment, self.batch_size = augment, int(batch_size)
        self.generator, self.sampler, self.drop_last = generator, sampler, bool(drop_last)
        n = len(sampler) if sampler is not None else len(images)
        if self.drop_last and n < self.batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the {n} images to load "
                             "(the last incomplete batch is dropped); lower it")

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> torch.Tensor:
        if self.sampler is None:
            if self.generator is not None:
                # DataLoader draws its workers' base seed from the generator before shuffling;
                # drawing it too makes the image order equal to the PIL DataLoader's
                torch.empty((), dtype=torch.int64).random_(generator=self.generator)
            return torch.randperm(len(self.images), generator=self.generator)
        order = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        if len(order) and (order.min() < 0 or order.max() >= len(self.images)):
            raise IndexError(f"the sampler yielded indices outside 0..{len(self.images) - 1}")
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        n_batches = len(order) // self.batch_size
        if not self.drop_last and len(order) % self.batch_size:
            n_batches += 1
        else:
            order = order[:n_batches * self.batch_size]
        order = order.to(self.device, non_blocking=True)
        for k in range(n_batches):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            views = self.augment(self.images.index_select(0, idx), self.generator)
            yield views, self.labels.index_select(0, idx)
