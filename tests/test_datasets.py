"""Tests of kgmeta.datasets: folder / npz / DICOM loading, views, duplicate detection."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from kgmeta.datasets import (
    ConcatClasses, DicomFolderDataset, ImageClassDataset, ImageFolderDataset, NpzDataset,
    find_duplicates, load_image_file, phash, subset,
)
from kgmeta.errors import DataError

RNG = np.random.default_rng(0)


def smooth_image(rng: np.random.Generator, size: int = 48, channels: int = 3) -> np.ndarray:
    """A random low-frequency image (like a real photo, unlike white noise)."""
    small = rng.integers(0, 256, (6, 6, channels), dtype=np.uint8)
    im = Image.fromarray(small if channels == 3 else np.ascontiguousarray(small[..., 0]))
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC))


def make_folder(root, classes: dict[str, int], size: int = 20, ext: str = "png", seed: int = 0):
    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        d = root / name
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(smooth_image(rng, size)).save(d / f"{i:03d}.{ext}")
    return root


# --------------------------------------------------------------------------- single files
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["L", "RGB", "I16", "P", "RGBA", "LA", "CMYK", "1", "jpeg",
                                  "bmp", "tiff", "tiff16"])
def test_load_image_file_modes(tmp_path, kind, channels):
    rgb = smooth_image(np.random.default_rng(1), 30)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    p = tmp_path / "img.png"
    if kind == "L":
        Image.fromarray(gray).save(p)
    elif kind == "RGB":
        Image.fromarray(rgb).save(p)
    elif kind == "I16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(p)
    elif kind == "P":
        Image.fromarray(rgb).convert("P").save(p)
    elif kind == "RGBA":
        Image.fromarray(rgb).convert("RGBA").save(p)
    elif kind == "LA":
        Image.fromarray(gray).convert("LA").save(p)
    elif kind == "CMYK":
        p = tmp_path / "img.jpg"
        Image.fromarray(rgb).convert("CMYK").save(p)
    elif kind == "1":
        Image.fromarray(gray).convert("1").save(p)
    elif kind == "jpeg":
        p = tmp_path / "img.jpeg"
        Image.fromarray(rgb).save(p, quality=95)
    elif kind == "bmp":
        p = tmp_path / "img.bmp"
        Image.fromarray(rgb).save(p)
    elif kind == "tiff":
        p = tmp_path / "img.tif"
        Image.fromarray(rgb).save(p)
    elif kind == "tiff16":
        p = tmp_path / "img.tiff"
        Image.fromarray(gray.astype(np.uint16) * 257).save(p)
    x = load_image_file(p, 16, channels)
    assert x.dtype == torch.uint8 and x.shape == (channels, 16, 16)
    if kind in ("L", "I16", "tiff16", "LA"):
        ref = load_image_file(_save(tmp_path / "ref.png", gray), 16, channels)
        assert torch.equal(x, ref)  # 16-bit scaled by 1/257 exactly onto the 8-bit image
    if kind in ("RGB", "RGBA", "bmp", "tiff"):
        ref = load_image_file(_save(tmp_path / "ref.png", rgb), 16, channels)
        assert torch.equal(x, ref)  # alpha dropped, colours kept
    if kind in ("jpeg", "P", "CMYK"):
        ref = load_image_file(_save(tmp_path / "ref.png", rgb), 16, channels)
        assert (x.float() - ref.float()).abs().mean() < 12
    if channels == 3 and kind in ("L", "I16", "LA", "1", "tiff16"):
        assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def _save(p, arr):
    Image.fromarray(arr).save(p)
    return p


def test_16bit_uses_full_range(tmp_path):
    a = np.array([[0, 65535], [257 * 100, 257 * 200]], dtype=np.uint16)
    x = load_image_file(_save(tmp_path / "a.png", a), 2, 1)
    assert x[0].tolist() == [[0, 255], [100, 200]]


@pytest.mark.parametrize("bad", ["zero", "truncated", "text", "truncated_jpg"])
def test_bad_files_name_the_file(tmp_path, bad):
    d = make_folder(tmp_path / "root", {"a": 3, "b": 3})
    if bad == "zero":
        p = d / "a" / "bad.png"
        p.write_bytes(b"")
    elif bad == "truncated":
        p = d / "a" / "bad.png"
        data = (d / "a" / "000.png").read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif bad == "text":
        p = d / "a" / "bad.png"
        p.write_text("this is not an image\n")
    else:
        p = d / "a" / "bad.jpg"
        Image.fromarray(smooth_image(RNG, 64)).save(p)
        p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataError, match="bad\\.(png|jpg)") as ei:
        ImageFolderDataset(d, size=8)
    assert "\n" not in str(ei.value)
    with pytest.warns(UserWarning, match="bad"):
        ds = ImageFolderDataset(d, size=8, skip_bad=True)
    assert ds.counts() == [3, 3]


def test_decompression_bomb_limit(tmp_path):
    p = _save(tmp_path / "big.png", np.zeros((100, 100), np.uint8))
    with pytest.raises(DataError, match="big.png.*max_pixels"):
        load_image_file(p, 8, 1, max_pixels=5000)
    assert load_image_file(p, 8, 1, max_pixels=None).shape == (1, 8, 8)
    (tmp_path / "root" / "cls").mkdir(parents=True)
    p.rename(tmp_path / "root" / "cls" / "big.png")
    for preload in (True, False):
        with pytest.raises(DataError, match="big.png.*decompression bomb"):
            ImageFolderDataset(tmp_path / "root", size=8, max_pixels=5000, preload=preload)


# --------------------------------------------------------------------------- folders
def test_folder_dataset_basic(tmp_path):
    root = make_folder(tmp_path / "r", {"b_cls": 4, "a_cls": 3})
    (root / ".hidden").mkdir()
    (root / "a_cls" / "notes.txt").write_text("x")
    ds = ImageFolderDataset(root, size=12, channels=1, class_iris={"a_cls": "http://x/A"})
    assert isinstance(ds, ImageClassDataset)
    assert ds.class_names == ["a_cls", "b_cls"] and ds.counts() == [3, 4]
    assert ds.class_iris == ["http://x/A", None]
    x = ds.load(1, [3, 0])
    assert x.shape == (2, 1, 12, 12) and x.dtype == torch.uint8
    assert torch.equal(x[1], load_image_file(root / "b_cls" / "000.png", 12, 1))
    with pytest.raises(IndexError):
        ds.load(0, [3])


def test_preload_and_lazy_identical(tmp_path):
    root = make_folder(tmp_path / "r", {"a": 5, "b": 4})
    (root / "b" / "sub").mkdir()
    Image.fromarray(smooth_image(RNG, 33).astype(np.uint8)).save(root / "b" / "sub" / "x.JPG")
    pre = ImageFolderDataset(root, size=16)
    lazy = ImageFolderDataset(root, size=16, memory_cap_mb=0)
    assert pre.preloaded and not lazy.preloaded
    assert pre.counts() == lazy.counts() == [5, 5]
    for c in range(2):
        idx = list(range(pre.count(c)))[::-1]
        assert torch.equal(pre.load(c, idx), lazy.load(c, idx))


def test_roots_same_names_kept_apart_or_merged(tmp_path):
    r1 = make_folder(tmp_path / "site1", {"tumour": 2, "normal": 2})
    r2 = make_folder(tmp_path / "site2", {"tumour": 3}, seed=1)
    ds = ImageFolderDataset([r1, r2], size=8)
    assert ds.class_names == ["normal", "site1/tumour", "site2/tumour"]
    assert ds.counts() == [2, 2, 3]
    merged = ImageFolderDataset([r1, r2], size=8, merge_same_names=True,
                                class_iris=["iri:n", "iri:t"])
    assert merged.class_names == ["normal", "tumour"] and merged.counts() == [2, 5]
    assert merged.class_iris == ["iri:n", "iri:t"]


def test_folder_errors(tmp_path):
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "empty_root")
    root = make_folder(tmp_path / "r", {"a": 2})
    (root / "b").mkdir()
    with pytest.raises(DataError, match="'b'.*no images"):
        ImageFolderDataset(root)
    with pytest.raises(DataError, match="not a folder"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="class_iris has 1 entries"):
        ImageFolderDataset(make_folder(tmp_path / "r2", {"a": 1, "b": 1}), class_iris=["x"])


# --------------------------------------------------------------------------- DICOM (faked pydicom)
def test_dicom_missing_pydicom_is_clear(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(DataError, match=r"pip install kgmeta\[dicom\]"):
        DicomFolderDataset(tmp_path)


def test_dicom_with_fake_pydicom(tmp_path, monkeypatch):
    arrays = {}

    class FakeDs:
        def __init__(self, arr, **attrs):
            self.pixel_array = arr
            self.__dict__.update(attrs)

    def dcmread(path, stop_before_pixels=False):
        return arrays[str(path)]

    monkeypatch.setitem(sys.modules, "pydicom", types.SimpleNamespace(dcmread=dcmread))
    for cls in ("ct", "xr"):
        (tmp_path / cls).mkdir()
    ramp = np.arange(16, dtype=np.int16).reshape(4, 4) * 100 - 1000  # HU -1000..500
    p1, p2 = tmp_path / "ct" / "a.dcm", tmp_path / "xr" / "b.dcm"
    p1.write_bytes(b"x")
    p2.write_bytes(b"x")
    arrays[str(p1)] = FakeDs(ramp, WindowCenter=0, WindowWidth=1000, RescaleSlope=1,
                             RescaleIntercept=0)
    arrays[str(p2)] = FakeDs(np.arange(16, dtype=np.uint16).reshape(4, 4),
                             PhotometricInterpretation="MONOCHROME1")
    ds = DicomFolderDataset(tmp_path, size=4, channels=1)
    ct, xr = ds.load(0, [0])[0, 0], ds.load(1, [0])[0, 0]
    assert ct.flatten()[0] == 0 and ct.flatten()[-1] == 255  # clipped by the window [-500, 500]
    assert ct.flatten()[10] == round((0 + 500) / 1000 * 255)  # HU 0 -> window centre
    assert xr.flatten()[0] == 255 and xr.flatten()[-1] == 0  # MONOCHROME1 inverted
    with pytest.raises(ValueError, match="window must be 'auto' or 'minmax'"):  # API misuse
        DicomFolderDataset(tmp_path, window="lung")


# --------------------------------------------------------------------------- npz
def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def medmnist(path, n=(10, 4, 6), hw=8, rgb=False, n_cls=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for s, k in zip(("train", "val", "test"), n):
        shape = (k, hw, hw, 3) if rgb else (k, hw, hw)
        arrays[f"{s}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(k) % n_cls).reshape(k, 1)
    return write_npz(path, **arrays), arrays


def test_npz_splits_and_shapes(tmp_path):
    p, a = medmnist(tmp_path / "pathmnist.npz", rgb=True)
    ds = NpzDataset(p, split="train")
    assert ds.channels == 3 and ds.size == 8 and ds.class_names == ["0", "1", "2"]
    assert ds.counts() == [4, 3, 3]
    img = ds.load(1, [0])[0]  # first train image with label 1 is image 1
    assert torch.equal(img, torch.from_numpy(a["train_images"][1]).permute(2, 0, 1))
    all_ = NpzDataset(p, split="all", size=4, channels=1, class_names=["x", "y", "z"])
    assert sum(all_.counts()) == 20 and all_.load(0, [0]).shape == (1, 1, 4, 4)
    g, _ = medmnist(tmp_path / "g.npz")
    gray = NpzDataset(g, split="val", channels=3)
    assert gray.load(0, [0]).shape == (1, 3, 8, 8)


def test_npz_errors(tmp_path):
    p, a = medmnist(tmp_path / "m.npz")
    del a["val_labels"]
    q = write_npz(tmp_path / "missing.npz", **a)
    with pytest.raises(DataError, match="missing.npz.*'val_labels'"):
        NpzDataset(q, split="val")
    a["val_labels"] = np.zeros((3, 1), np.int64)  # 4 images
    q = write_npz(tmp_path / "mismatch.npz", **a)
    with pytest.raises(DataError, match="mismatch.npz.*val_images has 4 images but val_labels has 3"):
        NpzDataset(q, split="val")
    ml = dict(a)
    ml["train_labels"] = np.eye(14, dtype=np.uint8)[np.arange(10) % 14]
    ml["train_labels"][0, 3] = 1  # image 0 has two findings
    q = write_npz(tmp_path / "chestmnist.npz", **ml)
    with pytest.raises(DataError, match="chestmnist.npz.*multi-label.*multilabel="):
        NpzDataset(q)
    single = NpzDataset(q, multilabel="single")
    assert sum(single.counts()) == 9
    assert sum(NpzDataset(q, multilabel="first").counts()) == 10
    with pytest.raises(ValueError, match="split must be"):
        NpzDataset(p, split="dev")


# --------------------------------------------------------------------------- views
class Mem(ImageClassDataset):
    def __init__(self, data, name="mem", size=16, channels=3):
        self.name, self.size, self.channels = name, size, channels
        self.data = data
        self.class_names = [f"c{i}" for i in range(len(data))]
        self.class_iris = [None] * len(data)

    def count(self, c):
        return len(self.data[c])

    def load(self, c, idx):
        return self.data[c][torch.as_tensor(list(idx), dtype=torch.long)]


def test_subset_and_concat():
    d1 = Mem([torch.full((2, 3, 16, 16), i, dtype=torch.uint8) for i in range(3)], "d1")
    d2 = Mem([torch.full((4, 3, 16, 16), 9, dtype=torch.uint8)], "d2")
    s = subset(d1, [2, 0])
    assert s.class_names == ["c2", "c0"] and s.load(0, [1])[0, 0, 0, 0] == 2
    cat = ConcatClasses([d1, d2])
    assert cat.class_names == ["d1/c0", "c1", "c2", "d2/c0"] and cat.count(3) == 4
    assert cat.load(3, [0])[0, 0, 0, 0] == 9
    with pytest.raises(ValueError, match="out of range"):
        subset(d1, [5])
    with pytest.raises(ValueError, match="channels, size"):
        ConcatClasses([d1, Mem([torch.zeros(1, 1, 16, 16, dtype=torch.uint8)], channels=1)])


def test_api_misuse_is_value_or_type_error(tmp_path):
    """Wrong Python arguments are the calling code's mistake (ValueError/TypeError with a
    traceback), not a user's DataError; the config refuses the same values as data.* keys."""
    root = make_folder(tmp_path / "r", {"a": 1, "b": 1})
    d1 = Mem([torch.zeros(1, 3, 16, 16, dtype=torch.uint8)] * 2, "d1")
    cases = [
        (ValueError, "channels must be 1 or 3", lambda: ImageFolderDataset(root, channels=2)),
        (TypeError, "size must be a positive int", lambda: ImageFolderDataset(root, size=32.0)),
        (ValueError, "size must be a positive int", lambda: ImageFolderDataset(root, size=0)),
        (ValueError, "at least one root folder", lambda: ImageFolderDataset([])),
        (ValueError, "channels must be 1 or 3", lambda: load_image_file(next(root.rglob("*.png")), 16, 4)),
        (ValueError, "multilabel must be", lambda: NpzDataset(tmp_path / "x.npz", multilabel="all")),
        (ValueError, "channels must be 1 or 3", lambda: NpzDataset(tmp_path / "x.npz", channels=2)),
        (ValueError, "has no class 'zz'", lambda: d1.class_index("zz")),
        (ValueError, "repeat a class", lambda: subset(d1, [0, 0])),
        (ValueError, "at least one dataset", lambda: ConcatClasses([])),
        (ValueError, "class names repeat", lambda: ConcatClasses([d1, d1])),
    ]
    for cls, msg, call in cases:
        with pytest.raises(cls, match=msg) as info:
            call()
        assert not isinstance(info.value, DataError), msg


