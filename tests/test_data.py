"""Dataset sources on small real inputs made here, the cache, reduced sets and the batch pipeline."""

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from bench.data import DataSettings, DeviceData, load_dataset, parse_dataset_name, stratified_subset
from bench.data.batches import random_crop_flip
from bench.errors import BenchError, UnknownNameError


def test_digits_is_offline_stratified_and_unaugmented(digits):
    assert digits.train_images.dtype == torch.uint8 and digits.train_images.shape[1:] == (1, 8, 8)
    assert digits.train_labels.numel() + digits.test_labels.numel() == 1797
    assert not digits.augment and digits.num_classes == 10
    shares = digits.test_labels.bincount() / digits.test_labels.numel()
    assert torch.all((shares - 0.1).abs() < 0.02)


def test_reduced_name_gives_seeded_stratified_subset():
    assert parse_dataset_name("cifar10@5k") == ("cifar10", 5000)
    assert parse_dataset_name("digits@500") == ("digits", 500)
    reduced = load_dataset("digits@500")
    full = load_dataset("digits")
    assert reduced.train_labels.numel() == 500
    assert reduced.train_labels.bincount().min() >= 48
    assert torch.equal(reduced.test_labels, full.test_labels)
    again = load_dataset("digits@500")
    assert torch.equal(again.train_images, reduced.train_images)
    other = load_dataset("digits@500", DataSettings(subset_seed=1))
    assert not torch.equal(other.train_images, reduced.train_images)


@pytest.mark.parametrize("name", ["digits@0", "digits@1.5", "digits@x", "digits@99k"])
def test_bad_reduced_names_are_one_line_errors(name):
    with pytest.raises(BenchError, match="digits"):
        load_dataset(name)


def test_unknown_dataset_lists_accepted():
    with pytest.raises(UnknownNameError, match="accepted: cifar10, cifar100, digits, imagefolder, imagenet-sub"):
        load_dataset("mnist")


def test_stratified_subset_hits_count_and_shares():
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    chosen = stratified_subset(labels, 30, seed=3)
    assert chosen.numel() == 30 and labels[chosen].bincount().tolist() == [21, 6, 3]


def test_cache_is_written_once_and_reused(tmp_path):
    settings = DataSettings(cache_dir=str(tmp_path))
    load_dataset("digits", settings)
    files = list(tmp_path.glob("digits-*.pt"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    load_dataset("digits", settings)
    assert files[0].stat().st_mtime_ns == stamp
    files[0].write_bytes(b"torn")  # a corrupt cache file is rebuilt, not fatal
    assert load_dataset("digits", settings).train_labels.numel() > 0


# --- CIFAR through torchvision's real loader, on a fake archive in the exact on-disk format -----


def _write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], label_key: str) -> str:
    with path.open("wb") as handle:
        pickle.dump({"data": images.reshape(len(labels), -1), label_key: labels}, handle)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture()
def fake_cifar10(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train_list = []
    for index in range(1, 6):
        images = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
        labels = [i % 10 for i in range(20)]
        name = f"data_batch_{index}"
        train_list.append([name, _write_cifar_batch(folder / name, images, labels, "labels")])
    test_images = rng.integers(0, 256, (30, 3, 32, 32), dtype=np.uint8)
    test_md5 = _write_cifar_batch(folder / "test_batch", test_images, [i % 10 for i in range(30)], "labels")
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)
    meta_md5 = hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest()
    # torchvision checks the md5 of the real release; point it at our files' checksums instead
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "test_list", [["test_batch", test_md5]])
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "meta",
                        {"filename": "batches.meta", "key": "label_names", "md5": meta_md5})
    return tmp_path, test_images


def test_cifar10_reads_torchvision_batches(fake_cifar10):
    root, test_images = fake_cifar10
    data = load_dataset("cifar10", DataSettings(data_root=str(root)))
    assert data.train_images.shape == (100, 3, 32, 32) and data.test_images.shape == (30, 3, 32, 32)
    assert torch.equal(data.test_images, torch.from_numpy(test_images))
    assert data.augment and data.classes[0] == "class0" and data.num_classes == 10
    assert data.train_labels.bincount().tolist() == [10] * 10


def _export_as_image_folder(archive_root: Path, target: Path, class_names) -> None:
    """Write the archive's images as train/<class>/N.png and test/<class>/N.png (lossless)."""
    data = load_dataset("cifar10", DataSettings(data_root=str(archive_root), cache_dir=str(target / "cache")))
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):
        for index, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            folder = target / split / class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:04d}.png")


def test_cifar10_reads_an_image_folder_export_with_the_official_labels(fake_cifar10, tmp_path):
    from bench.data.sources import CIFAR10_CLASSES

    archive_root, _ = fake_cifar10
    export = tmp_path / "export"
    _export_as_image_folder(archive_root, export, CIFAR10_CLASSES)
    archive = load_dataset("cifar10", DataSettings(data_root=str(archive_root)))
    folder = load_dataset("cifar10", DataSettings(data_root=str(export)))
    assert archive.layout == "torchvision-archive" and folder.layout == "image-folder"
    assert folder.classes == list(CIFAR10_CLASSES) and folder.num_classes == 10 and folder.augment
    for split in ("train", "test"):
        label_of = {image.numpy().tobytes(): int(label) for image, label in
                    zip(getattr(archive, f"{split}_images"), getattr(archive, f"{split}_labels"), strict=True)}
        images, labels = getattr(folder, f"{split}_images"), getattr(folder, f"{split}_labels")
        assert len(labels) == len(label_of)
        assert [label_of[image.numpy().tobytes()] for image in images] == labels.tolist()
    reduced = load_dataset("cifar10@50", DataSettings(data_root=str(export)))
    assert reduced.train_labels.bincount().tolist() == [5] * 10


