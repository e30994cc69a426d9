"""The on-device two-view augmentation (sincere/augment/device.py, ops.py) against the PIL pipeline
(sincere/augment/pil.py).

Three kinds of check: exactness where the two can agree to the pixel (the resampling against
PIL's resize, each colour operation against PIL/torchvision, identity and flip cases), equality in
distribution where they cannot (crop geometry against torchvision's own ``get_params``, the
statistics of whole augmented views against ``sincere.augment.contrastive_transform``), and the
plumbing (per-view independence, rates, order of the jitter, reproducibility, the loader).
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from sincere.augment import (
    JITTER_OPS,
    TwoViewAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    build_augment,
    contrastive_transform,
    resized_crop,
    rgb_to_gray,
    sample_crop_params,
)
from sincere.config import AugmentConfig, load_config
from sincere.data import (
    ArrayImages,
    stratified_subset,
    with_transform,
    dataset_tensors,
    load_digits,
)
from sincere.loaders import DeviceTwoViewLoader

UINT8_STEP = 1.0 / 255.0


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def ks_critical(n: int, m: int, alpha: float = 1e-3) -> float:
    """The KS statistic's critical value at level ``alpha`` for sample sizes n and m."""
    return float(np.sqrt(-0.5 * np.log(alpha / 2)) * np.sqrt((n + m) / (n * m)))


def colourful_images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3): smooth colour gradients and a textured blob, in varied hues."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    yy, xx = yy / max(height - 1, 1), xx / max(width - 1, 1)
    out = []
    for _ in range(n):
        coef = rng.uniform(-1, 1, (3, 3))
        img = np.stack([coef[c, 0] + coef[c, 1] * xx + coef[c, 2] * yy for c in range(3)], -1)
        cy, cx = rng.uniform(0.2, 0.8, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
        img = img + blob[..., None] * rng.uniform(-1, 1, 3) + 0.1 * rng.normal(size=img.shape)
        img = (img - img.min()) / (img.max() - img.min())
        out.append((255 * img).round().astype(np.uint8))
    return np.stack(out)


def to_nchw(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image)


def plain(size, channels, **kw) -> TwoViewAugment:
    """An augmentation with nothing random left unless asked for."""
    args = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                grayscale_p=0.0)
    args.update(kw)
    return TwoViewAugment(size, (0.5,) * channels, (0.25,) * channels, **args)


# ---------------------------------------------------------------------------------------------
# Crop geometry
# ---------------------------------------------------------------------------------------------


def test_crop_distribution_matches_torchvision_get_params():
    height, width, n = 32, 40, 20000
    scale, ratio = (0.2, 1.0), (3 / 4, 4 / 3)
    ours = sample_crop_params(n, height, width, scale, ratio,
                              generator=torch.Generator().manual_seed(0)).numpy()
    torch.manual_seed(0)
    dummy = torch.empty(3, height, width)
    ref = np.array([T.RandomResizedCrop.get_params(dummy, list(scale), list(ratio))
                    for _ in range(n)])
    for crops in (ours, ref):
        top, left, h, w = crops.T
        assert (h >= 1).all() and (w >= 1).all()
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + h <= height).all() and (left + w <= width).all()
    crit = ks_critical(n, n)

    def stats(c):
        top, left, h, w = c.T.astype(float)
        return {"area fraction": h * w / (height * width), "log aspect": np.log(w / h),
                "centre y": (top + h / 2) / height, "centre x": (left + w / 2) / width}
    a, b = stats(ours), stats(ref)
    for key in a:
        assert ks_statistic(a[key], b[key]) < crit, key
    # and the test can tell: an aspect ratio drawn uniformly instead of log-uniformly fails it
    lo, hi = ratio
    aspect = np.random.default_rng(0).uniform(lo, hi, n)
    assert ks_statistic(np.log(aspect), np.log(ref[:, 3] / ref[:, 2])) > crit


@pytest.mark.parametrize("height, width", [(4, 60), (60, 4), (20, 20)])
def test_crop_fallback_is_torchvisions_central_crop(height, width):
    # scale 0.95-1 of a 4x60 image never fits a 3/4..4/3 ratio in 10 tries; of a square with
    # ratio 3..4 neither: each case ends in torchvision's fallback, which is deterministic
    ratio = (3 / 4, 4 / 3) if height != width else (3.0, 4.0)
    ours = sample_crop_params(500, height, width, (0.95, 1.0), ratio,
                              generator=torch.Generator().manual_seed(1))
    ref = T.RandomResizedCrop.get_params(torch.empty(1, height, width), [0.95, 1.0], list(ratio))
    assert (ours == torch.tensor(ref)).all(), (ours[:3], ref)


