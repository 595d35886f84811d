"""Tests for transgan.data: skipping unreadable images, preprocessing, pair/unpaired/class datasets."""

from __future__ import annotations

import gzip
import pickle
import random
import struct
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader

from transgan.data import (
    AlignedDataset,
    BadImageWarning,
    ClassFolderDataset,
    MnistIdxDataset,
    PairedFoldersDataset,
    Preprocess,
    UnalignedDataset,
    UnreadableImage,
    ZipClassDataset,
    class_dataset,
    list_images,
    load_image,
    paired_dataset,
    tensor_to_image,
    to_tensor,
)
from transgan.errors import TransganError

SMALL = Preprocess("resize_and_crop", load_size=20, crop_size=16)


def noise(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    array = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


def save(img: Image.Image, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def aligned_folder(root, count=3, w=16, h=12):
    for i in range(count):
        save(noise(2 * w, h, seed=i), root / f"{i}.png")
    return root


# ---------------------------------------------------------------- unreadable images in datasets
def bad_files(folder):
    """A truncated PNG and a garbage .jpg: both list as images, neither decodes."""
    data = (save(noise(16, 16, 5), folder / "tmp.png")).read_bytes()
    (folder / "tmp.png").unlink()
    (folder / "1_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "2_garbage.jpg").write_bytes(b"this is not a jpeg" * 10)


def test_dataset_skips_bad_images_with_one_warning_each(tmp_path):
    root = aligned_folder(tmp_path / "pairs", count=1)  # 0.png is good
    bad_files(root)
    for name in ["1_truncated.png", "2_garbage.jpg"]:
        with pytest.raises(UnreadableImage, match=name):  # a TransganError: one clear line for the CLI
            load_image(root / name)
    data = AlignedDataset(root, SMALL)
    assert len(data) == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [data[(i, 9)] for i in range(3) for _ in range(2)]
    messages = [str(w.message) for w in caught if issubclass(w.category, BadImageWarning)]
    assert len(messages) == 2
    assert any("skipping unreadable image" in m and "1_truncated.png" in m for m in messages)
    assert any("2_garbage.jpg" in m for m in messages)
    # The stand-in is the next readable index (wrapping), the same every time.
    assert all(item["A_path"].endswith("0.png") for item in items)
    assert all(torch.equal(item["A"], items[0]["A"]) for item in items)
    (root / "0.png").unlink()
    with pytest.warns(BadImageWarning), pytest.raises(TransganError, match="none of its 2 images could be read"):
        AlignedDataset(root, SMALL)[0]


# ---------------------------------------------------------------- transforms
@pytest.mark.parametrize(
    "mode, size",
    [
        ("resize_and_crop", (16, 16)),
        ("crop", (16, 16)),
        ("scale_width", (24, 18)),
        ("scale_width_and_crop", (16, 16)),
        ("none", (40, 32)),  # 30 -> nearest multiple of 4
    ],
)
def test_preprocess_output_sizes(mode, size):
    pre = Preprocess(mode, load_size=24, crop_size=16)
    img = noise(40, 30)
    for seed in range(4):
        assert pre(img, random.Random(seed)).size == size
    assert pre.output_size((40, 30)) == size


def test_preprocess_matches_torchvision_pipeline():
    """resize_and_crop + flip gives the same pixels as the reference's torchvision Compose."""
    pre = Preprocess("resize_and_crop", load_size=24, crop_size=16)
    img = noise(30, 20, seed=3)
    for seed in range(6):
        params = pre.get_params(img.size, random.Random(seed))
        ours = to_tensor(pre.apply(img, params))
        ref = TF.resize(img, [24, 24], TF.InterpolationMode.BICUBIC)
        ref = TF.crop(ref, params.y, params.x, 16, 16)
        ref = TF.hflip(ref) if params.flip else ref
        ref = TF.normalize(TF.to_tensor(ref), (0.5,) * 3, (0.5,) * 3)
        assert torch.equal(ours, ref)


def test_preprocess_rejects_bad_options():
    with pytest.raises(TransganError, match="unknown"):
        Preprocess("zoom")
    with pytest.raises(TransganError, match="crop_size=300 is larger than load_size=286"):
        Preprocess(crop_size=300)


def test_tensor_round_trip():
    img = noise(9, 7)
    tensor = to_tensor(img)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 7, 9)
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert np.array_equal(np.asarray(tensor_to_image(tensor)), np.asarray(img))
    assert tensor_to_image(torch.zeros(1, 2, 2)).getpixel((0, 0)) == 128  # 127.5 rounds, not truncates
    assert to_tensor(img.convert("L")).shape == (1, 7, 9)


# ---------------------------------------------------------------- paired and unpaired
def halves(color_a, color_b, w=16, h=12):
    img = Image.new("RGB", (2 * w, h), color_b)
    img.paste(Image.new("RGB", (w, h), color_a), (0, 0))
    return img


def test_aligned_direction_and_channels(tmp_path):
    save(halves((255, 0, 0), (0, 0, 255)), tmp_path / "0.png")
    item = AlignedDataset(tmp_path, SMALL)[0]
    assert set(item) == {"A", "B", "A_path", "B_path"}
    assert item["A"][0].mean() > 0.9 and item["B"][2].mean() > 0.9  # A red, B blue
    swapped = AlignedDataset(tmp_path, SMALL, direction="BtoA")[0]
    assert swapped["A"][2].mean() > 0.9 and swapped["B"][0].mean() > 0.9
    gray_in = AlignedDataset(tmp_path, SMALL, input_nc=1, output_nc=3)
    assert (gray_in.input_nc, gray_in.output_nc) == (1, 3)
    item = gray_in[(0, 1)]
    assert item["A"].shape == (1, 16, 16) and item["B"].shape == (3, 16, 16)
    with pytest.raises(TransganError, match="direction"):
        AlignedDataset(tmp_path, SMALL, direction="AB")


def test_aligned_a_and_b_share_crop_and_flip(tmp_path):
    half = noise(16, 12, seed=1)
    both = Image.new("RGB", (32, 12))
    both.paste(half, (0, 0))
    both.paste(half, (16, 0))
    save(both, tmp_path / "0.png")
    data = AlignedDataset(tmp_path, Preprocess("crop", crop_size=8))
    items = [data[(0, seed)] for seed in range(12)]
    assert all(torch.equal(item["A"], item["B"]) for item in items)
    assert len({item["A"].sum().item() for item in items}) > 1  # crops and flips do vary with the seed


def test_paired_folders(tmp_path):
    for i in range(3):
        save(noise(12, 12, i), tmp_path / "A" / f"{i}.png")
    save(noise(12, 12, 7), tmp_path / "B" / "0.jpg")
    save(noise(24, 24, 8), tmp_path / "B" / "1.png")  # other size: resized to A's
    save(noise(12, 12, 9), tmp_path / "B" / "extra.png")
    with pytest.warns(UserWarning, match=r"2 files have no partner.*A/2.png, B/extra.png"):
        data = paired_dataset(tmp_path, SMALL)
    assert isinstance(data, PairedFoldersDataset) and len(data) == 2
    item = data[(1, 3)]
    assert item["A_path"].endswith("A/1.png") and item["B_path"].endswith("B/1.png")
    assert item["A"].shape == item["B"].shape == (3, 16, 16)
    assert data[(0, 0)]["B_path"].endswith("0.jpg")
    with pytest.warns(UserWarning, match="no partner"):
        swapped = PairedFoldersDataset(tmp_path, SMALL, direction="BtoA")
    assert swapped[0]["A_path"].endswith("0.jpg")


def test_paired_folders_nothing_matches(tmp_path):
    save(noise(8, 8), tmp_path / "A" / "left.png")
    save(noise(8, 8), tmp_path / "B" / "right.png")
    with pytest.raises(TransganError, match="no file in A/ has a partner.*left.*right"):
        paired_dataset(tmp_path)
    assert isinstance(paired_dataset(aligned_folder(tmp_path / "ab")), AlignedDataset)


def unpaired(tmp_path, n_a=3, n_b=5):
    for i in range(n_a):
        save(noise(20, 20, i), tmp_path / "A" / f"a{i}.png")
    for i in range(n_b):
        save(noise(24, 20, 100 + i), tmp_path / "B" / f"b{i}.png")
    return tmp_path / "A", tmp_path / "B"


def test_unaligned_length_and_determinism(tmp_path):
    dir_a, dir_b = unpaired(tmp_path)
    data = UnalignedDataset(dir_a, dir_b, Preprocess("crop", crop_size=12))
    assert len(data) == 5
    assert data[(4, 0)]["A_path"].endswith("a1.png")  # A cycles: 4 % 3
    first, again = data[(2, 77)], data[(2, 77)]
    assert first["B_path"] == again["B_path"] and torch.equal(first["B"], again["B"])
    assert torch.equal(first["A"], again["A"])
    assert data[3]["B_path"] == data[(3, 3)]["B_path"]  # a plain index is its own seed
    picks = {data[(0, seed)]["B_path"] for seed in range(20)}
    crops = {data[(0, seed)]["A"].sum().item() for seed in range(20)}
    assert len(picks) > 1 and len(crops) > 1
    serial = UnalignedDataset(dir_a, dir_b, serial_batches=True, preprocess=SMALL)
    assert [serial[(i, 5)]["B_path"][-6:] for i in range(5)] == [f"b{i}.png" for i in range(5)]


def test_unaligned_direction_swaps_folders(tmp_path):
    dir_a, dir_b = unpaired(tmp_path)
    data = UnalignedDataset(dir_a, dir_b, SMALL, direction="BtoA", input_nc=1)
    item = data[(0, 1)]
    assert "/B/" in item["A_path"] and "/A/" in item["B_path"]
    assert item["A"].shape[0] == 1 and item["B"].shape[0] == 3


def test_dataloader_workers_match_direct_access(tmp_path):
    dir_a, dir_b = unpaired(tmp_path)
    data = UnalignedDataset(dir_a, dir_b, SMALL)
    keys = [(i, 1000 + i) for i in range(5)]
    pickle.loads(pickle.dumps(data))
    loader = DataLoader(data, batch_size=None, sampler=keys, num_workers=2)
    for key, item in zip(keys, loader):
        direct = data[key]
        assert item["B_path"] == direct["B_path"] and torch.equal(item["A"], direct["A"])


# ---------------------------------------------------------------- class data
def class_folders(root, mode="RGB"):
    for name, count in [("dog", 2), ("cat", 3)]:
        for i in range(count):
            save(noise(12, 8, i, mode), root / name / f"{i}.png")
    return root


def test_class_folders(tmp_path):
    data = class_dataset(class_folders(tmp_path), image_size=6)
    assert isinstance(data, ClassFolderDataset)
    assert data.class_names == ["cat", "dog"] and len(data) == 5 and data.channels == 3 and data.image_size == 6
    item = data[(4, 2)]
    assert item["label"] == 1 and item["image"].shape == (3, 6, 6)  # non-square: resized and center-cropped
    assert ClassFolderDataset(tmp_path, 6, channels=1)[0]["image"].shape == (1, 6, 6)


def test_class_folder_channels_and_errors(tmp_path):
    root = class_folders(tmp_path / "gray", mode="L")
    assert ClassFolderDataset(root, 4).channels == 1
    save(noise(8, 8), root / "dog" / "colour.png")
    with pytest.raises(TransganError, match=r"mixed grayscale and colour.*\.png is grayscale.*colour\.png is colour"):
        ClassFolderDataset(root, 4)
    assert ClassFolderDataset(root, 4, channels=3)[0]["image"].shape[0] == 3
    flat = tmp_path / "flat"
    save(noise(8, 8), flat / "x.png")
    with pytest.raises(TransganError, match="no class sub-folders"):
        ClassFolderDataset(flat, 4)
    (root / "empty_class").mkdir()
    with pytest.raises(TransganError, match="class 'empty_class' has no images"):
        ClassFolderDataset(root, 4, channels=3)
    with pytest.raises(TransganError, match="not found"):
        class_dataset(tmp_path / "nope", 4)


def write_zip(path):
    with zipfile.ZipFile(path, "w") as zf:
        for split in ["train", "test"]:
            for name in ["plane", "bird"]:
                for i in range(2):
                    img = save(noise(10, 10, i), path.parent / "tmp.png")
                    zf.write(img, f"{split}/{name}/{i:04d}.png")
        zf.writestr("__MACOSX/train/bird/._0000.png", b"junk")
    return path


def test_zip_classes_and_workers(tmp_path):
    path = write_zip(tmp_path / "data.zip")
    data = class_dataset(path, image_size=8, split="train")
    assert isinstance(data, ZipClassDataset)
    assert data.class_names == ["bird", "plane"] and len(data) == 4 and data.channels == 3
    assert data[(3, 0)]["label"] == 1 and data[(3, 0)]["image"].shape == (3, 8, 8)
    keys = [(i, i) for i in range(4)]
    batches = list(DataLoader(data, batch_size=2, sampler=keys, num_workers=2))
    assert torch.equal(batches[1]["image"][1], data[3]["image"])
    assert pickle.loads(pickle.dumps(data))._zip is None  # the handle opened above stays in this process
    with pytest.raises(TransganError, match="holds splits.*split="):
        ZipClassDataset(path, 8)
    with pytest.raises(TransganError, match="no images under 'val/'.*'test', 'train'"):
        ZipClassDataset(path, 8, split="val")


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 5, 5), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10) % 3)
    data = class_dataset(tmp_path, image_size=5, start=2, stop=8)
    assert isinstance(data, MnistIdxDataset)
    assert len(data) == 6 and data.class_names == ["0", "1", "2"] and data.channels == 1
    item = data[0]
    assert item["label"] == 2 and torch.equal(item["image"][0], to_tensor(Image.fromarray(images[2]))[0])
    assert MnistIdxDataset(tmp_path, image_size=8, channels=3)[0]["image"].shape == (3, 8, 8)
    with pytest.raises(TransganError, match="start=5, stop=20"):
        MnistIdxDataset(tmp_path, start=5, stop=20)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    with pytest.raises(TransganError, match="several idx image files"):
        MnistIdxDataset(tmp_path)
    (tmp_path / "bad-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03")
    write_idx(tmp_path / "bad-labels-idx1-ubyte", np.zeros(10))
    with pytest.raises(TransganError, match="bad magic"):
        MnistIdxDataset(tmp_path, prefix="bad")


# ---------------------------------------------------------------- real data
def test_real_facades_pairs_and_horses(real_data):
    data = paired_dataset(real_data("facades", "test"), Preprocess(flip=False))
    assert isinstance(data, PairedFoldersDataset) and len(data) == 50
    item = data[(0, 0)]
    assert item["A"].shape == item["B"].shape == (3, 256, 256)
    assert item["A_path"].split("/")[-1] == item["B_path"].split("/")[-1]
    horses = list_images(real_data("horse2zebra", "testA"))
    assert len(horses) == 50 and load_image(horses[0]).size == (256, 256)


def test_real_mnist_split(real_data):
    folder = real_data("mnist")
    train, held_out = MnistIdxDataset(folder, stop=8000), MnistIdxDataset(folder, start=8000)
    assert (len(train), len(held_out)) == (8000, 2000)
    assert train.class_names == [str(k) for k in range(10)]
    assert train[0]["image"].shape == (1, 28, 28)


def test_real_cifar_zip_classes(real_data):
    data = ZipClassDataset(real_data("cifar10", "cifar10-jpg.zip"), 32, channels=3, split="test")
    assert len(data) == 10000
    assert data.class_names == sorted(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )
    assert data[(0, 0)]["image"].shape == (3, 32, 32)
