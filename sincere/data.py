"""Datasets, and what a run's training and evaluation sets are.

Datasets: CIFAR-10 and CIFAR-100 (read from CIFAR's own pickle batches; downloaded to ``data/``
with torchvision's downloader on first use), Fashion-MNIST (``data/``, else Debian's
``dataset-fashion-mnist`` package folder, else downloaded), scikit-learn's digits (bundled, for
tests), and any folder of images in torchvision's ImageFolder layout.

Every dataset yields ``(image, label)`` with a PIL image. :func:`build_data` puts SupCon's two-view
augmentation on the training set (:mod:`sincere.augment.pil`: ``MultiView`` of
``contrastive_transform``, one (n_views, C, H, W) tensor per image) and :func:`plain_transform` on
the evaluation sets; :func:`dataset_tensors` gives the on-device pipeline
(:mod:`sincere.augment.device`) an in-memory dataset as one uint8 tensor.
"""

from __future__ import annotations

import gzip
import pickle
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import transforms as T

from sincere.augment.pil import MultiView, contrastive_transform
from sincere.config import ConfigError, PretrainConfig

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

CIFAR = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "archive": "cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", "label_names"),
        "labels": "labels",
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2023, 0.1994, 0.2010),
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "archive": "cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", "fine_label_names"),
        "labels": "fine_labels",
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
    },
}
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]


class DataNotFoundError(FileNotFoundError):
    """A dataset that is neither on disk nor downloadable; the message says where it looked."""


class UnreadableImageError(DataNotFoundError):
    """An image file of an ImageFolder that PIL cannot read; the message names the file and the
    fix. Raised inside a DataLoader worker it comes back to the main process as
    ``UnreadableImageError("Caught ... Original Traceback ... UnreadableImageError: <message>")``
    (torch rebuilds it from the worker's text): the constructor keeps only the message."""

    def __init__(self, message: str):
        text = str(message).strip()
        if "Original Traceback" in text:
            last = text.splitlines()[-1]
            text = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(text)


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


