"""Dataset loaders, the MNIST layout and image reading."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data_dir
from corpus import tmnist_csv
from PIL import Image

import xwp
from xwp.data import (
    DATASETS,
    build_typeface,
    image_to_input,
    load_dataset,
    load_image,
    read_tmnist_csv,
    to_mnist_layout,
)


def check_layout(ds, n_min):
    assert ds.images.shape[1:] == (1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64 and len(ds.labels) == len(ds.images) >= n_min
    assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
    assert len(ds.classes) == 10 and set(ds.labels.tolist()) == set(range(10))
    border = torch.cat([ds.images[:, 0, 0], ds.images[:, 0, -1], ds.images[:, 0, :, 0], ds.images[:, 0, :, -1]], 1)
    assert float(border.mean()) < 0.05  # background 0


def test_registry():
    assert {"typeface", "digits", "mnist", "fashion-mnist", "tmnist"} <= set(DATASETS)


def test_typeface_is_offline_large_and_split_by_font(typeface):
    train, test = typeface
    check_layout(train, 5000)
    check_layout(test, 1000)
    train_fonts = {g.split(" (")[0] for g in train.groups}
    test_fonts = {g.split(" (")[0] for g in test.groups}
    assert train_fonts and test_fonts and not (train_fonts & test_fonts)
    counts = np.bincount(train.labels.numpy())
    assert counts.min() == counts.max()  # balanced


def test_typeface_is_deterministic_and_cached(typeface, tmp_path):
    again = load_dataset("typeface", "train")  # from the cache
    assert torch.equal(again.images, typeface[0].images)
    cached = list(Path(os.environ["XWP_CACHE_DIR"]).glob("typeface-*.npz"))
    assert cached
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    import matplotlib

    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for name in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"):
        shutil.copy(src / name, fonts / name)
    a = build_typeface(seed=3, font_dir=str(fonts), min_train=300, min_test=100)
    b = build_typeface(seed=3, font_dir=str(fonts), min_train=300, min_test=100)
    c = build_typeface(seed=4, font_dir=str(fonts), min_train=300, min_test=100)
    assert np.array_equal(a["train_images"], b["train_images"])
    assert not np.array_equal(a["train_images"], c["train_images"])
    assert len(a["train_images"]) >= 300 and len(a["test_images"]) >= 100


def test_damaged_typeface_cache_is_rebuilt(typeface):
    for path in Path(os.environ["XWP_CACHE_DIR"]).glob("typeface-*.npz"):
        saved = path.read_bytes()
        path.write_bytes(saved[:100])
        try:
            assert torch.equal(load_dataset("typeface", "test").images, typeface[1].images)
        finally:
            path.write_bytes(saved)


def test_digits():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    check_layout(train, 1000)
    check_layout(test, 400)
    assert len(train) + len(test) == 1797


@pytest.mark.skipif(shared_data_dir() is None, reason="real MNIST/Fashion-MNIST not found beside the checkout")
@pytest.mark.parametrize("name,folder,n_train", [("fashion-mnist", "FashionMNIST", 60000), ("mnist", "MNIST", 60000)])
def test_torchvision_datasets_from_a_read_only_folder(name, folder, n_train, tmp_path):
    src = shared_data_dir()
    before = sorted((p.name, p.stat().st_mtime) for p in (src / folder / "raw").iterdir())
    train, test = load_dataset(name, "train", src), load_dataset(name, "test", src)
    assert len(train) == n_train and len(test) == 10000
    check_layout(test, 10000)
    after = sorted((p.name, p.stat().st_mtime) for p in (src / folder / "raw").iterdir())
    assert before == after  # nothing written into the data folder
    mean = float(train.images.mean())
    assert mean == pytest.approx(0.2860 if name == "fashion-mnist" else 0.1307, abs=1e-3)


def test_torchvision_missing_files_say_what_is_missing(tmp_path):
    (tmp_path / "FashionMNIST" / "raw").mkdir(parents=True)
    with pytest.raises(xwp.XWPError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", "test", tmp_path)


@pytest.mark.skipif(shared_data_dir() is None, reason="real Fashion-MNIST not found beside the checkout")
def test_torchvision_corrupt_file_is_a_clear_error(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for p in (shared_data_dir() / "FashionMNIST" / "raw").glob("*.gz"):
        shutil.copy(p, raw / p.name)
    data = (raw / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(data[:-100])
    with pytest.raises(xwp.XWPError, match="damaged"):
        load_dataset("fashion-mnist", "test", tmp_path)


def test_tmnist_reads_and_splits_by_font(tmp_path):
    path = tmp_path / "TMNIST_Data.csv"
    path.write_bytes(tmnist_csv())
    train, test = load_dataset("tmnist", "train", path), load_dataset("tmnist", "test", tmp_path)
    assert len(train) + len(test) == 100 and len(test) == 20
    assert not {g.split("-")[0] for g in train.groups} & {g.split("-")[0] for g in test.groups}
    assert train.images.max() <= 1 and train.images.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"drop": "784"}, "lacks 1 of the 784 pixel columns"),
        ({"drop": "labels"}, "no 'labels' column"),
        ({"extra": "bonus"}, "unexpected column"),
        ({"bad_cell": True}, "non-numeric"),
    ],
)
def test_tmnist_bad_files_name_the_problem(kwargs, message):
    with pytest.raises(xwp.XWPError, match=message):
        read_tmnist_csv(tmnist_csv(**kwargs))


def test_tmnist_not_a_csv():
    with pytest.raises(xwp.XWPError):
        read_tmnist_csv(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(xwp.XWPError, match="does not exist"):
        load_dataset("tmnist", "train", "/nonexistent/TMNIST_Data.csv")
    with pytest.raises(xwp.XWPError, match="Kaggle"):
        load_dataset("tmnist", "train")


def test_unknown_dataset_and_split():
    with pytest.raises(xwp.XWPError, match="unknown dataset"):
        load_dataset("cifar10")
    with pytest.raises(xwp.XWPError, match="split"):
        load_dataset("digits", "validation")


def test_sample_is_seeded_and_bounded(typeface):
    test = typeface[1]
    a, b = test.sample(10, seed=1), test.sample(10, seed=1)
    assert torch.equal(a.images, b.images)
    with pytest.raises(xwp.XWPError, match="has"):
        test.sample(len(test) + 1)


# ----------------------------------------------------------------------------- MNIST layout and images


def test_mnist_layout_centres_the_mass_and_fits_20_pixels():
    img = np.zeros((100, 60), dtype=np.float32)
    img[10:90, 5:25] = 1.0  # a tall bar far from the centre
    out = to_mnist_layout(img)
    assert out.shape == (28, 28) and out.max() == pytest.approx(1.0)
    rows, cols = np.nonzero(out > 0.1)
    assert rows.max() - rows.min() + 1 <= 21
    ys, xs = np.mgrid[0:28, 0:28]
    assert (ys * out).sum() / out.sum() == pytest.approx(13.5, abs=0.6)
    assert (xs * out).sum() / out.sum() == pytest.approx(13.5, abs=0.6)


def test_blank_image_is_a_clear_error():
    with pytest.raises(xwp.XWPError, match="blank"):
        to_mnist_layout(np.zeros((280, 280)))
    with pytest.raises(xwp.XWPError, match="blank"):
        image_to_input(np.full((280, 280), 0.3))


def png(mode, size=(64, 64), value=None, draw=True):
    if mode == "I;16":
        arr = np.zeros(size[::-1], dtype=np.uint16)
        arr[20:44, 28:36] = 60000
        im = Image.fromarray(arr)
        assert im.mode == "I;16"
    else:
        im = Image.new(mode, size, value if value is not None else 0)
        if mode == "P":
            im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        if draw:
            from PIL import ImageDraw

            fill = {"L": 255, "RGB": (255, 255, 255), "RGBA": (0, 0, 0, 255), "P": 1, "1": 1}[mode]
            ImageDraw.Draw(im).rectangle([28, 20, 36, 44], fill=fill)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "I;16", "1"])
def test_images_of_any_mode_become_a_white_bar_on_black(mode):
    x = image_to_input(load_image(png(mode)))
    assert x.shape == (1, 1, 28, 28)
    assert float(x[0, 0, 4:24, 12:16].mean()) > 0.5 and float(x[0, 0, :, :6].max()) == 0


def test_rgba_dark_ink_on_transparent_background():
    x = image_to_input(load_image(png("RGBA", value=(0, 0, 0, 0))))
    assert float(x[0, 0, 4:24, 12:16].mean()) > 0.5 and float(x[0, 0, :, :6].max()) == 0


def test_dark_on_light_is_inverted():
    im = Image.new("L", (64, 64), 255)
    im.paste(0, (28, 20, 36, 44))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    x = image_to_input(load_image(buf.getvalue()))
    assert float(x[0, 0, 4:24, 12:16].mean()) > 0.5 and float(x[0, 0, :, :6].max()) == 0


@pytest.mark.parametrize(
    "data,message",
    [
        (b"this is not an image", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image"),
    ],
)
def test_non_images_are_refused(data, message):
    with pytest.raises(xwp.XWPError, match=message):
        load_image(data)


def test_tiny_and_huge_images_are_refused():
    with pytest.raises(xwp.XWPError, match="at least 8"):
        load_image(png("L", size=(1, 1), draw=False))
    big = Image.new("L", (10000, 10000))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    with pytest.raises(xwp.XWPError, match="limit"):
        load_image(buf.getvalue())
