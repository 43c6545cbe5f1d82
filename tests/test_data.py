"""Tests of gradnas.data: dataset loaders (real data slices + small fixtures), augmentation, splits, batches."""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gradnas.data import (DATASETS, Augment, ImageDataset, PairedBatches, SearchSplit, iterate_batches,
                          load_dataset, make_search_split)
from gradnas.data import folder as folder_mod
from gradnas.errors import GradnasError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
# Small slice of the real archive: these classes are the first ones stored in both splits.
SLICE_CLASSES = ("bird", "frog")
PER_CLASS = 10


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Never write decoded datasets into the real ~/.cache during tests.
    monkeypatch.setenv("GRADNAS_CACHE", str(tmp_path_factory.getbasetemp() / "default-cache"))


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def cifar_members() -> dict[str, bytes]:
    """~40 JPEG members (10 per class and split, 2 classes) streamed from the real archive."""
    if not CIFAR_ARCHIVE.is_file():
        pytest.skip(f"{CIFAR_ARCHIVE} not present (the shared CIFAR-10 JPEG archive)")
    wanted = {(s, c): PER_CLASS for s in ("train", "test") for c in SLICE_CLASSES}
    members = {}
    with tarfile.open(CIFAR_ARCHIVE, "r|gz") as tf:
        for m in tf:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])
            if wanted.get(key, 0) > 0:
                members[m.name] = tf.extractfile(m).read()
                wanted[key] -= 1
                if not any(wanted.values()):
                    break  # stop early: no need to stream the rest of the archive
    assert len(members) == 4 * PER_CLASS
    return members