@pytest.mark.parametrize("channels", [3, 1])
def test_resized_crop_equals_pils_resize_up_and_down(channels):
    rng = np.random.default_rng(0)
    shape = (6, 30, 44) + ((3,) if channels == 3 else ())
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    x = to_nchw(images)
    crops = sample_crop_params(6, 30, 44, (0.1, 1.0), generator=torch.Generator().manual_seed(0))
    crops[0] = torch.tensor([0, 0, 30, 44])           # the whole image, non-square
    crops[1] = torch.tensor([29, 43, 1, 1])           # a single pixel
    flip = torch.tensor([False, True, False, True, True, False])
    for size in (48, 16, 7):                          # enlarging, and shrinking (antialiased)
        out = resized_crop(x, crops, size, flip)
        assert out.shape == (6, channels, size, size) and out.dtype == torch.float32
        for k in range(6):
            top, left, h, w = crops[k].tolist()
            ref = TF.resized_crop(pil(images[k]), top, left, h, w, [size, size])
            if flip[k]:
                ref = TF.hflip(ref)
            diff = (TF.to_tensor(ref) - out[k]).abs().max().item()
            assert diff <= 1.5 * UINT8_STEP, (size, k, diff * 255)
    # without antialiasing a shrink would be far off: the comparison above can fail
    naive = torch.nn.functional.interpolate(x[:1].float() / 255, size=(7, 7), mode="bilinear",
                                            antialias=False, align_corners=False)
    ref = TF.to_tensor(TF.resize(pil(images[0]), [7, 7]))
    assert (naive[0] - ref).abs().max() > 5 * UINT8_STEP