# --------------------------------------------------------------------------- duplicates
def _stack(imgs):
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def test_find_duplicates_planted_near_copies(tmp_path):
    rng = np.random.default_rng(42)
    train = [smooth_image(rng, 32) for _ in range(40)]
    test = [smooth_image(rng, 32) for _ in range(40)]
    noisy = np.clip(train[3].astype(int) + rng.normal(0, 4, train[3].shape), 0, 255).astype(np.uint8)
    bright = np.clip(train[7].astype(int) + 12, 0, 255).astype(np.uint8)
    resized = np.asarray(Image.fromarray(train[11]).resize((24, 24), Image.Resampling.BILINEAR)
                         .resize((32, 32), Image.Resampling.BILINEAR))
    test[5], test[6], test[7], test[8] = noisy, bright, resized, train[20].copy()
    ds_train = Mem([_stack(train[:20]), _stack(train[20:])], "train", size=32)
    ds_test = Mem([_stack(test)], "test", size=32)
    rep = find_duplicates({"train": (ds_train, None), "test": (ds_test, [0])}, max_distance=6)
    found = {(p.a.class_index, p.a.index, p.b.index): p for p in rep.pairs}
    assert set(found) == {(0, 3, 5), (0, 7, 6), (0, 11, 7), (1, 0, 8)}, rep.to_dict()
    assert found[(1, 0, 8)].exact and found[(1, 0, 8)].distance == 0
    assert not found[(0, 3, 5)].exact
    assert len(rep.exact) == 1 and len(rep.near) == 3
    assert rep.n_images == {"train": 40, "test": 40}
    assert "1 exact and 3 near" in rep.summary()