class ArrayImages(Dataset):
    """Images held as a uint8 array (N, H, W) or (N, H, W, C), served as PIL images."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], classes: list[str],
                 transform: Optional[Callable] = None):
        self.images = images
        self.targets = [int(y) for y in labels]
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise DataNotFoundError(f"{path} is not a readable CIFAR batch ({err}); delete it and "
                                "let it download again, or put a good copy there") from None


def _cifar_folder(name: str, root: Path, download: bool = True) -> Path:
    spec = CIFAR[name]
    folder = root / spec["folder"]
    if folder.is_dir():
        return folder
    archive = root / spec["archive"]
    from torchvision.datasets.utils import download_and_extract_archive, extract_archive
    if archive.is_file():
        extract_archive(str(archive), str(root))
    elif not download:
        raise DataNotFoundError(
            f"{name} is not in {folder} (nor {archive}) and downloading is off. Download "
            f"{spec['archive']} from {spec['url']} and put it in {root}/.")
    else:
        try:
            download_and_extract_archive(spec["url"], str(root), filename=spec["archive"],
                                         md5=spec["md5"])
        except Exception as err:  # network errors come in many types
            raise DataNotFoundError(
                f"{name} is not in {folder} (nor {archive}) and could not be downloaded from "
                f"{spec['url']} ({type(err).__name__}: {err}). Download {spec['archive']} "
                f"yourself and put it in {root}/.") from None
    if not folder.is_dir():
        raise DataNotFoundError(f"{name}: {archive} did not contain {spec['folder']}/")
    return folder


def load_cifar(name: str, root: str | Path, train: bool, download: bool = True) -> ArrayImages:
    """CIFAR-10 / CIFAR-100 from the python-pickle batches of the official archive."""
    spec = CIFAR[name]
    folder = _cifar_folder(name, Path(root), download)
    images, labels = [], []
    for batch in spec["train" if train else "test"]:
        path = folder / batch
        if not path.is_file():
            raise DataNotFoundError(f"{path} is missing: the {name} folder {folder} is "
                                    "incomplete; delete it to download again")
        entry = _unpickle(path)
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry[spec["labels"]])
    meta_file, meta_key = spec["meta"]
    classes = list(_unpickle(folder / meta_file)[meta_key])
    data = np.concatenate(images).transpose(0, 2, 3, 1).copy()   # NHWC for PIL
    return ArrayImages(data, labels, classes)


def write_cifar(name: str, root: str | Path, train: bool, images: np.ndarray,
                labels: Sequence[int], classes: Sequence[str]) -> Path:
    """The inverse of :func:`load_cifar`: write one split of ``name`` (``cifar10`` /
    ``cifar100``) into ``root/<folder>/`` in the official pickle layout, and the meta file with
    the class names. ``images`` are uint8, (N, 32, 32, 3) as load_cifar gives them or (N, 3072)
    rows in CIFAR's channel-major order; they are split evenly over the split's batch files
    (CIFAR-10's five training batches), each a dict of 'data' (uint8 (n, 3072) rows), the
    labels under the spec's key and 'batch_label'. Returns the folder."""
    spec = CIFAR[name]
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] not in ((32, 32, 3), (3072,)):
        raise ValueError(f"CIFAR images must be uint8 (N, 32, 32, 3) or (N, 3072); got "
                         f"{images.dtype} {images.shape}")
    if images.ndim == 4:                                          # NHWC -> CHW rows
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), 3072)
    rows = images
    labels = [int(y) for y in labels]
    if len(labels) != len(rows):
        raise ValueError(f"{len(rows)} images but {len(labels)} labels")
    folder = Path(root) / spec["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    batches = spec["train" if train else "test"]
    bounds = np.linspace(0, len(rows), len(batches) + 1).round().astype(int)
    for batch, a, b in zip(batches, bounds[:-1], bounds[1:]):
        with open(folder / batch, "wb") as f:
            pickle.dump({"data": rows[a:b], spec["labels"]: labels[a:b], "batch_label": batch}, f)
    meta_file, meta_key = spec["meta"]
    with open(folder / meta_file, "wb") as f:
        pickle.dump({meta_key: list(classes)}, f)
    return folder



def write_random_cifar(root: str | Path, name: str = "cifar10", per_batch: int = 20,
                       n_classes: Optional[int] = None, seed: int = 0,
                       archive: bool = False) -> np.ndarray:
    """A small CIFAR-10 / CIFAR-100 of random uint8 images in the official format, for tests and
    benchmarks (CIFAR cannot be downloaded on every machine): ``per_batch`` images per batch file
    of each split (CIFAR-10: five training files and one test file), drawn from
    ``numpy.random.default_rng(seed)`` as channel-major rows of 3072 (the training split's rows,
    then the test split's), labels 0, 1, ... cycling through ``n_classes`` classes (default: the
    dataset's 10 or 100) named ``class0``, ``class1``, ..., written by :func:`write_cifar`.
    ``archive=False``: the extracted folder ``root/<folder>/``; ``archive=True``: the tar.gz
    archive as downloaded, ``root/<archive>`` (the folder is staged in ``root/staging/``), which
    :func:`load_cifar` extracts on first use. Returns the rows of the first training batch."""
    if name not in CIFAR:
        raise ValueError(f"no CIFAR dataset named {name!r}; use one of {', '.join(CIFAR)}")
    n_classes = n_classes or (10 if name == "cifar10" else 100)
    rng = np.random.default_rng(seed)
    target = Path(root) / "staging" if archive else Path(root)
    first = None
    for train in (True, False):
        n_batches = len(CIFAR[name]["train" if train else "test"])
        rows = rng.integers(0, 256, (n_batches * per_batch, 3072), dtype=np.uint8)
        labels = np.tile(np.arange(per_batch) % n_classes, n_batches)
        folder = write_cifar(name, target, train, rows, labels,
                             [f"class{i}" for i in range(n_classes)])
        first = rows[:per_batch] if first is None else first
    if archive:
        with tarfile.open(Path(root) / CIFAR[name]["archive"], "w:gz") as tar:
            tar.add(folder, arcname=folder.name)
    return first

def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_mnist_files(root: Path, download: bool) -> dict[str, Path]:
    names = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    candidates = [root / "FashionMNIST" / "raw", root / "fashion-mnist", FASHION_MNIST_SYSTEM_DIR]
    for folder in candidates:
        found = {}
        for key, stem in names.items():
            for suffix in ("", ".gz"):
                if (folder / (stem + suffix)).is_file():
                    found[key] = folder / (stem + suffix)
                    break
        if len(found) == len(names):
            return found
    if download:
        from torchvision.datasets import FashionMNIST
        try:
            FashionMNIST(str(root), train=True, download=True)
            return _fashion_mnist_files(root, download=False)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
    else:
        reason = "download disabled"
    raise DataNotFoundError(
        "Fashion-MNIST not found; looked in " + ", ".join(str(c) for c in candidates)
        + f", and downloading failed ({reason}). Install it with `make data` (Debian package "
        "dataset-fashion-mnist) or put the four idx files in data/FashionMNIST/raw/.")


def load_fashion_mnist(root: str | Path, train: bool, download: bool = True) -> ArrayImages:
    files = _fashion_mnist_files(Path(root), download)
    split = "train" if train else "test"
    images = _read_idx(files[f"{split}_images"])
    labels = _read_idx(files[f"{split}_labels"])
    return ArrayImages(images.copy(), labels.tolist(), list(FASHION_MNIST_CLASSES))


def load_digits(train: bool, seed: int = 0) -> ArrayImages:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), a stratified 80/20 split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split
    bunch = sk_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)
    idx_train, idx_test = train_test_split(np.arange(len(images)), test_size=0.2,
                                           stratify=bunch.target, random_state=seed)
    idx = idx_train if train else idx_test
    return ArrayImages(images[idx], bunch.target[idx].tolist(), [str(d) for d in range(10)])


