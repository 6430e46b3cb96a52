"""Dataset loaders, the MNIST layout and image reading."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import xwp
from tests.support import shared_data_dir
from tests.support.corpus import tmnist_csv
from xwp.data.datasets import (
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


@pytest.mark.slow  # rebuilds the typeface digits: ~7 s
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


# --------------------------------------------------------------------------- data safety


def _md5s(folder):
    import hashlib

    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.skipif(shared_data_dir() is None, reason="needs the Fashion-MNIST .gz files")
def test_gz_plus_some_unpacked_files_never_rewrites_the_users_folder(tmp_path):
    import gzip

    raw = tmp_path / "user" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    src = shared_data_dir() / "FashionMNIST" / "raw"
    for p in src.iterdir():
        shutil.copyfile(p, raw / p.name)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress((src / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    (raw / "train-labels-idx1-ubyte").symlink_to(raw / "t10k-labels-idx1-ubyte")  # a link into the folder
    before = _md5s(raw)
    test = load_dataset("fashion-mnist", "test", tmp_path / "user")
    train = load_dataset("fashion-mnist", "train", tmp_path / "user")
    assert (len(test), len(train)) == (10_000, 60_000)
    assert _md5s(raw) == before  # nothing written, through a link or otherwise
    cache = Path(os.environ["XWP_CACHE_DIR"])
    links = [p for p in cache.rglob("*") if p.is_symlink()]
    assert not links  # the cache never links into a user's folder


@pytest.mark.skipif(shared_data_dir() is None, reason="needs the Fashion-MNIST .gz files")
def test_unpacked_files_alone_are_checked_and_used(tmp_path):
    import gzip

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    src = shared_data_dir() / "FashionMNIST" / "raw"
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / stem).write_bytes(gzip.decompress((src / f"{stem}.gz").read_bytes()))
    unpacked = load_dataset("fashion-mnist", "test", tmp_path)
    packed = load_dataset("fashion-mnist", "test", shared_data_dir())
    assert torch.equal(unpacked.images, packed.images) and torch.equal(unpacked.labels, packed.labels)


@pytest.mark.skipif(shared_data_dir() is None, reason="needs the Fashion-MNIST .gz files")
def test_swapped_gz_files_are_detected(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    src = shared_data_dir() / "FashionMNIST" / "raw"
    shutil.copyfile(src / "t10k-images-idx3-ubyte.gz", raw / "t10k-images-idx3-ubyte.gz")
    shutil.copyfile(src / "train-labels-idx1-ubyte.gz", raw / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(xwp.XWPError, match="published train file: the train and test files are swapped"):
        load_dataset("fashion-mnist", "test", tmp_path)


@pytest.mark.skipif(shared_data_dir() is None, reason="needs the Fashion-MNIST .gz files")
def test_bad_unpacked_test_labels_fail_before_training(tmp_path, capsys):
    import time

    from xwp.cli.commands import main

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    src = shared_data_dir() / "FashionMNIST" / "raw"
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        shutil.copyfile(src / name, raw / name)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (10_000).to_bytes(4, "big") + b"\x0c" * 10_000)
    started = time.perf_counter()
    out = tmp_path / "m.safetensors"
    code = main(
        ["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "1", "--out", str(out)]
    )
    assert code == 2 and "labels above 9" in capsys.readouterr().err
    assert time.perf_counter() - started < 20 and not out.exists()  # no epoch was trained first


def test_allowed_data_path(tmp_path, monkeypatch):
    from xwp import config

    cache = config.cache_dir() / "data"
    cache.mkdir(exist_ok=True)
    inside = cache / "allowed.csv"
    inside.write_bytes(b"x")
    assert config.allowed_data_path(inside) == inside.resolve()
    # the rest of the cache (workspaces, stored uploads, default models) is not a data folder
    private = config.cache_dir() / "workspaces" / "someone" / "model.safetensors"
    private.parent.mkdir(parents=True, exist_ok=True)
    private.write_bytes(b"x")
    for bad in (private, private.parent, config.cache_dir()):
        with pytest.raises(xwp.XWPError, match="not in a data folder"):
            config.allowed_data_path(bad)
    escape = cache / "escape.csv"
    escape.unlink(missing_ok=True)
    escape.symlink_to("/etc/passwd")  # a link inside the cache pointing out of it
    for bad in ("/etc/shadow", "/proc/self/environ", escape, str(cache / ".." / ".."), "", "relative.csv"):
        with pytest.raises(xwp.XWPError, match="not in a data folder this server allows") as info:
            config.allowed_data_path(bad)
        assert "root" not in str(info.value)
    with pytest.raises(xwp.XWPError, match="not in a data folder"):
        config.allowed_data_path(tmp_path)
    monkeypatch.setenv("XWP_DATA_DIRS", f"/nonexistent{os.pathsep}{tmp_path}")
    assert config.allowed_data_path(tmp_path / ".") == tmp_path.resolve()
    monkeypatch.delenv("XWP_DATA_DIRS")
    other = tmp_path / "startup"
    other.mkdir()
    monkeypatch.setattr(config, "_startup_dirs", [])
    config.register_data_dir(other)
    assert config.allowed_data_path(other) == other.resolve()


def test_a_fifo_in_a_font_folder_does_not_hang(tmp_path):
    import threading

    from xwp.data.typeface import font_files

    real = font_files()[0]
    shutil.copyfile(real, tmp_path / "real.ttf")
    os.mkfifo(tmp_path / "trap.ttf")
    result = []
    worker = threading.Thread(target=lambda: result.append(font_files(str(tmp_path))), daemon=True)
    worker.start()
    worker.join(30)
    assert result and result[0] == [str(tmp_path / "real.ttf")]


def test_exif_orientation_is_applied():
    from PIL import ImageDraw

    im = Image.new("L", (96, 96), 0)
    ImageDraw.Draw(im).line([(12, 48), (84, 48)], fill=255, width=10)  # stored horizontal
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif, quality=95)
    gray = load_image(buf.getvalue())
    assert gray[:, 40:56].mean() > 2 * gray[40:56, :].mean()  # displayed vertical, not as stored
    assert gray[:, 40:56].mean() > 0.3 and gray[10:30, 10:30].mean() < 0.05


def test_sixteen_bit_image_with_a_small_range_is_not_blank():
    arr = np.zeros((64, 64), dtype=np.uint16)
    arr[10:54, 28:36] = 300  # 300 of 65535: nearly black if scaled by the dtype
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    gray = load_image(buf.getvalue())
    assert gray.max() == pytest.approx(1.0) and gray.min() == 0.0
    assert image_to_input(gray).max() > 0.5


def test_tmnist_from_bytes_plain_and_gz():
    import gzip

    from xwp.data.datasets import tmnist_from_bytes

    plain = tmnist_csv(10)
    a = tmnist_from_bytes(plain, "test")
    b = tmnist_from_bytes(gzip.compress(plain), "test")
    assert torch.equal(a.images, b.images) and len(a) == 20 and a.info["file"] == "(upload)"


def test_check_upload(monkeypatch):
    from xwp.checkpoint import checkpoint_bytes
    from xwp.config import Limits
    from xwp.serve import uploads

    uploads.check_upload(checkpoint_bytes(xwp.MLP((784, 8, 10))), "checkpoint")
    png = io.BytesIO()
    Image.new("L", (16, 16)).save(png, format="PNG")
    uploads.check_upload(png.getvalue(), "image")
    uploads.check_upload(tmnist_csv(2), "csv")
    with pytest.raises(xwp.XWPError, match="not a readable image"):
        uploads.check_upload(b"%!PS-Adobe-3.0 EPSF-3.0\n" * 4, "image")
    with pytest.raises(xwp.XWPError, match="not an xwp checkpoint"):
        uploads.check_upload(b"\x00" * 100, "checkpoint")
    with pytest.raises(xwp.XWPError, match="empty"):
        uploads.check_upload(b"", "csv")
    monkeypatch.setattr(uploads, "LIMITS", Limits(max_upload_bytes=1000, max_csv_bytes=5000))
    with pytest.raises(xwp.XWPError, match="uploads are limited to"):
        uploads.check_upload(b"x" * 1001, "csv")
    import gzip

    with pytest.raises(xwp.XWPError, match="unpacks to more than"):
        uploads.check_upload(gzip.compress(b"0" * 10_000), "csv")


def test_safe_message_is_one_short_line():
    from xwp.errors import XWPError, safe_message

    assert safe_message("a\nb\r\x1b[31mc\u2028d") == "a b [31mc d"
    long = str(XWPError("x" * 10_000))
    assert len(long) == 300 and long.endswith("…")


def test_upload_file_is_checked_first_and_removed_after(tmp_path):
    from xwp.config import cache_dir
    from xwp.serve import uploads

    folder = cache_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / "xwp-upload-killed.csv"
    stale.write_bytes(b"old")
    os.utime(stale, (1, 1))
    with uploads.upload_file(tmnist_csv(2), "csv", ".csv") as path:
        assert path.read_bytes() == tmnist_csv(2) and (path.stat().st_mode & 0o777) == 0o600
        assert read_tmnist_csv(path)[0].shape == (20, 28, 28)
    assert not path.exists() and not stale.exists()
    with (
        pytest.raises(xwp.XWPError, match="not a readable image"),
        uploads.upload_file(b"%!PS-Adobe-3.0\n" * 4, "image", ".png"),
    ):
        raise AssertionError("never reached: checked before it is stored")
    assert list(folder.iterdir()) == []
    with pytest.raises(RuntimeError), uploads.upload_file(tmnist_csv(2), "csv", ".csv") as path:
        raise RuntimeError("the caller fails")
    assert not path.exists()


def test_plain_text_escapes_every_markdown_character():
    import re
    import string

    from xwp.safety import plain_text

    hostile = "![x](http://evil/a.png) [click](http://evil) <b>hi</b> $x^2$ **bold** :red[c] # h\n- T-shirt/top"
    out = plain_text(hostile)
    pairs = re.findall(r"\\(.)", out)
    bare = re.sub(r"\\.", "", out)
    assert not set(bare) & set(string.punctuation), bare  # every ASCII punctuation is escaped
    assert set(pairs) <= set(string.punctuation)
    assert "\n" not in out and re.sub(r"\\(.)", r"\1", out) == " ".join(hostile.split())
    assert len(plain_text("x" * 1000)) == 200