def test_find_duplicates_class_splits_of_one_dataset_clean():
    rng = np.random.default_rng(7)
    ds = Mem([_stack([smooth_image(rng, 32) for _ in range(30)]) for _ in range(4)], size=32)
    rep = find_duplicates({"train": (ds, [0, 1]), "val": (ds, [2]), "test": (ds, [3])})
    assert len(rep) == 0 and not rep


def test_phash_stable_and_discriminative():
    rng = np.random.default_rng(3)
    x = _stack([smooth_image(rng, 64) for _ in range(50)])
    h = phash(x)
    assert h.dtype == np.uint64 and h.shape == (50,)
    d = np.bitwise_count(h[:, None] ^ h[None, :]) if hasattr(np, "bitwise_count") else None
    if d is not None:
        off = d[~np.eye(50, dtype=bool)]
        assert off.min() > 8 and 20 < off.mean() < 44
    shifted = (x.int() + 10).clamp(0, 255).to(torch.uint8)  # some pixels saturate at 255
    if d is not None:
        moved = np.bitwise_count(phash(shifted) ^ h)
        assert moved.max() <= 8 and moved.mean() < 3


def test_warnings_not_errors_for_good_folder(tmp_path):
    root = make_folder(tmp_path / "r", {"a": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageFolderDataset(root, size=8)


def test_find_duplicates_across_folder_datasets(tmp_path):
    train = make_folder(tmp_path / "train", {"a": 6, "b": 6}, size=32, seed=1)
    test = make_folder(tmp_path / "test", {"c": 6}, size=32, seed=2)
    src = Image.open(train / "b" / "002.png")
    src.resize((45, 45), Image.Resampling.BICUBIC).save(test / "c" / "resized.png")
    src.save(test / "c" / "reencoded.jpg", quality=90)
    ds_tr, ds_te = ImageFolderDataset(train, size=32), ImageFolderDataset(test, size=32)
    rep = find_duplicates({"train": (ds_tr, None), "test": (ds_te, None)})
    got = {(p.a.class_name, p.a.index, ds_te.files(p.b.class_index)[p.b.index].name) for p in rep.pairs}
    assert got == {("b", 2, "resized.png"), ("b", 2, "reencoded.jpg")}, rep.to_dict()
