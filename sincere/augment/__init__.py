"""SupCon's two-view augmentation, in its two pipelines side by side (``data.pipeline``).

- ``pil`` (:mod:`sincere.augment.pil`): torchvision transforms on one PIL image at a time, in
  DataLoader workers, drawing from each worker's global RNG.
- ``device`` (:mod:`sincere.augment.device`, with the batched operations in
  :mod:`sincere.augment.ops`): the same chain on a whole uint8 batch on the training device, every
  random parameter drawn per view from one CPU ``torch.Generator``.

The chain, step by step, and where each pipeline does it::

    step (torchvision)              pil                    device
    RandomResizedCrop(size, scale)  T.RandomResizedCrop    sample_crop_params, ops.resized_crop
    RandomHorizontalFlip(flip_p)    T.RandomHorizontalFlip _sample_flip; reversed column taps
    RandomApply([ColorJitter], p)   T.RandomApply(...)     _sample_jitter; ops.adjust_* in each
                                                           view's drawn order
    RandomGrayscale(grayscale_p)    T.RandomGrayscale      _sample_grayscale; ops.rgb_to_gray
    ToTensor, Normalize(mean, std)  T.ToTensor, Normalize  (scaling in the crop); _normalise

Both take their fields from one :class:`sincere.config.AugmentConfig` (``data.augment.*``):
:func:`contrastive_transform` builds the PIL chain and :func:`build_augment` the device one.

**How they agree.** Every random parameter of the device pipeline has torchvision's
distribution, drawn per view rather than per batch; each operation reproduces what torchvision
does to a PIL image (PIL's bilinear resize with antialiasing, ``ImageEnhance``'s blends,
torchvision's HSV hue rotation, ``convert("L")``'s weights) in float, where PIL rounds its
images to uint8 (the tests allow 1.5/255 per operation). So the two pipelines give views equal in distribution, not the same
views for a seed (the PIL one draws from each worker's global RNG, the device one from a CPU
``torch.Generator``, and a seed gives the same device views on every device).
``tests/test_augment.py`` checks it at three levels: the parameters
(``test_crop_distribution_matches_torchvision_get_params``,
``test_crop_fallback_is_torchvisions_central_crop``,
``test_random_parameters_have_torchvisions_distributions``), each operation against PIL and
torchvision on the same inputs (``test_resized_crop_equals_pils_resize_up_and_down``,
``test_colour_operations_match_pil_and_torchvision``,
``test_single_channel_colour_operations_follow_pil_L_mode``), and whole views
(``test_augmented_views_match_the_pil_pipeline_in_distribution``: per-view channel means and
standard deviations of both pipelines, two-sample KS).

The loaders that feed training from either pipeline live in :mod:`sincere.loaders`
(``pil_loader``, ``device_loader``, ``DeviceTwoViewLoader``); the deterministic evaluation
transform (resize + centre crop) is :func:`sincere.data.plain_transform`.
"""

from sincere.augment.device import (
    AugmentParams,
    ColourPlan,
    TwoViewAugment,
    build_augment,
    check_generator,
    jitter_ranges,
    sample_crop_params,
)
from sincere.augment.ops import (
    GRAY_WEIGHTS,
    JITTER_OPS,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    check_images,
    resample_taps,
    resized_crop,
    rgb_to_gray,
)
from sincere.augment.pil import MultiView, contrastive_transform

__all__ = [
    "AugmentParams", "ColourPlan", "GRAY_WEIGHTS", "JITTER_OPS", "MultiView", "TwoViewAugment",
    "adjust_brightness", "adjust_contrast", "adjust_hue", "adjust_saturation", "build_augment",
    "check_generator", "check_images", "contrastive_transform", "jitter_ranges", "resample_taps",
    "resized_crop", "rgb_to_gray", "sample_crop_params",
]