def test_full_crop_without_jitter_is_the_normalised_image_and_flip_is_torch_flip():
    images = to_nchw(colourful_images(5, 24, 24))
    expected = (images.float() / 255 - 0.5) / 0.25
    g = torch.Generator().manual_seed(0)
    views = plain(24, 3)(images, g)
    assert views.shape == (5, 2, 3, 24, 24)
    torch.testing.assert_close(views[:, 0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(views[:, 1], expected, atol=1e-5, rtol=0)
    flipped = plain(24, 3, flip_p=1.0)(images, g)
    torch.testing.assert_close(flipped[:, 0], torch.flip(expected, dims=[-1]), atol=1e-5, rtol=0)
    # float input in [0, 1] gives the same views as uint8
    aug = TwoViewAugment(20, (0.5,) * 3, (0.25,) * 3)
    a = aug(images, torch.Generator().manual_seed(3))
    b = aug(images.float() / 255, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# Colour operations, one at a time
# ---------------------------------------------------------------------------------------------


def test_colour_operations_match_pil_and_torchvision():
    images = colourful_images(6, 20, 20, seed=2)
    x = to_nchw(images).float() / 255
    factors = torch.tensor([0.0, 0.6, 0.9, 1.0, 1.25, 1.4])
    for op, enhancer in ((adjust_brightness, ImageEnhance.Brightness),
                         (adjust_contrast, ImageEnhance.Contrast),
                         (adjust_saturation, ImageEnhance.Color)):
        out = op(x.clone(), factors)
        for k in range(6):
            ref = TF.to_tensor(enhancer(pil(images[k])).enhance(float(factors[k])))
            diff = (ref - out[k]).abs().max().item()
            assert diff <= 1.5 * UINT8_STEP, (op.__name__, float(factors[k]), diff * 255)
    shifts = torch.tensor([-0.5, -0.1, -0.02, 0.0, 0.07, 0.5])
    out = adjust_hue(x.clone(), shifts)
    for k in range(6):     # torchvision's tensor adjust_hue (PIL's uses a uint8-quantised hue)
        torch.testing.assert_close(out[k], TF.adjust_hue(x[k], float(shifts[k])), atol=2e-6,
                                   rtol=0)
    assert (out[3] - x[3]).abs().max() < 2e-6            # a zero shift changes nothing
    gray = rgb_to_gray(x)
    for k in range(6):
        ref = TF.to_tensor(pil(images[k]).convert("L"))
        assert (ref - gray[k]).abs().max() <= 0.51 * UINT8_STEP


def test_single_channel_colour_operations_follow_pil_L_mode():
    images = load_digits(True).images[:6]                   # uint8 (6, 8, 8)
    x = to_nchw(images).float() / 255
    factors = torch.tensor([0.6, 0.8, 1.0, 1.1, 1.3, 1.4])
    for op, enhancer in ((adjust_brightness, ImageEnhance.Brightness),
                         (adjust_contrast, ImageEnhance.Contrast)):
        out = op(x.clone(), factors)
        for k in range(6):
            ref = TF.to_tensor(enhancer(pil(images[k])).enhance(float(factors[k])))
            assert (ref - out[k]).abs().max() <= 1.5 * UINT8_STEP
    # PIL leaves L images alone under saturation and hue; so do we
    assert torch.equal(adjust_saturation(x, factors), x)
    assert torch.equal(adjust_hue(x, factors - 1.0), x)
    for k in range(3):
        assert np.array_equal(np.asarray(TF.adjust_saturation(pil(images[k]), 0.3)), images[k])
        assert np.array_equal(np.asarray(TF.adjust_hue(pil(images[k]), 0.3)), images[k])


def test_jitter_applies_each_views_drawn_order():
    """apply() (index groups per step) equals applying each view's four operations one by one
    in its own drawn order."""
    images = to_nchw(colourful_images(40, 16, 16, seed=3))
    aug = TwoViewAugment(16, (0.0,) * 3, (1.0,) * 3, crop_scale=(1.0, 1.0),
                         crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.7, grayscale_p=0.0,
                         jitter=(0.8, 0.8, 0.8, 0.4))
    params = aug.sample_params(40, 16, 16, torch.Generator().manual_seed(4))
    out = aug.apply(images, params)
    base = images.float() / 255
    orders = set()
    for k in range(40):
        ref = base[k:k + 1]
        if params.jitter[k]:
            order = params.order[k].tolist()
            orders.add(tuple(order))
            for op in order:
                ref = JITTER_OPS[op](ref, params.factors[k:k + 1, op])
        torch.testing.assert_close(out[k:k + 1], ref, atol=1e-5, rtol=0)
    assert len(orders) > 10                               # many different orders were used
    # the order matters: hue then contrast is not contrast then hue
    f, h = torch.tensor([1.4]), torch.tensor([0.3])
    hc = adjust_contrast(adjust_hue(base[:1], h), f)
    ch = adjust_hue(adjust_contrast(base[:1], f), h)
    assert (hc - ch).abs().max() > 0.01


# ---------------------------------------------------------------------------------------------
# Rates and distributions of whole views
# ---------------------------------------------------------------------------------------------


def test_random_parameters_have_torchvisions_distributions():
    aug = TwoViewAugment(32, (0.5,) * 3, (0.25,) * 3)       # SupCon's defaults
    n = 24000
    p = aug.sample_params(n, 32, 32, torch.Generator().manual_seed(0))

    def near(count, prob):
        return abs(count - n * prob) < 4.5 * np.sqrt(n * prob * (1 - prob))
    assert near(int(p.flip.sum()), 0.5)
    assert near(int(p.jitter.sum()), 0.8)
    assert near(int(p.gray.sum()), 0.2)
    perms = {perm: 0 for perm in itertools.permutations(range(4))}
    for row in p.order.tolist():
        perms[tuple(row)] += 1
    assert all(near(c, 1 / 24) for c in perms.values())
    for op, (lo, hi) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1)]):
        f = p.factors[:, op].numpy()
        assert f.min() >= lo - 1e-6 and f.max() <= hi + 1e-6
        assert ks_statistic(f, np.random.default_rng(op).uniform(lo, hi, n)) < ks_critical(n, n)


