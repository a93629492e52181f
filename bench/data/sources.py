"""The dataset sources: digits, cifar10, cifar100, imagefolder and imagenet-sub.

- `digits`: scikit-learn's bundled 8x8 digits (1,797 images, offline); a fixed stratified 20% test
  split; no augmentation (flipping a digit changes it).
- `cifar10`, `cifar100`: a `--data-root` in one of two layouts, detected and recorded (cache key,
  `ImageData.layout`, the job's provenance): torchvision's archive folders (`cifar-10-batches-py/`,
  `cifar-100-python/`; `--download` fetches them), or an image-folder export (`train/<class>/*.png|jpg`
  and `test/<class>/*`, e.g. the CIFAR-10 JPEG copy). Labels follow the official CIFAR class order,
  matched by class name, so both layouts give the same labels; a folder whose class names are not
  CIFAR's is one error naming the difference.
- `imagefolder`: any ImageFolder root with `train/` and `test/` (or `val/`) subfolders, e.g. the
  CIFAR-10 JPEG copy; images are squashed to `image_size` x `image_size` if they are another size.
- `imagenet-sub`: ImageNet at 32x32 with a fixed-seed stratified sample of 100,000 training and
  10,000 test images (sizes are settings). Read from an ImageFolder root (`train/`, `val/`; only the
  sampled files are decoded) or from the official downsampled-ImageNet batch files
  (`train_data_batch_1..10` and `val_data`, pickled or `.npz`, Chrabaszcz et al. 2017).

32x32 colour sources get the standard crop (pad 4) + flip augmentation.
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.data.core import (
    DATASETS,
    DataSettings,
    ImageData,
    Source,
    channel_stats,
    files_fingerprint,
    folder_fingerprint,
    stratified_subset,
)
from bench.errors import BenchError

DECODE_THREADS = 4
DIGITS_TEST_FRACTION = 0.2
DIGITS_IMAGES = 1797
"""scikit-learn's bundled digits (`load_digits().target.size`)."""
CIFAR_SIZES = (50_000, 10_000)
"""Training and test images of CIFAR-10 and CIFAR-100."""


def _image_data(train_images, train_labels, test_images, test_labels, num_classes, augment, classes=None,
                layout=None):
    mean, std = channel_stats(train_images)
    return ImageData(
        train_images=train_images.contiguous(),
        train_labels=train_labels.long(),
        test_images=test_images.contiguous(),
        test_labels=test_labels.long(),
        num_classes=num_classes,
        mean=mean,
        std=std,
        augment=augment,
        classes=classes,
        layout=layout,
    )


# --- digits -------------------------------------------------------------------------------------


def load_digits(settings: DataSettings) -> ImageData:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    test_index = stratified_subset(labels, round(DIGITS_TEST_FRACTION * labels.numel()), seed=0)
    is_test = torch.zeros(labels.numel(), dtype=torch.bool)
    is_test[test_index] = True
    return _image_data(images[~is_test], labels[~is_test], images[is_test], labels[is_test], 10, augment=False)


def _digits_sizes(settings: DataSettings) -> tuple[int, int]:
    test = round(DIGITS_TEST_FRACTION * DIGITS_IMAGES)
    return DIGITS_IMAGES - test, test


DATASETS.register("digits")(Source(load=load_digits, cache_key=lambda settings: {"version": 1}, sizes=_digits_sizes))


# --- CIFAR (torchvision archives or an image-folder export) ----------------------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl",
    "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
    "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin",
    "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp",
    "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
    "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
"""The official label order (the `batches.meta` / `meta` files of the CIFAR releases)."""

ARCHIVE_LAYOUT, FOLDER_LAYOUT = "torchvision-archive", "image-folder"