def _pixels(data: bytes) -> np.ndarray:
    """Reference decode (3 x 32 x 32), done here independently of the library."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)


@pytest.fixture(scope="session")
def cifar_fixtures(cifar_members, tmp_path_factory) -> dict[str, Path]:
    """The same slice as: a .tar.gz, a JPEG ImageFolder (one level down), a PNG ImageFolder with the
    decoded pixels, and a cifar-10-batches-py folder (official pickle format) with those pixels."""
    root = tmp_path_factory.mktemp("cifar")
    archive = root / "tiny.tar.gz"
    plain_tar = root / "tiny.tar"
    for path, mode in ((archive, "w:gz"), (plain_tar, "w")):
        with tarfile.open(path, mode) as tf:
            for name, data in members_sorted(cifar_members):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))

    jpeg_dir = root / "jpeg"
    for name, data in cifar_members.items():
        p = jpeg_dir / name  # jpeg/cifar10-jpeg/train/bird/NNNN.jpg: the tree sits one level down
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    png_dir = root / "png"
    splits = {"train": ([], []), "test": ([], [])}
    for name, data in members_sorted(cifar_members):
        _, split, cls, fname = name.split("/")
        px = _pixels(data)
        p = png_dir / split / cls / fname.replace(".jpg", ".png")
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(px.transpose(1, 2, 0)).save(p)
        splits[split][0].append(px.reshape(-1))
        splits[split][1].append(SLICE_CLASSES.index(cls))

    batches = root / "pickle" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    train_x = np.stack(splits["train"][0])
    train_y = splits["train"][1]
    per = len(train_x) // 5
    for i in range(5):  # protocol 2 with bytes keys, numpy data and list labels, as the official files
        batch = {b"batch_label": f"training batch {i + 1} of 5".encode(),
                 b"labels": train_y[i * per:(i + 1) * per], b"data": train_x[i * per:(i + 1) * per],
                 b"filenames": [b"x.png"] * per}
        data = pickle.dumps(batch, protocol=2)
        if i == 0:  # the official (numpy 1.x era) files name the pre-2.0 module: it must load too
            data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
            assert b"cnumpy.core.multiarray\n_reconstruct" in data
        (batches / f"data_batch_{i + 1}").write_bytes(data)
    test = {b"batch_label": b"testing batch 1 of 1", b"labels": splits["test"][1],
            b"data": np.stack(splits["test"][0])}
    (batches / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    meta = {b"label_names": [c.encode() for c in SLICE_CLASSES], b"num_vis": 3072}
    (batches / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {"archive": archive, "tar": plain_tar, "jpeg": jpeg_dir, "png": png_dir, "pickle": batches}


def members_sorted(members: dict[str, bytes]):
    """Members in the loaders' order: split, then class (alphabetical), then file name."""
    return sorted(members.items(), key=lambda kv: (kv[0].split("/")[1] != "train", kv[0]))


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture
def tiny_fashion(tmp_path) -> Path:
    """Synthetic Fashion-MNIST-format files (6 train, 4 test images)."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,), dtype=np.uint8))
    return tmp_path


# ------------------------------------------------------------------------------------ loaders: real data


def test_registry_names():
    assert set(DATASETS) == {"cifar10", "fashion-mnist", "imagefolder"}


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real():
    ds = load_dataset("fashion-mnist")
    assert isinstance(ds, ImageDataset)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.is_contiguous()
    assert int(ds.train_y.min()) == 0 and int(ds.train_y.max()) == 9
    assert ds.num_classes == 10 and ds.channels == 1 and ds.image_size == (28, 28)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[-1] == "Ankle boot"
    # Against the raw IDX bytes: labels start after an 8-byte header, images after 16 bytes.
    labels = gzip.decompress((FASHION_DIR / "train-labels-idx1-ubyte.gz").read_bytes())
    assert labels[:4] == b"\x00\x00\x08\x01"
    assert int(ds.train_y[0]) == labels[8]
    with gzip.open(FASHION_DIR / "train-images-idx3-ubyte.gz") as f:
        head = f.read(16 + 784)
    assert ds.train_x[0, 0].flatten().tolist() == list(head[16:])


def test_fashion_mnist_synthetic_gz_and_plain(tiny_fashion):
    ds = load_dataset("fashion_mnist", tiny_fashion)  # name spelling is forgiving
    assert ds.train_x.shape == (6, 1, 28, 28) and ds.test_y.shape == (4,)
    # Uncompressed copies load identically.
    plain = tiny_fashion / "plain"
    plain.mkdir()
    for f in tiny_fashion.glob("*.gz"):
        (plain / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    ds2 = load_dataset("fashion-mnist", plain)
    assert torch.equal(ds.train_x, ds2.train_x) and torch.equal(ds.test_y, ds2.test_y)


def test_cifar_loaders_agree(cifar_fixtures, cifar_members, tmp_path):
    cache = tmp_path / "cache"
    from_tar = load_dataset("cifar10", cifar_fixtures["archive"], cache_dir=cache)
    from_jpeg = load_dataset("cifar10", cifar_fixtures["jpeg"], cache_dir=cache)
    from_png = load_dataset("cifar10", cifar_fixtures["png"], cache_dir=cache)
    from_pickle = load_dataset("cifar10", cifar_fixtures["pickle"], cache_dir=cache)
    from_plain_tar = load_dataset("cifar10", cifar_fixtures["tar"], cache_dir=cache)
    n = 2 * PER_CLASS
    for ds in (from_tar, from_jpeg, from_png, from_pickle, from_plain_tar):
        assert ds.train_x.shape == (n, 3, 32, 32) and ds.test_x.shape == (n, 3, 32, 32)
        assert ds.train_x.dtype == ds.test_x.dtype == torch.uint8
        assert ds.classes == list(SLICE_CLASSES)
        assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)
        assert ds.train_y.tolist() == [0] * PER_CLASS + [1] * PER_CLASS
    # Same bytes, same decoder: archive and folder agree exactly; PNG (lossless) and pickle hold the
    # same decoded pixels, so all four agree pixel for pixel.
    for ds in (from_jpeg, from_png, from_pickle, from_plain_tar):
        assert torch.equal(ds.train_x, from_tar.train_x) and torch.equal(ds.test_x, from_tar.test_x)
    first = members_sorted(cifar_members)[0][1]
    assert np.array_equal(from_tar.train_x[0].numpy(), _pixels(first))


def test_parallel_decoding_matches_serial(cifar_fixtures, tmp_path, monkeypatch):
    serial = load_dataset("cifar10", cifar_fixtures["jpeg"], cache_dir=tmp_path / "serial")
    monkeypatch.setattr(folder_mod, "_POOL_MIN_IMAGES", 1)  # force the worker pool on 40 images
    pooled = load_dataset("cifar10", cifar_fixtures["jpeg"], cache_dir=tmp_path / "pooled")
    assert torch.equal(serial.train_x, pooled.train_x) and torch.equal(serial.test_x, pooled.test_x)
    bad = tmp_path / "bad"
    for split in ("train", "test"):
        for cls in SLICE_CLASSES:
            (bad / split / cls).mkdir(parents=True)
            _save_png(bad / split / cls / "0.png", np.zeros((32, 32, 3), np.uint8))
    (bad / "train" / "frog" / "1.png").write_bytes(b"\x89PNG garbage")
    msg = _raises("cannot decode image", load_dataset, "cifar10", bad, cache_dir=tmp_path / "pooled")
    assert str(bad / "train" / "frog" / "1.png") in msg


def test_cifar_pickle_parent_folder(cifar_fixtures):
    ds = load_dataset("cifar10", cifar_fixtures["pickle"].parent)  # the folder holding cifar-10-batches-py
    assert ds.train_x.shape == (2 * PER_CLASS, 3, 32, 32)


def test_cifar_default_and_archive_folder(cifar_fixtures, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar-10-batches-py").symlink_to(cifar_fixtures["pickle"])
    monkeypatch.chdir(tmp_path)
    assert load_dataset("cifar10").train_x.shape == (2 * PER_CLASS, 3, 32, 32)  # ./data/cifar-10-batches-py
    shelf = tmp_path / "shelf"  # a folder holding cifar10-jpeg.tar.gz, like ../shared/data
    shelf.mkdir()
    (shelf / "cifar10-jpeg.tar.gz").symlink_to(cifar_fixtures["archive"])
    assert load_dataset("cifar10", shelf, cache_dir=tmp_path / "c").test_x.shape == (2 * PER_CLASS, 3, 32, 32)


def test_cache_is_used_and_corrupt_cache_rebuilt(cifar_fixtures, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_dataset("cifar10", cifar_fixtures["archive"], cache_dir=cache)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite a valid cache")

    with monkeypatch.context() as m:
        m.setattr(folder_mod, "_decode_tree", no_decoding)
        again = load_dataset("cifar10", cifar_fixtures["archive"], cache_dir=cache)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)

    files[0].write_bytes(b"garbage, not a torch file")
    rebuilt = load_dataset("cifar10", cifar_fixtures["archive"], cache_dir=cache)
    assert torch.equal(first.train_x, rebuilt.train_x)
    assert torch.load(files[0], weights_only=True)["classes"] == list(SLICE_CLASSES)


def test_imagefolder_without_splits_grayscale(tmp_path):
    rng = np.random.default_rng(1)
    imgs = {f"{c}/{i}.png": rng.integers(0, 256, (6, 5), dtype=np.uint8) for c in ("b", "a") for i in range(3)}
    for name, a in imgs.items():
        _save_png(tmp_path / "tree" / name, a)
    ds = load_dataset("imagefolder", tmp_path / "tree")
    assert ds.classes == ["a", "b"] and ds.channels == 1 and ds.image_size == (6, 5)
    assert ds.train_x.shape == (6, 1, 6, 5) and ds.test_x.shape == (0, 1, 6, 5)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(ds.train_x[0, 0].numpy(), imgs["a/0.png"])
    allpix = np.stack(list(imgs.values())).astype(np.float64) / 255
    assert ds.mean[0] == pytest.approx(allpix.mean()) and ds.std[0] == pytest.approx(allpix.std())


def test_imagefolder_mixed_gray_and_rgb_becomes_rgb(tmp_path):
    _save_png(tmp_path / "train" / "x" / "0.png", np.full((4, 4), 7, np.uint8))
    _save_png(tmp_path / "train" / "y" / "0.png", np.full((4, 4, 3), 9, np.uint8))
    _save_png(tmp_path / "val" / "y" / "1.png", np.full((4, 4, 3), 11, np.uint8))
    ds = load_dataset("imagefolder", tmp_path)
    assert ds.train_x.shape == (2, 3, 4, 4) and ds.test_x.shape == (1, 3, 4, 4)
    assert (ds.train_x[0] == 7).all() and ds.test_y.tolist() == [1]


# ------------------------------------------------------------------------------------ loaders: errors


def _raises(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(GradnasError, match=match) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_unknown_dataset():
    msg = _raises("unknown dataset 'mnist-ish'", load_dataset, "mnist-ish")
    assert "cifar10, fashion-mnist, imagefolder" in msg


def test_missing_directories(tmp_path):
    missing = tmp_path / "nope"
    for name in ("cifar10", "fashion-mnist", "imagefolder"):
        msg = _raises("does not exist", load_dataset, name, missing)
        assert str(missing) in msg and "--data-dir" in msg
    msg = _raises("not found", load_dataset, "fashion-mnist", tmp_path)
    assert "apt-get install dataset-fashion-mnist" in msg and str(tmp_path) in msg
    _raises("no --data-dir", load_dataset, "imagefolder")


def test_cifar_default_locations_listed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = _raises("no data found", load_dataset, "cifar10")
    assert "data/cifar-10-batches-py" in msg and "cifar10-jpeg.tar.gz" in msg


def test_truncated_and_malformed_idx(tiny_fashion):
    images = tiny_fashion / "train-images-idx3-ubyte.gz"
    good = images.read_bytes()
    images.write_bytes(good[: len(good) // 2])  # gzip stream cut off
    msg = _raises("truncated or corrupt gzip", load_dataset, "fashion-mnist", tiny_fashion)
    assert str(images) in msg and "apt-get install dataset-fashion-mnist" in msg

    raw = gzip.decompress(good)
    images.write_bytes(gzip.compress(raw[:-100]))  # valid gzip, IDX payload short
    _raises("truncated: the header announces 6x28x28 = 4704 bytes", load_dataset, "fashion-mnist", tiny_fashion)

    images.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
    _raises("not an IDX file", load_dataset, "fashion-mnist", tiny_fashion)


def test_corrupt_images_in_folder(tmp_path, cifar_members):
    root = tmp_path / "tree"
    for i, (name, data) in enumerate(sorted(cifar_members.items())[:4]):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"c{i % 2}" / f"{i}.jpg").write_bytes(data)
    bad = root / "c1" / "9.jpg"
    bad.write_bytes(b"this is not a jpeg")
    msg = _raises("cannot decode image", load_dataset, "imagefolder", root)
    assert str(bad) in msg
    bad.write_bytes(next(iter(cifar_members.values()))[:300])  # a real JPEG, truncated
    msg = _raises("cannot decode image", load_dataset, "imagefolder", root)
    assert str(bad) in msg and "truncated" in msg.lower()


def test_one_class_folder(tmp_path):
    for i in range(3):
        _save_png(tmp_path / "only" / f"{i}.png", np.zeros((4, 4), np.uint8))
    msg = _raises("only one class", load_dataset, "imagefolder", tmp_path)
    assert "'only'" in msg and "at least 2 classes" in msg


def test_mixed_size_folder(tmp_path):
    _save_png(tmp_path / "a" / "0.png", np.zeros((8, 8, 3), np.uint8))
    _save_png(tmp_path / "b" / "1.png", np.zeros((8, 6, 3), np.uint8))
    msg = _raises("same size", load_dataset, "imagefolder", tmp_path)
    assert str(tmp_path / "b" / "1.png") in msg and "6x8" in msg and "8x8" in msg and "esize" in msg


def test_truncated_archive(tmp_path, cifar_fixtures):
    data = cifar_fixtures["archive"].read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    msg = _raises("truncated or corrupt", load_dataset, "cifar10", cut, cache_dir=tmp_path)
    assert str(cut) in msg


def test_cifar_rejects_non_cifar_images(tmp_path):
    _save_png(tmp_path / "a" / "0.png", np.zeros((8, 8, 3), np.uint8))
    _save_png(tmp_path / "b" / "0.png", np.zeros((8, 8, 3), np.uint8))
    _raises("not CIFAR-10's 3x32x32.*'imagefolder'", load_dataset, "cifar10", tmp_path)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_refused(tmp_path, cifar_fixtures):
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for f in cifar_fixtures["pickle"].iterdir():
        (batches / f.name).write_bytes(f.read_bytes())
    marker = tmp_path / "pwned"
    (batches / "data_batch_1").write_bytes(pickle.dumps(_Evil(marker)))
    msg = _raises("refusing to load", load_dataset, "cifar10", batches)
    assert "system" in msg and str(batches / "data_batch_1") in msg
    assert not marker.exists()


def test_corrupt_pickle(tmp_path, cifar_fixtures):
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for f in cifar_fixtures["pickle"].iterdir():
        (batches / f.name).write_bytes(f.read_bytes())
    data = (batches / "test_batch").read_bytes()
    (batches / "test_batch").write_bytes(data[: len(data) // 2])
    _raises("test_batch is truncated or corrupt", load_dataset, "cifar10", batches)


# ------------------------------------------------------------------------------------ augmentation

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _batch(n=64, h=12, w=10, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _norm(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_augment_shape_dtype_and_eval_mode():
    x = _batch()
    aug = Augment(MEAN, STD, cutout=4)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(aug(x, None, train=False), _norm(x))


def test_augment_crop_is_a_zero_padded_shift():
    x, p = _batch(), 4
    out = Augment(MEAN, STD, crop_padding=p, flip=False)(x, torch.Generator().manual_seed(1))
    padded = F.pad(x, (p, p, p, p))  # black (0) padding in uint8 space
    h, w = x.shape[2:]
    offsets = set()
    for i in range(len(x)):  # reference: the crop at the one offset that matches
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(out[i], _norm(padded[i:i + 1, :, dy:dy + h, dx:dx + w])[0])]
        assert len(hits) == 1, f"sample {i}: {hits}"
        offsets.add(hits[0])
    assert len(offsets) > 10  # offsets really vary


def test_augment_crop_of_ones_has_black_borders():
    x = torch.ones(32, 1, 8, 8, dtype=torch.uint8)
    out = Augment((0.0,), (1.0,), crop_padding=2, flip=False)(x, torch.Generator().manual_seed(2))
    for img in (out[:, 0] > 0):
        rows, cols = img.any(1), img.any(0)
        # the ones form one rectangle of size (8 - |dy|) x (8 - |dx|), touching two opposite... borders
        assert img.sum() == rows.sum() * cols.sum()
        assert 6 <= rows.sum() <= 8 and 6 <= cols.sum() <= 8
        assert (rows[0] or rows[-1]) and (cols[0] or cols[-1])


def test_augment_flip_matches_torch_flip():
    x = _batch(n=200)
    out = Augment(MEAN, STD, crop_padding=0, flip=True)(x, torch.Generator().manual_seed(3))
    plain, mirrored = _norm(x), _norm(torch.flip(x, dims=[3]))
    flipped = [bool(torch.equal(o, m)) for o, m in zip(out, mirrored)]
    for o, p, f in zip(out, plain, flipped):
        assert f or torch.equal(o, p)
    assert 60 < sum(flipped) < 140


def test_augment_cutout_zeroes_a_square():
    x = torch.full((256, 3, 20, 20), 200, dtype=torch.uint8)
    size = 6
    out = Augment(MEAN, STD, crop_padding=0, flip=False, cutout=size)(x, torch.Generator().manual_seed(4))
    ref = _norm(x)
    interior = 0
    for o, r in zip(out, ref):
        zero = (o == 0).all(0)
        assert torch.equal(o[:, ~zero], r[:, ~zero])  # the rest is the plain normalised image
        rows = zero.any(1).nonzero().flatten()
        cols = zero.any(0).nonzero().flatten()
        assert zero.sum() == len(rows) * len(cols)  # one rectangle
        assert len(rows) <= size and len(cols) <= size
        if len(rows) and rows[0] > 0 and rows[-1] < 19 and cols[0] > 0 and cols[-1] < 19:
            interior += 1
            assert len(rows) == len(cols) == size
    assert interior > 50


def test_augment_reproducible_from_generator():
    x = _batch()
    aug = Augment(MEAN, STD, cutout=5)
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_rejects_bad_input():
    with pytest.raises(GradnasError):
        Augment(MEAN, STD)(torch.zeros(2, 3, 4, 4), None)  # float, not uint8
    with pytest.raises(GradnasError):
        Augment(MEAN, (0.1, 0.0, 0.2))


# ------------------------------------------------------------------------------------ splits and batches


def test_search_split_halves():
    s = make_search_split(1000, seed=3, subset=200)
    w, a = set(s.weight_idx.tolist()), set(s.arch_idx.tolist())
    assert len(w) == len(a) == 100 and not w & a
    expected = torch.randperm(1000, generator=torch.Generator().manual_seed(3))[:200]
    assert w | a == set(expected.tolist())
    assert s.weight_idx.dtype == s.arch_idx.dtype == torch.int64
    full = make_search_split(11, fraction=0.5, seed=0)
    assert len(full.weight_idx) == 5 and len(full.arch_idx) == 6


def test_search_split_seeded_and_round_trip():
    s = make_search_split(500, seed=1)
    assert s == make_search_split(500, seed=1)
    assert s != make_search_split(500, seed=2)
    back = SearchSplit.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and back.seed == 1 and back.fraction == 0.5


def test_search_split_rejects_bad_arguments():
    for kwargs in ({"fraction": 0.0}, {"fraction": 1.5}, {"subset": 0}, {"subset": 101}):
        with pytest.raises(GradnasError):
            make_search_split(100, **kwargs)
    full = make_search_split(100, fraction=1.0, subset=40)  # the full training set: no architecture half
    assert len(full.weight_idx) == 40 and len(full.arch_idx) == 0
    with pytest.raises(GradnasError, match="disjoint"):
        SearchSplit.from_dict({"seed": 0, "fraction": 0.5, "weight_idx": [1, 2], "arch_idx": [2, 3]})
    with pytest.raises(GradnasError, match="invalid search split"):
        SearchSplit.from_dict({"seed": 0})


def _paired(augment=None, seed=5, batch_size=16):
    x = _batch(n=120, h=8, w=8, seed=9)
    y = torch.arange(120) % 10
    split = make_search_split(120, seed=0, subset=100)
    aug = augment or Augment(MEAN, STD, crop_padding=0, flip=False)
    return x, y, split, PairedBatches(x, y, split, batch_size=batch_size, augment=aug, device="cpu", seed=seed)


def test_paired_batches_indices_and_content():
    x, y, split, pb = _paired()
    assert len(pb) == 50 // 16 == 3
    w_set, a_set = set(split.weight_idx.tolist()), set(split.arch_idx.tolist())
    steps = pb.epoch_indices(0)
    assert len(steps) == 3
    seen_w = [i for wi, _ in steps for i in wi.tolist()]
    assert set(seen_w) <= w_set and len(set(seen_w)) == len(seen_w) == 48
    assert all(set(ai.tolist()) <= a_set for _, ai in steps)
    for ((xw, yw), (xa, ya)), (wi, ai) in zip(pb.epoch(0), steps):
        # Normalisation-only augment: the batches are exactly the indexed images.
        assert torch.equal(xw, _norm(x[wi])) and torch.equal(yw, y[wi])
        assert torch.equal(xa, _norm(x[ai])) and torch.equal(ya, y[ai])


def test_paired_batches_replay_by_seed_and_epoch():
    aug = Augment(MEAN, STD, cutout=3)
    _, _, _, pb = _paired(aug)
    torch.manual_seed(0)
    first = list(pb.epoch(2))
    torch.manual_seed(123)  # global RNG must not matter
    _, _, _, fresh = _paired(aug)  # as after a restart
    again = list(fresh.epoch(2))
    for ((a, ay), (b, by)), ((c, cy), (d, dy)) in zip(first, again):
        assert torch.equal(a, c) and torch.equal(b, d) and torch.equal(ay, cy) and torch.equal(by, dy)
    other = pb.epoch_indices(3)
    assert any(not torch.equal(p[0], q[0]) for p, q in zip(pb.epoch_indices(2), other))
    assert not torch.equal(list(pb.epoch(3))[0][0][0], first[0][0][0])


def test_paired_batches_batch_too_large():
    with pytest.raises(GradnasError, match="batch size 51"):
        _paired(batch_size=51)


def test_iterate_batches_sequential_with_partial_last():
    x, y = _batch(n=10), torch.arange(10)
    aug = Augment(MEAN, STD)
    batches = list(iterate_batches(x, y, batch_size=4, augment=aug, device="cpu"))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), _norm(x))
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