def test_flip_grayscale_and_jitter_rates_in_the_output():
    images = to_nchw(colourful_images(1, 12, 12, seed=5)).repeat(1500, 1, 1, 1)
    base = (images[:1].float() / 255 - 0.5) / 0.25
    g = torch.Generator().manual_seed(0)
    n = 3000

    def near(count, prob):
        return abs(count - n * prob) < 4.5 * np.sqrt(n * prob * (1 - prob))
    views = plain(12, 3, flip_p=0.5, grayscale_p=0.2)(images, g).flatten(0, 1)
    unflipped = (views - base).abs().amax(dim=(1, 2, 3)) < 1e-5
    flipped = (views - torch.flip(base, dims=[-1])).abs().amax(dim=(1, 2, 3)) < 1e-5
    gray = (views.amax(dim=1) - views.amin(dim=1)).amax(dim=(1, 2)) < 1e-5
    assert not (unflipped & flipped).any() and not (gray & (unflipped | flipped)).any()
    assert (unflipped | flipped | gray).all()
    assert near(int(flipped.sum()), 0.5 * 0.8)            # flipped and left in colour
    assert near(int(unflipped.sum()), 0.5 * 0.8)
    assert near(int(gray.sum()), 0.2)
    jittered = plain(12, 3, jitter_p=0.8)(images, g).flatten(0, 1)
    changed = (jittered - base).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert near(int(changed.sum()), 0.8)


def _view_statistics(views: torch.Tensor) -> np.ndarray:
    """Per view and channel: mean and standard deviation -> (n, 2 * C)."""
    flat = views.flatten(2)
    return torch.cat([flat.mean(2), flat.std(2)], dim=1).numpy()


@pytest.mark.parametrize("channels", [pytest.param(3, marks=pytest.mark.slow), 1])
def test_augmented_views_match_the_pil_pipeline_in_distribution(channels):
    """Many augmented views of the same images from both pipelines: the per-view channel means
    and standard deviations have the same distributions (two-sample KS), and the same averages
    to within a few standard errors."""
    if channels == 3:
        images = colourful_images(4, 32, 32, seed=6)
        mean, std, draws = (0.5, 0.45, 0.4), (0.25, 0.26, 0.27), 500
    else:
        images = load_digits(True).images[:8]
        mean, std, draws = (0.3,), (0.35,), 250
    size = images.shape[1]
    config = load_config(None, [f"dataset={'cifar10' if channels == 3 else 'digits'}"])
    torch.manual_seed(0)
    transform = contrastive_transform(config, size, mean, std)
    ref = torch.stack([transform(pil(img)) for img in images for _ in range(draws)])
    aug = build_augment(config.data.augment, size, mean, std, n_views=draws)
    ours = aug(to_nchw(images), torch.Generator().manual_seed(0)).flatten(0, 1)
    assert ours.shape == ref.shape
    a, b = _view_statistics(ours), _view_statistics(ref)
    n = len(a)
    crit = ks_critical(n, n)
    for j in range(a.shape[1]):
        assert ks_statistic(a[:, j], b[:, j]) < crit, j
        se = np.sqrt(a[:, j].var() / n + b[:, j].var() / n)
        assert abs(a[:, j].mean() - b[:, j].mean()) < 4.5 * se, j
    # the comparison can tell a wrong jitter: brightness +-0.8 instead of +-0.4 fails it
    wrong = TwoViewAugment(size, mean, std, n_views=draws,
                           jitter=(0.8,) + tuple(config.data.augment.jitter[1:]))
    bad = _view_statistics(wrong(to_nchw(images), torch.Generator().manual_seed(0)).flatten(0, 1))
    assert max(ks_statistic(bad[:, j], b[:, j]) for j in range(b.shape[1])) > crit


# ---------------------------------------------------------------------------------------------
# Independence and reproducibility
# ---------------------------------------------------------------------------------------------


def test_every_view_gets_its_own_parameters():
    images = to_nchw(colourful_images(1, 32, 32, seed=7)).repeat(64, 1, 1, 1)
    aug = TwoViewAugment(32, (0.5,) * 3, (0.25,) * 3)
    params = aug.sample_params(128, 32, 32, torch.Generator().manual_seed(0))
    assert len({tuple(c) for c in params.crops.tolist()}) > 120
    views = aug(images, torch.Generator().manual_seed(0)).flatten(0, 1)
    flat = views.flatten(1)
    distinct = torch.cdist(flat, flat) + torch.eye(len(flat)) * 1e9
    assert distinct.min() > 1e-3                       # no two views of the 64 copies coincide


