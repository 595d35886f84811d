"""Tests for transgan.images: which files are images, how every PIL mode decodes, and that training, translate
and FID see one list and the same pixels."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import transgan
from transgan.data import Preprocess, UnalignedDataset
from transgan.errors import TransganError
from transgan.images import (
    BadImageWarning,
    UnreadableImage,
    convert_image,
    list_images,
    load_image,
    read_pixels,
    scan_images,
)
from transgan.inference.engines import open_engine
from transgan.inference.pipeline import decode, translate_folder
from transgan.metrics import compute_folder_features
from transgan.metrics import list_images as metrics_list_images
from transgan.nets import build_network

W, H = 8, 12  # every image of the unusual folder: multiples of 4, so the test network pads nothing


def noise(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    array = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


def save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def relative(paths, folder: Path) -> list[str]:
    return [Path(p).relative_to(folder).as_posix() for p in paths]


# ---------------------------------------------------------------------------------------------- listing
def test_list_images_sorted_recursive_and_filtered(tmp_path):
    for name in ["b.PNG", "a.jpg", "sub/c.webp", ".hidden.png", "sub/._d.png", "e.Tiff", "f.gif", ".git/g.png"]:
        save(noise(4, 4), tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    assert relative(list_images(tmp_path), tmp_path) == ["a.jpg", "b.PNG", "e.Tiff", "f.gif", "sub/c.webp"]


def test_list_images_errors(tmp_path):
    with pytest.raises(TransganError, match="missing does not exist"):
        list_images(tmp_path / "missing")
    save(noise(4, 4), tmp_path / "x.png")
    with pytest.raises(TransganError, match="is a file"):
        list_images(tmp_path / "x.png")
    (tmp_path / "horses").mkdir()
    (tmp_path / "horses" / "readme.txt").write_text("no images")
    with pytest.raises(TransganError, match=r"horses/: no images found \(looked for .png, .jpg, .*\.gif"):
        list_images(tmp_path / "horses")


def test_symlinked_folders_are_followed_once_and_broken_links_reported(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    save(noise(4, 4), outside / "x.png")
    save(noise(4, 4), root / "a.png")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (outside / "again").symlink_to(outside, target_is_directory=True)  # a cycle below the link
    (root / "linked_root").symlink_to(root, target_is_directory=True)  # a cycle back to the top
    (root / "dangling.png").symlink_to(tmp_path / "gone.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    (root / "gone_folder").symlink_to(tmp_path / "gone")  # not named like an image: not an input
    listing = scan_images(root)
    assert relative(listing.files, root) == ["a.png", "linked/x.png"]
    problems = {path.name: reason for path, reason in listing.problems}
    assert sorted(problems) == ["dangling.png", "loop.png"]
    assert "broken symbolic link" in problems["dangling.png"] and "gone.png" in problems["dangling.png"]
    assert "symbolic link loop" in problems["loop.png"]
    with pytest.warns(BadImageWarning) as caught:
        assert list_images(root) == listing.files
    assert sorted(Path(str(w.message).split(":")[0].split()[-1]).name for w in caught) == ["dangling.png", "loop.png"]


def test_a_folder_of_broken_links_only_names_them(tmp_path):
    (tmp_path / "only.png").symlink_to(tmp_path / "gone.png")
    with pytest.warns(BadImageWarning), pytest.raises(TransganError, match="no images found.*1 could not be opened"):
        list_images(tmp_path)


# ---------------------------------------------------------------------------------------------- decoding
def gray(values, dtype):
    return np.array(values, dtype=dtype).reshape(1, -1)


MODE_CASES = {
    # mode: (image, expected 'L' values of its pixels when loaded with channels=1)
    "1": (Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1"), [0, 255]),
    "L": (Image.fromarray(gray([0, 7, 255], np.uint8)), [0, 7, 255]),
    "I;16": (Image.fromarray(gray([0, 32896, 65535], np.uint16)), [0, 128, 255]),
    "I-16bit-range": (Image.fromarray(gray([0, 257, 65535], np.int32)), [0, 1, 255]),
    "I-8bit-range": (Image.fromarray(gray([0, 100, 255], np.int32)), [0, 100, 255]),
    "I-wide-range": (Image.fromarray(gray([-100, 0, 100], np.int32)), [0, 128, 255]),
    "F-unit-range": (Image.fromarray(gray([0.0, 0.5, 1.0], np.float32)), [0, 128, 255]),
    "F-wide-range": (Image.fromarray(gray([-1.0, 0.0, 1000.0], np.float32)), [0, 0, 255]),
}


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_grayscale_like_modes_scale_not_clip(case):
    img, expected = MODE_CASES[case]
    out = convert_image(img, 1)
    assert out.mode == "L"
    assert np.asarray(out).ravel().tolist() == expected
    assert convert_image(img, 3).mode == "RGB"
    assert convert_image(img).mode == "L"  # natural channel count of a grayscale mode


def test_16bit_png_on_disk(tmp_path):
    path = save(Image.fromarray(gray([0, 1000, 65535], np.uint16)), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    assert np.asarray(load_image(path, 1)).ravel().tolist() == [0, 4, 255]


def test_alpha_composited_over_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [0, 0, 0, 128]]], np.uint8)
    path = save(Image.fromarray(rgba, "RGBA"), tmp_path / "alpha.png")
    out = np.asarray(load_image(path, 3))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]  # fully transparent -> white, not black
    assert 120 <= out[0, 2, 0] <= 135  # half-transparent black over white -> mid gray
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA")
    assert np.asarray(load_image(save(la, tmp_path / "la.png"), 1)).ravel().tolist() == [255, 0]


def test_palette_cmyk_and_gray_modes(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putdata([0, 1])
    assert np.asarray(load_image(save(img, tmp_path / "p.png"), 3)).tolist() == [[[10, 20, 30], [200, 100, 50]]]
    img.info["transparency"] = 0
    save(img, tmp_path / "pt.png", transparency=0)
    assert np.asarray(load_image(tmp_path / "pt.png", 3))[0, 0].tolist() == [255, 255, 255]
    pa = img.convert("PA")  # palette + alpha: index 0 is transparent
    assert pa.mode == "PA" and convert_image(pa, 3).getpixel((0, 0)) == (255, 255, 255)
    assert convert_image(pa, 3).getpixel((1, 0)) == (200, 100, 50)
    cmyk = Image.new("CMYK", (3, 2), (0, 0, 0, 0))
    out = load_image(save(cmyk, tmp_path / "c.tif"), 3)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)
    gray_img = load_image(save(Image.new("RGB", (3, 2), (255, 255, 255)), tmp_path / "w.png"), 1)
    assert gray_img.mode == "L" and gray_img.getpixel((0, 0)) == 255


def test_exif_rotated_jpeg(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise for display
    path = save(noise(20, 10), tmp_path / "rotated.jpg", exif=exif)
    assert Image.open(path).size == (20, 10)
    assert load_image(path).size == (10, 20)


def test_gif_decodes_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 255, 0))]
    path = save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(path).n_frames == 2
    assert np.unique(read_pixels(path).reshape(-1, 3), axis=0).tolist() == [[255, 0, 0]]


@pytest.mark.parametrize("content", [b"", b"GIF89a" + b"\x00" * 20, b"not an image at all" * 5])
def test_undecodable_files_are_one_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.gif"
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match=r"cannot read image .*bad\.gif .*replace or delete the file"):
        load_image(path)
    with pytest.raises(UnreadableImage, match="missing.png"):
        load_image(tmp_path / "missing.png")


# ------------------------------------------------------------------------------------ one folder, three readers
def unusual_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray | None]]:
    """A folder of unusual files, W x H each as displayed; returns it and the RGB each file must decode to
    (None where the exact pixels are not known, as for lossy JPEG)."""
    root, outside = tmp_path / "unusual", tmp_path / "elsewhere"
    rng = np.random.default_rng(7)
    expected: dict[str, np.ndarray | None] = {}
    half = np.arange(W)[None, :].repeat(H, 0) >= W // 2  # True on the right half

    deep = np.linspace(0, 65535, W * H).astype(np.uint16).reshape(H, W)
    save(Image.fromarray(deep), root / "deep16.png")  # opens as 'I;16'
    expected["deep16.png"] = np.rint(deep * (255 / 65535)).astype(np.uint8)[:, :, None].repeat(3, 2)

    palette = Image.new("P", (W, H))
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.putdata(half.ravel().astype(int).tolist())
    save(palette, root / "palette.png", transparency=0)  # index 0 (left half) transparent
    expected["palette.png"] = np.where(half[:, :, None], [200, 100, 50], [255, 255, 255]).astype(np.uint8)

    colours = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    alpha = np.where(half, 255, 0).astype(np.uint8)
    save(Image.fromarray(np.dstack([colours, alpha]), "RGBA"), root / "rgba.png")
    expected["rgba.png"] = np.where(half[:, :, None], colours, 255).astype(np.uint8)

    save(Image.fromarray(np.dstack([np.zeros((H, W), np.uint8), alpha]), "LA"), root / "la.png")
    expected["la.png"] = np.where(half, 0, 255).astype(np.uint8)[:, :, None].repeat(3, 2)

    save(Image.new("CMYK", (W, H), (255, 0, 0, 0)), root / "cmyk.tif")
    expected["cmyk.tif"] = np.full((H, W, 3), [0, 255, 255], np.uint8)

    checker = (np.indices((H, W)).sum(0) % 2 * 255).astype(np.uint8)
    save(Image.fromarray(checker).convert("1"), root / "bilevel.bmp")
    expected["bilevel.bmp"] = checker[:, :, None].repeat(3, 2)

    first, second = Image.new("RGB", (W, H), (255, 0, 0)), Image.new("RGB", (W, H), (0, 0, 255))
    save(first, root / "anim.gif", save_all=True, append_images=[second], duration=100)
    expected["anim.gif"] = np.full((H, W, 3), [255, 0, 0], np.uint8)

    exif = Image.Exif()
    exif[0x0112] = 6  # stored H x W on its side; shown rotated 90 degrees clockwise
    stored = np.where((np.arange(H)[None, :] >= H // 2)[:, :, None], 255, 0).repeat(W, 0).repeat(3, 2)
    save(Image.fromarray(stored.astype(np.uint8)), root / "rotated.jpg", exif=exif, quality=95)
    expected["rotated.jpg"] = None  # lossy; its orientation is checked by the test

    ppm = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    save(Image.fromarray(ppm), root / "colour.ppm")
    expected["colour.ppm"] = ppm
    pgm = rng.integers(0, 256, (H, W), dtype=np.uint8)
    save(Image.fromarray(pgm), root / "grey.pgm")
    expected["grey.pgm"] = pgm[:, :, None].repeat(3, 2)

    inside = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    save(Image.fromarray(inside), outside / "inside.png")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    expected["linked/inside.png"] = inside

    save(noise(W, H), root / ".hidden.png")
    save(noise(W, H), root / ".cache" / "hidden_folder.png")
    (root / "notes.txt").write_text("not an image")
    whole = save(noise(W, H, seed=3), tmp_path / "whole.png").read_bytes()
    (root / "broken.png").write_bytes(whole[: len(whole) // 2])  # truncated: listed, does not decode
    (root / "dangling.png").symlink_to(tmp_path / "deleted.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    return root, expected


LISTED = [
    "anim.gif",
    "bilevel.bmp",
    "broken.png",
    "cmyk.tif",
    "colour.ppm",
    "deep16.png",
    "grey.pgm",
    "la.png",
    "linked/inside.png",
    "palette.png",
    "rgba.png",
    "rotated.jpg",
]


def training_view(root: Path, channels: int) -> tuple[list[str], dict[str, np.ndarray], list[str]]:
    """The file list, the uint8 pixels and the warnings an unpaired training dataset gives for root."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = UnalignedDataset(
            root, root, Preprocess("none", flip=False), input_nc=channels, output_nc=channels, serial_batches=True
        )
        items = [data[i] for i in range(len(data.files_a))]
    pixels = {}
    for item in items:
        image = ((item["A"] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        pixels[Path(item["A_path"]).relative_to(root).as_posix()] = image
    messages = [str(w.message) for w in caught if issubclass(w.category, BadImageWarning)]
    return relative(data.files_a, root), pixels, messages


@pytest.mark.parametrize("channels", [3, 1])
def test_training_translate_and_fid_see_one_list_and_the_same_pixels(tmp_path, channels):
    root, expected = unusual_folder(tmp_path)
    train_list, train_pixels, messages = training_view(root, channels)
    assert train_list == LISTED
    for name in ("dangling.png", "loop.png", "broken.png"):  # named, not dropped in silence
        assert any(name in message for message in messages), (name, messages)
    assert sorted(train_pixels) == sorted(set(LISTED) - {"broken.png"})

    # translate: the pipeline's decoder, and which files a translate run takes as inputs
    for name in train_pixels:
        np.testing.assert_array_equal(decode(root / name, channels, None), train_pixels[name], err_msg=name)

    # FID: the metrics loader; features here are the pixels themselves, in listing order
    mode = "RGB" if channels == 3 else "L"
    with pytest.warns(BadImageWarning) as caught:
        assert relative(metrics_list_images(root), root) == LISTED
    assert sorted(Path(str(w.message).split(": ")[0]).name for w in caught) == ["dangling.png", "loop.png"]
    with pytest.warns(BadImageWarning), pytest.raises(TransganError, match="broken.png"):
        compute_folder_features(root, lambda batch: batch.flatten(1), batch_size=4, mode=mode)
    (root / "broken.png").unlink()
    with pytest.warns(BadImageWarning):
        features = compute_folder_features(root, lambda batch: batch.permute(0, 2, 3, 1).flatten(1), 4, mode=mode)
    names = [name for name in LISTED if name != "broken.png"]
    assert features.shape == (len(names), H * W * channels)
    for name, row in zip(names, features):
        np.testing.assert_array_equal(row.reshape(H, W, channels), train_pixels[name], err_msg=name)

    # and the pixels are the right ones: scaled not clipped, transparency over white, first frame, EXIF
    for name, rgb in expected.items():
        if rgb is None:
            continue
        want = rgb if channels == 3 else np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]
        np.testing.assert_array_equal(train_pixels[name], want, err_msg=name)
    rotated = train_pixels["rotated.jpg"].mean(axis=(1, 2))
    assert rotated[: H // 2].max() < 40 and rotated[H // 2 :].min() > 215  # dark on top once turned upright


def test_a_translate_run_takes_the_same_inputs_and_pixels(tmp_path):
    """translate_folder on the unusual folder: the listed files are translated exactly as the network sees the
    training tensors of them; the broken file and the broken links are the failures it names."""
    root, _ = unusual_folder(tmp_path)
    torch.manual_seed(0)
    net = build_network("resnet_6blocks", ngf=4, init_gain=0.5).eval()
    model = transgan.save(net, tmp_path / "g.safetensors", task="cyclegan", directions={"AtoB": "G"})
    warned = []
    summary = translate_folder(
        open_engine(model, device="cpu"), root, tmp_path / "out", batch_size=3, png=True, on_warning=warned.append
    )
    failed = sorted(path.relative_to(root).as_posix() for path, _ in summary.unreadable)
    assert failed == ["broken.png", "dangling.png", "loop.png"] and len(warned) == 3
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    good = sorted(name for name in LISTED if name != "broken.png")
    assert written == sorted(str(Path(name).with_suffix(".png")) for name in good)
    assert summary.translated == len(good)
    _, train_pixels, _ = training_view(root, 3)
    for name in good:
        tensor = torch.from_numpy(train_pixels[name]).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)
        with torch.no_grad():
            output = net(tensor[None])[0]
        want = ((output * 0.5 + 0.5) * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        got = np.asarray(Image.open(tmp_path / "out" / Path(name).with_suffix(".png")))
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name