@dataclass(frozen=True)
class Cifar:
    """CIFAR-10 or CIFAR-100 from torchvision's archive folder or from an image-folder export."""

    dataset_class: str
    folder: str
    classes: tuple[str, ...]

    def layout(self, settings: DataSettings) -> str:
        """`torchvision-archive` if the archive folder is there (or will be downloaded), else `image-folder`
        if `train/` and `test/` are; otherwise a one-line error naming both layouts."""
        root = _require_root(settings, self.dataset_class)
        if (root / self.folder).is_dir() or settings.download:
            return ARCHIVE_LAYOUT
        if (root / "train").is_dir() and (root / "test").is_dir():
            return FOLDER_LAYOUT
        raise BenchError(
            f"{self.dataset_class}: {root} holds neither {self.folder}/ (torchvision's layout) nor train/ and test/ "
            f"class folders (an image-folder export); accepted: one of them, or --download"
        )

    def load(self, settings: DataSettings) -> ImageData:
        if self.layout(settings) == FOLDER_LAYOUT:
            return self._load_folder(_require_root(settings, self.dataset_class))
        return self._load_archive(settings)

    def _load_archive(self, settings: DataSettings) -> ImageData:
        import torchvision

        root = _require_root(settings, self.dataset_class)
        dataset_class = getattr(torchvision.datasets, self.dataset_class)
        splits = []
        for train in (True, False):
            try:
                split = dataset_class(root=str(root), train=train, download=settings.download)
            except RuntimeError as error:
                raise BenchError(
                    f"{self.dataset_class} not found or corrupt under {root} (looked for {root / self.folder}: "
                    f"{error}); pass --download to fetch it, or --data-root DIR for the folder holding {self.folder}"
                ) from None
            images = torch.from_numpy(split.data).permute(0, 3, 1, 2)
            splits.append((images, torch.tensor(split.targets)))
        (train_images, train_labels), (test_images, test_labels) = splits
        return _image_data(train_images, train_labels, test_images, test_labels, len(self.classes), True,
                           list(split.classes), layout=ARCHIVE_LAYOUT)

    def _load_folder(self, root: Path) -> ImageData:
        splits = []
        for split in ("train", "test"):
            classes, paths, labels = _folder_split(root / split)
            official = self.official_labels(classes, root / split)
            splits.append((_decode(paths, 32), official[labels]))
        (train_images, train_labels), (test_images, test_labels) = splits
        return _image_data(train_images, train_labels, test_images, test_labels, len(self.classes), True,
                           list(self.classes), layout=FOLDER_LAYOUT)

    def official_labels(self, folder_classes: list[str], where: Path) -> torch.Tensor:
        """Folder class index -> official CIFAR label, by class name; one error naming any mismatch."""
        missing = sorted(set(self.classes) - set(folder_classes))
        unexpected = sorted(set(folder_classes) - set(self.classes))
        if missing or unexpected:
            raise BenchError(
                f"{self.dataset_class}: the class folders under {where} are not CIFAR's (missing: "
                f"{', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'}); accepted: one "
                f"folder per class named as in {self.dataset_class}: {', '.join(self.classes[:4])}, ..."
            )
        return torch.tensor([self.classes.index(name) for name in folder_classes])

    def cache_key(self, settings: DataSettings) -> dict:
        """The root, the layout and what defines the files: the archive files' sizes (a partial or replaced
        copy rebuilds the cache), or the image folder's file list with sizes and mtimes."""
        root = _require_root(settings, self.dataset_class)
        layout = self.layout(settings)
        key = {"root": str(root.resolve()), "layout": layout}
        if layout == FOLDER_LAYOUT:
            return key | {"files": {split: folder_fingerprint(root / split) for split in ("train", "test")}}
        folder = root / self.folder
        return key | {"files": folder_fingerprint(folder, mtimes=False) if folder.is_dir() else "not downloaded yet"}


for _name, _cifar in {
    "cifar10": Cifar("CIFAR10", "cifar-10-batches-py", CIFAR10_CLASSES),
    "cifar100": Cifar("CIFAR100", "cifar-100-python", CIFAR100_CLASSES),
}.items():
    DATASETS.register(_name)(Source(load=_cifar.load, cache_key=_cifar.cache_key, sizes=lambda settings: CIFAR_SIZES))


# --- ImageFolder ----------------------------------------------------------------------------------


def _require_root(settings: DataSettings, what: str) -> Path:
    if not settings.data_root:
        raise BenchError(f"dataset {what} needs --data-root DIR; none was given")
    root = Path(settings.data_root).expanduser()
    if not root.is_dir() and not settings.download:
        raise BenchError(f"data root {root} for {what} does not exist; pass --data-root DIR (or --download for CIFAR)")
    return root


def _split_dir(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise BenchError(f"{what}: no {' or '.join(names)}/ folder under {root}; expected an ImageFolder root")


def _decode(paths: list[str], size: int) -> torch.Tensor:
    """Decode image files once (PIL, in threads) into a uint8 (N, 3, size, size) tensor."""
    from PIL import Image

    def one(path: str) -> np.ndarray:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if image.size != (size, size):
                    image = image.resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:  # empty, truncated, not an image
            raise BenchError(f"image {path} cannot be decoded ({type(error).__name__}: {error}); accepted: a "
                             "readable image file (remove or replace it)") from None

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        return torch.from_numpy(np.stack(list(pool.map(one, paths)))).permute(0, 3, 1, 2).contiguous()


def _folder_split(split_dir: Path):
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(split_dir), loader=lambda path: path)
    except (FileNotFoundError, OSError) as error:  # an empty class folder, no class folder at all
        raise BenchError(f"image folder {split_dir}: {error}; accepted: one folder per class, each holding at least "
                         "one image") from None
    return folder.classes, [path for path, _ in folder.samples], torch.tensor(folder.targets)