def test_a_seed_fixes_the_views():
    images = to_nchw(colourful_images(8, 20, 20, seed=8))
    aug = TwoViewAugment(16, (0.5,) * 3, (0.25,) * 3, n_views=3)
    a = aug(images, torch.Generator().manual_seed(11))
    b = aug(images, torch.Generator().manual_seed(11))
    c = aug(images, torch.Generator().manual_seed(12))
    assert a.shape == (8, 3, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    kept = a.clone()
    aug(images, torch.Generator().manual_seed(13))       # reused scratch buffers never leak
    assert torch.equal(a, kept) and a.data_ptr() != b.data_ptr()
    # float64 input in [0, 1] works too
    torch.testing.assert_close(aug(images.double() / 255, torch.Generator().manual_seed(11)), a,
                               atol=1e-5, rtol=0)
    before = torch.get_num_threads()
    one = TwoViewAugment(16, (0.5,) * 3, (0.25,) * 3, n_views=3, threads=1)
    assert torch.equal(one(images, torch.Generator().manual_seed(11)), a)   # threads: same views
    assert torch.get_num_threads() == before                                # ... and restored
    torch.manual_seed(11)
    d = aug(images)                                       # the global generator works too
    torch.manual_seed(11)
    assert torch.equal(d, aug(images))


# ---------------------------------------------------------------------------------------------
# The loader and the dataset tensor
# ---------------------------------------------------------------------------------------------


def _index_images(n: int, channels: int = 1, size: int = 6) -> torch.Tensor:
    """Image k is constant with value k, so a view tells which image it came from."""
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, channels, size,
                                                                         size).contiguous()


def _image_of(views: torch.Tensor) -> torch.Tensor:
    return (views[:, 0, 0, 0, 0] * 0.25 + 0.5).mul(255).round().long()


def test_loader_batches_cover_each_image_once_per_epoch():
    n, batch = 100, 32
    images = _index_images(n, channels=3)
    labels = torch.arange(n) % 7
    aug = plain(5, 3, crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5)
    loader = DeviceTwoViewLoader(images, labels, aug, batch,
                                 generator=torch.Generator().manual_seed(0))
    assert len(loader) == 3
    seen = []
    for views, y in loader:
        assert views.shape == (batch, 2, 3, 5, 5) and views.dtype == torch.float32
        assert y.shape == (batch,) and y.dtype == torch.int64
        idx = _image_of(views)
        assert torch.equal(_image_of(views[:, 1:]), idx)   # both views from the same image
        assert torch.equal(y, labels[idx])
        seen.append(idx)
    seen = torch.cat(seen)
    assert len(seen) == 96 and len(set(seen.tolist())) == 96   # drop_last, no repeats
    # the same order as the PIL DataLoader given an equally seeded generator
    order = torch.cat([b for b in DataLoader(list(range(n)), batch_size=batch, shuffle=True,
                                             drop_last=True,
                                             generator=torch.Generator().manual_seed(0))])
    assert torch.equal(seen, order)
    again = torch.cat([_image_of(v) for v, _ in DeviceTwoViewLoader(
        images, labels, aug, batch, generator=torch.Generator().manual_seed(1))])
    assert not torch.equal(again, seen)


def test_loader_follows_an_index_sampler():
    n = 50
    images = _index_images(n)
    aug = plain(6, 1)
    order = [7, 3, 49, 0, 12, 8, 8, 21]
    loader = DeviceTwoViewLoader(images, torch.arange(n), aug, 3, sampler=order)
    assert len(loader) == 2
    got = torch.cat([y for _, y in loader]).tolist()
    assert got == order[:6]
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(range(n), num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(3)
        loader = DeviceTwoViewLoader(images, torch.arange(n), aug, 5, sampler=sampler)
        shards.append(set(torch.cat([_image_of(v) for v, _ in loader]).tolist()))
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 50


def test_dataset_tensors_of_array_images_and_subsets():
    rgb = colourful_images(30, 12, 10, seed=9)
    ds = ArrayImages(rgb, np.arange(30) % 3, ["a", "b", "c"])
    x, y = dataset_tensors(ds)
    assert x.shape == (30, 3, 12, 10) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), rgb)
    assert y.tolist() == (np.arange(30) % 3).tolist()
    inner = stratified_subset(ds, 15, seed=0)
    outer = torch.utils.data.Subset(inner, [4, 0, 9])
    xs, ys = dataset_tensors(with_transform(outer, T.ToTensor()))
    for k in range(3):
        image, label = with_transform(outer, None)[k]
        assert np.array_equal(xs[k].permute(1, 2, 0).numpy(), np.asarray(image))
        assert ys[k] == label
    config = load_config(None, ["dataset=digits", "data.subset=200"])
    from sincere.data import build_data
    bundle = build_data(config)
    xd, yd = dataset_tensors(bundle.train)
    assert xd.shape == (200, 1, 8, 8) and yd.tolist() == list(bundle.train.targets)
    assert np.array_equal(xd[5, 0].numpy(), np.asarray(with_transform(bundle.train, None)[5][0]))