def read_image(path: str):
    """ImageFolder's loader (PIL, converted to RGB as torchvision's default), with a file PIL
    cannot read named in an :class:`UnreadableImageError` instead of a bare PIL traceback."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:   # UnidentifiedImageError is an OSError
        raise UnreadableImageError(
            f"{path} is not a readable image ({type(err).__name__}: "
            f"{' '.join(str(err).split())}); delete or replace the file, or set "
            "data.skip_unreadable=true to leave unreadable files out") from None


def readable_samples(dataset) -> list[Path]:
    """``data.skip_unreadable``: drop the files :func:`read_image` cannot read from an
    ImageFolder (each file is read once, in full); returns the dropped paths."""
    kept, dropped = [], []
    for path, label in dataset.samples:
        try:
            read_image(path)
            kept.append((path, label))
        except UnreadableImageError:
            dropped.append(Path(path))
    dataset.samples = dataset.imgs = kept
    dataset.targets = [label for _, label in kept]
    return dropped


def load_imagefolder(path: str | Path, train: bool, skip_unreadable: bool = False):
    """One split of an ImageFolder tree: ``train/``, or ``test/`` (or ``val/``). Files PIL cannot
    read stop the run at the first one, named (:func:`read_image`), or with ``skip_unreadable``
    are left out here, with their count printed."""
    from torchvision.datasets import ImageFolder
    base = Path(path)
    split = base / "train" if train else next(
        (base / s for s in ("test", "val") if (base / s).is_dir()), base / "test")
    if not split.is_dir():
        raise DataNotFoundError(
            f"{split} is not a folder: data.path must hold train/ and test/ (or val/) folders "
            "with one sub-folder of images per class")
    try:
        dataset = ImageFolder(str(split), loader=read_image)
    except FileNotFoundError as err:               # no class folders, or no image files
        raise DataNotFoundError(
            f"{split} holds no images in ImageFolder's layout ({' '.join(str(err).split())}); "
            "put each class's images in a sub-folder of it (e.g. train/cat/1.png)") from None
    if skip_unreadable:
        dropped = readable_samples(dataset)
        if dropped:
            print(f"data.skip_unreadable: left out {len(dropped)} unreadable image file(s) of "
                  f"{len(dropped) + len(dataset.samples)} in {split} (first: {dropped[0]})")
        if not dataset.samples:
            raise DataNotFoundError(f"{split}: no readable images left; check the files")
    return dataset


# ---------------------------------------------------------------------------------------------
# The evaluation transform (the training augmentation: sincere/augment/)
# ---------------------------------------------------------------------------------------------


def plain_transform(size: int, native: int, mean, std) -> T.Compose:
    """The deterministic transform of evaluation (kNN memory bank, linear probe, test set):
    ``Resize(size)`` and ``CenterCrop(size)`` when ``size`` is not the native side, then
    ``ToTensor`` and ``Normalize(mean, std)``. The training augmentation is
    :mod:`sincere.augment`."""
    steps = [] if size == native else [T.Resize(size), T.CenterCrop(size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


# ---------------------------------------------------------------------------------------------
# Everything a run needs
# ---------------------------------------------------------------------------------------------


@dataclass
class DataBundle:
    train: Dataset          # two-view (n_views, C, H, W) tensors and labels
    train_plain: Dataset    # one plain view per image (kNN memory bank)
    test_plain: Dataset
    classes: list[str]
    in_channels: int
    image_size: int
    mean: tuple
    std: tuple


def stratified_subset(dataset, n: int, seed: int, key: str = "data.subset"):
    """A class-stratified random subset of ``n`` items (all of them if n <= 0 or too large);
    ``n`` below the number of classes is a ConfigError naming ``key``."""
    if n <= 0 or n >= len(dataset):
        return dataset
    from sklearn.model_selection import train_test_split
    targets = np.asarray(dataset.targets)
    n_classes = len(np.unique(targets))
    if n < n_classes:
        raise ConfigError(f"{key}={n} cannot hold one image of each of the {n_classes} classes; "
                          f"set it to at least {n_classes} (or 0 for the whole set)")
    idx, _ = train_test_split(np.arange(len(targets)), train_size=n, stratify=targets,
                              random_state=seed)
    subset = Subset(dataset, np.sort(idx).tolist())
    subset.targets = targets[np.sort(idx)].tolist()
    subset.classes = dataset.classes
    return subset


def with_transform(dataset, transform):
    """A shallow copy of a dataset (or Subset) with another transform."""
    import copy
    if isinstance(dataset, Subset):
        out = copy.copy(dataset)
        out.dataset = with_transform(dataset.dataset, transform)
        return out
    out = copy.copy(dataset)
    out.transform = transform
    return out


def _image_stats(dataset, size: int, limit: int = 2000, seed: int = 0):
    g = np.random.default_rng(seed)
    idx = g.choice(len(dataset), size=min(limit, len(dataset)), replace=False)
    to_tensor = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])
    pixels = torch.stack([to_tensor(dataset[int(i)][0]) for i in idx])
    return tuple(pixels.mean(dim=(0, 2, 3)).tolist()), tuple(pixels.std(dim=(0, 2, 3)).tolist())


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one dataset by name: ``load(config, train, download)`` gives the split,
    ``native_size`` its image side (0: set by data.image_size), ``stats`` its per-channel
    (mean, std) (None: computed from the images), ``in_memory`` whether its images are one uint8
    array (what the on-device pipeline, data.pipeline=device, needs), ``fig3_class`` the target
    class of Figure 3 by default (None: the first class; read by
    ``sincere.analysis.outputs.figure3_class``)."""
    load: Callable[[PretrainConfig, bool, bool], Dataset]
    native_size: int
    stats: Optional[tuple]
    in_memory: bool = True
    fig3_class: Optional[str] = None