def test_cifar_image_folder_with_other_class_names_is_one_clear_error(fake_cifar10, tmp_path):
    from bench.data.sources import CIFAR10_CLASSES

    archive_root, _ = fake_cifar10
    export = tmp_path / "export"
    _export_as_image_folder(archive_root, export, ("aeroplane", *CIFAR10_CLASSES[1:]))
    with pytest.raises(BenchError, match=r"missing: airplane; unexpected: aeroplane") as error:
        load_dataset("cifar10", DataSettings(data_root=str(export)))
    assert "\n" not in str(error.value)
    with pytest.raises(BenchError, match=r"missing: apple, aquarium_fish"):
        load_dataset("cifar100", DataSettings(data_root=str(export)))


def test_missing_cifar_root_is_one_clear_line(tmp_path):
    with pytest.raises(BenchError, match=r"cifar-10-batches-py/.*train/ and test/.*--download") as error:
        load_dataset("cifar10", DataSettings(data_root=str(tmp_path)))
    assert "\n" not in str(error.value)
    with pytest.raises(BenchError, match="does not exist"):
        load_dataset("cifar100", DataSettings(data_root=str(tmp_path / "nowhere")))
    with pytest.raises(BenchError, match="needs --data-root"):
        load_dataset("imagefolder", DataSettings())


# --- ImageFolder and the ImageNet subsample ------------------------------------------------------


def _image_tree(root: Path, classes: int, per_class: dict[str, int], size: int) -> None:
    rng = np.random.default_rng(1)
    for split, count in per_class.items():
        for cls in range(classes):
            folder = root / split / f"c{cls}"
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")


def test_imagefolder_decodes_and_resizes(tmp_path):
    _image_tree(tmp_path, classes=3, per_class={"train": 4, "test": 2}, size=32)
    data = load_dataset("imagefolder", DataSettings(data_root=str(tmp_path)))
    first = np.array(Image.open(tmp_path / "train" / "c0" / "0.png"))
    assert torch.equal(data.train_images[0], torch.from_numpy(first).permute(2, 0, 1))
    assert data.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.classes == ["c0", "c1", "c2"] and data.augment
    small = load_dataset("imagefolder", DataSettings(data_root=str(tmp_path), image_size=16))
    assert small.train_images.shape == (12, 3, 16, 16) and not small.augment


def test_imagenet_sub_samples_an_imagefolder_root(tmp_path):
    _image_tree(tmp_path, classes=4, per_class={"train": 10, "val": 5}, size=48)
    settings = DataSettings(data_root=str(tmp_path), imagenet_train_size=20, imagenet_test_size=8)
    data = load_dataset("imagenet-sub", settings)
    assert data.train_images.shape == (20, 3, 32, 32) and data.test_images.shape == (8, 3, 32, 32)
    assert data.train_labels.bincount().tolist() == [5, 5, 5, 5]


def test_imagenet_sub_reads_downsampled_batch_files(tmp_path):
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 256, (40, 3072), dtype=np.uint8)
    for index, part in enumerate((rows[:20], rows[20:]), 1):
        with (tmp_path / f"train_data_batch_{index}").open("wb") as handle:
            pickle.dump({"data": part, "labels": [1 + i % 4 for i in range(20)]}, handle)
    np.savez(tmp_path / "val_data.npz", data=rows[:8], labels=np.array([1, 2, 3, 4] * 2))
    settings = DataSettings(data_root=str(tmp_path), imagenet_train_size=12, imagenet_test_size=8)
    data = load_dataset("imagenet-sub", settings)
    assert data.num_classes == 4 and data.train_labels.numel() == 12
    assert torch.equal(data.test_images[0], torch.from_numpy(rows[0]).reshape(3, 32, 32))
    assert data.test_labels.tolist() == [0, 1, 2, 3] * 2


# --- batches -------------------------------------------------------------------------------------


def test_batched_crop_and_flip_match_per_image_reference():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    offsets = torch.randint(0, 9, (6, 2))
    flips = torch.tensor([True, False, True, False, False, True])
    out = random_crop_flip(images, offsets, flips, padding=4)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for index in range(6):
        row, col = offsets[index].tolist()
        expected = padded[index, :, row : row + 32, col : col + 32]
        if flips[index]:
            expected = expected.flip(-1)
        assert torch.equal(out[index], expected)


def test_epoch_order_is_seeded_and_batches_are_normalised(digits):
    data = DeviceData(digits, "cpu")
    first = [labels for _, labels in data.train_batches(seed=5, batch_size=100)]
    again = [labels for _, labels in data.train_batches(seed=5, batch_size=100)]
    other = [labels for _, labels in data.train_batches(seed=6, batch_size=100)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert sum(labels.numel() for labels in first) == data.train_size
    images = torch.cat([images for images, _ in data.train_batches(seed=5, batch_size=2000)])
    assert images.mean().item() == pytest.approx(0.0, abs=1e-4) and images.std().item() == pytest.approx(1.0, abs=1e-3)