def _load_image_folder_root(root: Path, what: str, size: int, train_count: int | None, test_count: int | None,
                            seed: int) -> ImageData:
    train_classes, train_paths, train_labels = _folder_split(_split_dir(root, ("train",), what))
    test_classes, test_paths, test_labels = _folder_split(_split_dir(root, ("test", "val"), what))
    if train_classes != test_classes:
        raise BenchError(f"{what}: the train/ and test/ class folders under {root} differ")
    splits = []
    for paths, labels, count in ((train_paths, train_labels, train_count), (test_paths, test_labels, test_count)):
        keep = stratified_subset(labels, count, seed) if count else torch.arange(labels.numel())
        splits.append((_decode([paths[i] for i in keep.tolist()], size), labels[keep]))
    (train_images, train_labels), (test_images, test_labels) = splits
    return _image_data(train_images, train_labels, test_images, test_labels, len(train_classes),
                       augment=size == 32, classes=train_classes)


def load_image_folder(settings: DataSettings) -> ImageData:
    root = _require_root(settings, "imagefolder")
    return _load_image_folder_root(root, "imagefolder", settings.image_size, None, None, settings.subset_seed)


def _split_fingerprints(root: Path, what: str) -> dict:
    """Fingerprints of an ImageFolder root's train/ and test/ (or val/) folders; checks the layout."""
    return {split[0]: folder_fingerprint(_split_dir(root, split, what)) for split in (("train",), ("test", "val"))}


def _folder_cache_key(settings: DataSettings) -> dict:
    root = _require_root(settings, "imagefolder")
    return {"root": str(root.resolve()), "size": settings.image_size, "files": _split_fingerprints(root, "imagefolder")}


def _image_folder_sizes(settings: DataSettings) -> tuple[int, int] | None:
    """Files under train/ and test/ (or val/), counted when the root is there; None otherwise."""
    root = Path(settings.data_root).expanduser() if settings.data_root else None
    if root is None or not root.is_dir():
        return None
    try:
        splits = [_split_dir(root, names, "imagefolder") for names in (("train",), ("test", "val"))]
    except BenchError:
        return None
    return tuple(sum(1 for path in split.rglob("*") if path.is_file()) for split in splits)


DATASETS.register("imagefolder")(Source(load=load_image_folder, cache_key=_folder_cache_key,
                                        sizes=_image_folder_sizes))


# --- ImageNet subsample ---------------------------------------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays, lists, dicts, strings and numbers, and nothing else."""

    ALLOWED = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused {module}.{name}: only numpy arrays, lists, dicts and numbers")
        return super().find_class(module, name)


def _read_batch_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return archive["data"], np.asarray(archive["labels"])
    try:
        with path.open("rb") as handle:
            batch = _ArraysOnly(handle, encoding="latin1").load()
        return np.asarray(batch["data"]), np.asarray(batch["labels"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise BenchError(f"imagenet-sub: batch file {path} is not a downsampled-ImageNet batch ({error}); "
                         "accepted: pickles or .npz of numpy arrays 'data' and 'labels'") from None


def _load_downsampled_batches(root: Path, settings: DataSettings) -> ImageData:
    """The official 32x32 downsampled ImageNet: rows of 3072 uint8 (RGB planes), labels from 1."""
    splits = []
    for pattern, count in (("train_data_batch_*", settings.imagenet_train_size),
                           ("val_data*", settings.imagenet_test_size)):
        files = sorted(root.rglob(pattern), key=lambda path: (len(path.name), path.name))
        if not files:
            raise BenchError(f"imagenet-sub: no {pattern} files under {root}")
        parts = [_read_batch_file(path) for path in files]
        rows = np.concatenate([data for data, _ in parts])
        labels = torch.from_numpy(np.concatenate([labels for _, labels in parts]).astype(np.int64) - 1)
        keep = stratified_subset(labels, count, settings.subset_seed)
        side = int(round((rows.shape[1] / 3) ** 0.5))
        images = torch.from_numpy(rows[keep.numpy()]).reshape(-1, 3, side, side)
        splits.append((images, labels[keep]))
    (train_images, train_labels), (test_images, test_labels) = splits
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    return _image_data(train_images, train_labels, test_images, test_labels, num_classes, augment=side == 32)


def load_imagenet_sub(settings: DataSettings) -> ImageData:
    root = _require_root(settings, "imagenet-sub")
    if any(root.rglob("train_data_batch_*")):
        return _load_downsampled_batches(root, settings)
    return _load_image_folder_root(root, "imagenet-sub", settings.image_size, settings.imagenet_train_size,
                                   settings.imagenet_test_size, settings.subset_seed)


def _imagenet_cache_key(settings: DataSettings) -> dict:
    root = _require_root(settings, "imagenet-sub")
    batches = sorted(root.rglob("train_data_batch_*")) + sorted(root.rglob("val_data*"))
    files = files_fingerprint(batches) if batches else _split_fingerprints(root, "imagenet-sub")
    return {
        "root": str(root.resolve()),
        "files": files,
        "size": settings.image_size,
        "train": settings.imagenet_train_size,
        "test": settings.imagenet_test_size,
        "seed": settings.subset_seed,
    }


DATASETS.register("imagenet-sub")(Source(
    load=load_imagenet_sub, cache_key=_imagenet_cache_key,
    sizes=lambda settings: (settings.imagenet_train_size, settings.imagenet_test_size)))