def _cifar_spec(name: str, fig3_class: Optional[str] = None) -> DatasetSpec:
    return DatasetSpec(lambda config, train, download: load_cifar(name, config.data.root, train,
                                                                  download),
                       32, (CIFAR[name]["mean"], CIFAR[name]["std"]), fig3_class=fig3_class)


# The dataset registry: every name the config accepts (``dataset=...``).
DATASETS: dict[str, DatasetSpec] = {
    "cifar10": _cifar_spec("cifar10", fig3_class="truck"),      # the paper's Figure 3
    "cifar100": _cifar_spec("cifar100"),
    "fashion-mnist": DatasetSpec(
        lambda config, train, download: load_fashion_mnist(config.data.root, train, download),
        28, FASHION_MNIST_STATS, fig3_class="Coat"),
    "digits": DatasetSpec(
        lambda config, train, download: load_digits(train, config.data.subset_seed), 8, None),
    "imagefolder": DatasetSpec(
        lambda config, train, download: load_imagefolder(config.data.path, train,
                                                         config.data.skip_unreadable), 0, None,
        in_memory=False),
}


def build_data(config: PretrainConfig, download: bool = True) -> DataBundle:
    """The datasets of a run (``config.dataset`` from :data:`DATASETS`): two-view training set,
    plain-transform training and test sets, and what the model needs to know about them."""
    name = config.dataset
    if name not in DATASETS:
        raise ConfigError(f"dataset {name!r} unknown; choose one of {list(DATASETS)}")
    spec = DATASETS[name]
    train, test = spec.load(config, True, download), spec.load(config, False, download)
    native, stats = spec.native_size, spec.stats

    size = config.data.image_size or native
    if size <= 0:
        raise ConfigError("dataset=imagefolder needs data.image_size (e.g. data.image_size=64)")
    first = train[0][0]
    in_channels = len(first.getbands())
    if config.data.mean is not None and config.data.std is not None:
        stats = (tuple(config.data.mean), tuple(config.data.std))
    elif stats is None:
        stats = _image_stats(train, size, seed=config.data.subset_seed)
    mean, std = stats
    if len(mean) != in_channels or len(std) != in_channels:
        raise ConfigError(f"data.mean/std need {in_channels} entries for {name}; got {mean}, {std}")

    train = stratified_subset(train, config.data.subset, config.data.subset_seed)
    test = stratified_subset(test, config.data.test_subset, config.data.subset_seed,
                             "data.test_subset")
    plain = plain_transform(size, native, mean, std)
    views = MultiView(contrastive_transform(config, size, mean, std), config.n_views)
    return DataBundle(
        train=with_transform(train, views),
        train_plain=with_transform(train, plain),
        test_plain=with_transform(test, plain),
        classes=list(train.classes),
        in_channels=in_channels, image_size=size, mean=tuple(mean), std=tuple(std))


