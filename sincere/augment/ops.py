"""The batched image operations of the on-device augmentation (:mod:`sincere.augment.device`).

Each takes a batch of images with **per-sample** parameters (torchvision's functional ops take
one set per call) and mirrors what torchvision does to one PIL image in the PIL pipeline
(:mod:`sincere.augment.pil`):

- :func:`resized_crop` (with :func:`resample_taps`): ``RandomResizedCrop``'s crop and PIL's
  bilinear resize of it, optionally flipped (``RandomHorizontalFlip``). Separable: each output row
  is a weighted sum of a few gathered source rows, each output column a weighted sum of a few
  gathered columns of that. The weights are PIL's triangle-filter coefficients: pixel centres at
  ``+0.5``, samples clamped to the crop window (the crop is resized on its own, so pixels outside
  it never leak in), and the filter's support widened by the shrink factor when a crop is *larger*
  than the output (antialiasing, as PIL and ``antialias=True`` do). Upscaling therefore equals
  plain bilinear interpolation with border clamping (2 taps); downscaling equals PIL's area-aware
  bilinear filter (more taps). Only PIL's uint8 rounding of the intermediate and final images is
  not reproduced (|diff| <= 1/255). The horizontal flip reverses the column taps, so it costs
  nothing.
- :func:`adjust_brightness`, :func:`adjust_contrast`, :func:`adjust_saturation`,
  :func:`adjust_hue` (``JITTER_OPS``, indexed by the codes below): ``ColorJitter``'s four
  operations, each followed by a clamp to [0, 1]; contrast blends with the mean of the grayscale
  image, saturation with the grayscale image, hue rotates the HSV hue (saturation and value kept).
  On 1-channel images PIL's saturation and hue are no-ops.
- :func:`rgb_to_gray`: ``RandomGrayscale``'s conversion, PIL's ``convert("L")`` weights (0.299,
  0.587, 0.114).

Images are (n, C, H, W) with C = 1 or 3, float in [0, 1] (:func:`resized_crop` also takes uint8).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

GRAY_WEIGHTS = (0.299, 0.587, 0.114)   # ITU-R 601-2 luma: PIL's convert("L")

# ColorJitter's four operations, in torchvision's order: they index ``JITTER_OPS``, the columns of
# ``AugmentParams.factors`` and the entries of ``AugmentParams.order``.
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
N_JITTER_OPS = 4                       # also the number of jitter steps (``order`` permutes them)


def check_images(images: torch.Tensor) -> None:
    """Raise a ValueError naming the problem unless ``images`` is a uint8 or float (N, C, H, W)
    tensor with 1 or 3 channels."""
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
# Resized crop (RandomResizedCrop + RandomHorizontalFlip)
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
    return resized_crop_buffered(images, crops, size, flip, source)[0]


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


def resized_crop_buffered(images, crops, size, flip=None, source=None, workspace=None):
    """:func:`resized_crop`, also returning a scratch tensor of the output's shape (or None)
    that the caller may reuse. With a ``workspace`` dict, the output and every intermediate
    live in buffers kept there."""
    check_images(images)
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
        rows = _resample_rows(images, source, iy, wy, workspace)
        return _resample_columns(rows, ix, wx, workspace)


def _resample_rows(images, source, iy, wy, workspace):
    """The vertical pass: row y of channel ch of view k is
    ``sum_t wy[k, y, t] * image[source[k], ch, iy[k, y, t]]``; float32 (n, C, size, W)."""
    (n, size, taps_y), (b, c, height, width) = iy.shape, images.shape
    device = images.device
    plane = (source * c)[:, None] + torch.arange(c, device=device)        # (n, C)
    row_ids = plane[:, :, None, None] * height + iy[:, None]              # (n, C, size, taps)
    flat = images.reshape(b * c * height, width)
    rows = _buffer(workspace, "rows", (n * c * size, width), torch.float32, device)
    for t in range(taps_y):                      # uint8 rows are promoted by mul / addcmul_
        picked = flat.index_select(0, row_ids[..., t].reshape(-1))
        w = wy[:, None, :, t].expand(n, c, size).reshape(-1, 1)
        rows = torch.mul(picked, w, out=rows) if t == 0 else rows.addcmul_(picked, w)
    return rows.view(n, c, size, width)


def _resample_columns(rows, ix, wx, workspace):
    """The horizontal pass: column x of view k is ``sum_t wx[k, x, t] * rows[k, :, :, ix[k, x,
    t]]``; returns the float32 (n, C, size, size) views and a scratch tensor of that shape."""
    n, c, size, _ = rows.shape
    shape = (n, c, size, size)
    out = _buffer(workspace, "out", shape, torch.float32, rows.device)
    scratch = _buffer(workspace, "scratch", shape, torch.float32, rows.device)
    for t in range(ix.shape[2]):
        index = ix[..., t].contiguous()[:, None, None, :].expand(shape)
        w = wx[..., t].contiguous()[:, None, None, :]
        if t == 0:
            out = torch.gather(rows, 3, index, out=out).mul_(w)
        else:
            scratch = torch.gather(rows, 3, index, out=scratch)
            out.addcmul_(scratch, w)
    return out, scratch


# ---------------------------------------------------------------------------------------------
# Colour (ColorJitter's four operations, RandomGrayscale's conversion)
# ---------------------------------------------------------------------------------------------


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