def test_dataset_tensors_refuses_image_folders(tmp_path):
    from torchvision.datasets import ImageFolder
    (tmp_path / "cls").mkdir()
    Image.fromarray(colourful_images(1, 8, 8)[0]).save(tmp_path / "cls" / "a.png")
    with pytest.raises(ValueError, match="data.pipeline=pil"):
        dataset_tensors(ImageFolder(str(tmp_path)))


# ---------------------------------------------------------------------------------------------
# Errors and the config builder
# ---------------------------------------------------------------------------------------------


def test_build_augment_takes_the_pil_paths_fields():
    cfg = AugmentConfig(crop_scale=(0.3, 0.9), flip_p=0.25, jitter=(0.1, 0.2, 0.3, 0.05),
                        jitter_p=0.6, grayscale_p=0.1)
    aug = build_augment(cfg, 24, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), n_views=3)
    assert (aug.size, aug.n_views, aug.crop_scale, aug.flip_p, aug.jitter, aug.jitter_p,
            aug.grayscale_p) == (24, 3, (0.3, 0.9), 0.25, (0.1, 0.2, 0.3, 0.05), 0.6, 0.1)
    assert aug.ranges == ((0.9, 1.1), (0.8, 1.2), (0.7, 1.3), (-0.05, 0.05))


@pytest.mark.parametrize("make, message", [
    (lambda: TwoViewAugment(8, (0.5,), (0.5, 0.5)), "one entry per channel"),
    (lambda: TwoViewAugment(8, (0.5,), (0.0,)), "std entries must be positive"),
    (lambda: TwoViewAugment(8, (0.5,), (0.5,), jitter=(0.4, 0.4, 0.4, 0.7)), "hue jitter"),
    (lambda: TwoViewAugment(8, (0.5,), (0.5,), flip_p=1.5), "flip_p must be a probability"),
    (lambda: TwoViewAugment(8, (0.5,), (0.5,), crop_scale=(0.0, 1.0)), "crop_scale"),
    (lambda: TwoViewAugment(0, (0.5,), (0.5,)), "size must be a positive"),
    (lambda: TwoViewAugment(8, (0.5,), (0.5,), threads=0), "threads must be a positive"),
    (lambda: TwoViewAugment(8, (0.5,), (0.5,))(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)),
     "3 channel"),
    (lambda: TwoViewAugment(8, (0.5,), (0.5,))(torch.zeros(2, 8, 8, 1, dtype=torch.uint8)),
     "1 or 3 channels"),
    (lambda: TwoViewAugment(8, (0.5,), (0.5,))(torch.zeros(2, 1, 8, 8, dtype=torch.int32)),
     "uint8"),
    (lambda: TwoViewAugment(8, (0.5,), (0.5,))(torch.zeros(1, 8, 8)), r"\(N, C, H, W\)"),
    (lambda: DeviceTwoViewLoader(torch.zeros(4, 1, 8, 8), torch.arange(4),
                                 plain(8, 1), 2), "keeps images as uint8"),
    (lambda: DeviceTwoViewLoader(_index_images(4), torch.arange(4), plain(6, 1), 5),
     "larger than the 4 images"),
    (lambda: DeviceTwoViewLoader(_index_images(4), torch.arange(3), plain(6, 1), 2),
     "labels must be"),
    (lambda: list(DeviceTwoViewLoader(_index_images(4), torch.arange(4), plain(6, 1), 2,
                                      sampler=[0, 9])), "outside 0..3"),
    (lambda: DeviceTwoViewLoader(_index_images(4), torch.arange(4), plain(6, 1), 2,
                                 sampler=(i for i in range(4))), "sampler must have a length"),
])
def test_bad_input_is_a_clear_error(make, message):
    with pytest.raises((ValueError, IndexError), match=message):
        make()


def test_augmentation_sits_below_the_datasets_and_the_loaders():
    """One-way flow: sincere.augment (both pipelines) imports neither sincere.data nor
    sincere.loaders, which import it."""
    code = ("import sys, sincere.augment; "
            "above = {'sincere.data', 'sincere.loaders', 'sincere.pretrain'} & set(sys.modules); "
            "assert not above, above; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