def dataset_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of an in-memory dataset as one uint8 tensor (N, C, H, W) and its labels (N,)
    int64, for the on-device augmentation (:class:`sincere.loaders.DeviceTwoViewLoader`).

    Takes an :class:`ArrayImages` (CIFAR, Fashion-MNIST, digits) or a ``Subset`` of one at any
    depth (the stratified subsets of :func:`build_data`, e.g. ``DataBundle.train``); the
    dataset's transform is ignored."""
    indices = None
    base = dataset
    while isinstance(base, Subset):
        level = np.asarray(base.indices, dtype=np.int64)
        indices = level if indices is None else level[indices]
        base = base.dataset
    if not isinstance(base, ArrayImages):
        raise ValueError(f"dataset_tensors needs an ArrayImages dataset or a Subset of one; got "
                         f"{type(base).__name__} — use data.pipeline=pil for other datasets")
    images = base.images if indices is None else base.images[indices]
    labels = np.asarray(base.targets, dtype=np.int64)
    labels = labels if indices is None else labels[indices]
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"ArrayImages must hold uint8 (N, H, W) or (N, H, W, C) images; got "
                         f"{images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(np.ascontiguousarray(labels))


def install_fashion_mnist(root: str | Path) -> Path:
    """Copy Fashion-MNIST from Debian's package folder into ``root`` (the Makefile's data step)."""
    target = Path(root) / "FashionMNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for src in FASHION_MNIST_SYSTEM_DIR.glob("*-ubyte.gz"):
        dest = target / src.name[:-3]
        if not dest.is_file():
            with gzip.open(src, "rb") as fin, open(dest, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    return target
