"""Image datasets behind one small contract: folders, MedMNIST ``.npz``, DICOM folders.

Every dataset is an :class:`ImageClassDataset`: a list of classes, the number of images in each,
and ``load(c, idx)`` returning uint8 pixels ``[len(idx), C, H, W]`` (square, ``size`` x ``size``).
Episodes (``kgmeta.episodes``) convert to float in [0, 1]; normalisation lives in the backbone.

Folder and npz datasets keep each class as ONE uint8 tensor in memory when it fits
(``memory_cap_mb``), so drawing an episode is a tensor index, not per-image Python work; larger
folders decode on ``load``. :func:`find_duplicates` checks that no image (exact pixels) or
near-copy (64-bit DCT perceptual hash, Hamming distance) sits in two splits.
"""

from __future__ import annotations

import abc
import hashlib
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from kgmeta.errors import DataError
from kgmeta.limits import check_memory, check_regular_file, format_bytes

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "tif", "tiff", "bmp")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS (about 0.25 GB RGB)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, what PIL's convert("L") uses


# ----------------------------------------------------------------------------- the contract
class ImageClassDataset(abc.ABC):
    """A labelled image collection seen class by class (see docs/contracts.md).

    Subclasses set ``name``, ``class_names`` [n_classes], ``class_iris`` (ontology IRI or None per
    class), ``channels`` and ``size``, and implement :meth:`count` and :meth:`load`.
    """

    name: str
    class_names: list[str]
    class_iris: list[str | None]
    channels: int
    size: int

    @abc.abstractmethod
    def count(self, c: int) -> int:
        """Number of images in class ``c``."""

    @abc.abstractmethod
    def load(self, c: int, idx: Sequence[int]) -> torch.Tensor:
        """Images ``idx`` of class ``c`` as uint8 ``[len(idx), C, H, W]``."""

    # helpers built only on the contract (subclasses need not override them)
    def counts(self) -> list[int]:
        return [self.count(c) for c in range(len(self.class_names))]

    def class_index(self, name: str) -> int:
        try:
            return self.class_names.index(name)
        except ValueError:
            raise ValueError(f"dataset {self.name!r} has no class {name!r}; "
                             f"classes: {', '.join(self.class_names)}") from None

    def __repr__(self) -> str:
        n = sum(self.count(c) for c in range(len(self.class_names)))
        return (f"{type(self).__name__}(name={self.name!r}, classes={len(self.class_names)}, "
                f"images={n}, channels={self.channels}, size={self.size})")


def _check_idx(ds: ImageClassDataset, c: int, idx: Any, n: int) -> torch.Tensor:
    if not 0 <= c < len(ds.class_names):
        raise IndexError(f"class {c} out of range for dataset {ds.name!r} with "
                         f"{len(ds.class_names)} classes")
    t = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise IndexError(f"image index out of range 0..{n - 1} for class "
                         f"{ds.class_names[c]!r} of dataset {ds.name!r}")
    return t


# ----------------------------------------------------------------------------- pixel helpers
def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {msg}"


def _to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3] -> uint8 [channels, H, W]."""
    if arr.ndim == 2:
        arr = arr[None]
        return np.repeat(arr, 3, axis=0) if channels == 3 else arr
    arr = np.moveaxis(arr, -1, 0)
    if channels == 1:
        g = np.tensordot(np.asarray(_LUMA, np.float32), arr.astype(np.float32), axes=1)
        return np.clip(np.rint(g), 0, 255).astype(np.uint8)[None]
    return arr


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _pil_to_uint8(im: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> 8-bit "L" (channels=1) or "RGB" (channels=3).

    16-bit modes (I;16*, and "I" as Pillow opens 16-bit PNG/TIFF) map 0..65535 -> 0..255 (/257);
    float "F" maps [0, 1] -> 0..255 when it lies in [0, 1], else min-max. Alpha is dropped
    (pixels keep their colour); palette, CMYK, YCbCr and 1-bit images convert through Pillow.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode == "I" or mode == "F":
        a = np.asarray(im).astype(np.float64)
        if mode == "F":
            lo, hi = float(a.min()), float(a.max())
            a = a * 255.0 if lo >= 0.0 and hi <= 1.0 else (a - lo) / max(hi - lo, 1e-12) * 255.0
        else:
            a = np.clip(a, 0, 65535) / 257.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))  # mode "L"
        mode = "L"
    want = "L" if channels == 1 else "RGB"
    if mode == want:
        return im
    if mode in ("LA", "La"):
        im = im.getchannel(0)
        return im if want == "L" else im.convert("RGB")
    if mode in ("RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1", "RGBX"):
        im = im.convert("RGB")
        return im if want == "RGB" else im.convert("L")
    return im.convert(want)


def load_image_file(path: str | os.PathLike, size: int, channels: int = 3, *,
                    max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode one image file to uint8 ``[channels, size, size]``.

    Any Pillow mode is unified (see :func:`_pil_to_uint8`); the image is stretched to a square with
    antialiased bilinear resampling (JPEGs are first DCT-downscaled when much larger). An image
    over ``max_pixels`` (width x height; None = no limit) is refused before decoding (a
    decompression bomb or an unexpectedly huge file). Raises DataError naming the file.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise DataError(f"{p}: empty file (0 bytes); delete or replace it, or pass skip_bad=True")
    except OSError as e:
        raise DataError(f"{p}: cannot read ({_one_line(e)}); check the path and its "
                        f"permissions") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise DataError(
                        f"{p}: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels} (possible "
                        f"decompression bomb); shrink the file or raise max_pixels")
                if im.format == "JPEG" and min(w, h) >= 2 * size:
                    im.draft("L" if channels == 1 else "RGB", (size, size))
                im.load()  # first frame of a multi-frame file
                out = _pil_to_uint8(im, channels)
                if out.size != (size, size):
                    out = out.resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(out)
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"{p}: refused by Pillow's decompression-bomb limit ({_one_line(e)}); "
                        f"shrink the file or raise PIL.Image.MAX_IMAGE_PIXELS") from None
    except UnidentifiedImageError:
        raise DataError(f"{p}: not an image Pillow can identify; delete or convert it, "
                        f"or pass skip_bad=True") from None
    except PermissionError:
        raise DataError(f"{p}: cannot read the file (permission denied); fix its permissions, "
                        f"or pass skip_bad=True") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as e:
        raise DataError(f"{p}: cannot decode image ({_one_line(e)}); the file is damaged or "
                        f"truncated: replace it, or pass skip_bad=True") from None
    return _as_tensor(_to_channels(arr, channels))


def _check_header(path: Path, max_pixels: int | None) -> None:
    """Cheap validity check without decoding pixels (lazy datasets)."""
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes); delete or replace it, or pass skip_bad=True")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise DataError(f"{path}: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels} "
                            f"(possible decompression bomb); shrink the file or raise max_pixels")
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: refused by Pillow's decompression-bomb limit ({_one_line(e)}); "
                        f"shrink the file or raise PIL.Image.MAX_IMAGE_PIXELS") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can identify; delete or convert it, "
                        f"or pass skip_bad=True") from None
    except PermissionError:
        raise DataError(f"{path}: cannot read the file (permission denied); fix its "
                        f"permissions, or pass skip_bad=True") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read image header ({_one_line(e)}); replace the file, "
                        f"or pass skip_bad=True") from None


def _resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size] (antialiased bilinear, in chunks)."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for s in range(0, x.shape[0], 512):
        y = F.interpolate(x[s:s + 512].float(), size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)
        out[s:s + 512] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _convert_channels_batch(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 [N, C, H, W] with C in {1, 3} -> uint8 [N, channels, H, W]."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    w = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def _resolve_iris(names: list[str], folders: list[str], class_iris: Any) -> list[str | None]:
    if class_iris is None:
        return [None] * len(names)
    if isinstance(class_iris, Mapping):
        return [class_iris.get(n, class_iris.get(f)) for n, f in zip(names, folders)]
    iris = list(class_iris)
    if len(iris) != len(names):
        raise ValueError(f"class_iris has {len(iris)} entries but the dataset has {len(names)} "
                         f"classes ({', '.join(names)}); pass one per class or a name->IRI mapping")
    return iris


# ----------------------------------------------------------------------------- folders
def image_files(folder: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under ``folder``, recursively and sorted: extensions matched case-insensitively,
    hidden files and folders skipped (the file rules of :class:`ImageFolderDataset`)."""
    d = Path(folder)
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    return sorted(f for f in d.rglob("*") if f.suffix.lower() in exts and f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(d).parts))


class ImageFolderDataset(ImageClassDataset):
    """One sub-folder per class under one or several roots (``root/<class>/**/<image>``).

    The class name is the folder name; when two roots hold the same name the classes are kept
    apart as ``"<root folder name>/<name>"``, or merged with ``merge_same_names=True``. Files are
    found recursively (hidden files and folders skipped), matched by extension case-insensitively,
    and sorted, so indices are stable. ``class_iris`` maps class (or folder) names to ontology IRIs,
    or lists one per class. When all images fit ``memory_cap_mb`` (``preload=None``) each class is
    decoded once into one uint8 tensor; otherwise images decode on :meth:`load` (headers are
    checked at construction). Bad files raise DataError naming the file, or with ``skip_bad=True``
    are dropped with a warning (a file that fails only on a lazy ``load`` still raises).
    """

    def __init__(self, roots: str | os.PathLike | Sequence[str | os.PathLike], *, size: int = 64,
                 channels: int = 3, memory_cap_mb: float = 1024,
                 class_iris: Mapping[str, str | None] | Sequence[str | None] | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, merge_same_names: bool = False,
                 skip_bad: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 preload: bool | None = None, name: str | None = None) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if not isinstance(size, int):
            raise TypeError(f"size must be a positive int, got {size!r}")
        if size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        root_list = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
        if not root_list:
            raise ValueError("ImageFolderDataset needs at least one root folder")
        exts = {"." + e.lower().lstrip(".") for e in extensions}
        self.roots = [Path(r) for r in root_list]
        self.size, self.channels = size, channels
        self.max_pixels = max_pixels
        self.skip_bad = skip_bad
        self.name = name or "+".join(r.name for r in self.roots)

        found: list[tuple[Path, str, list[Path]]] = []  # (root, folder name, files)
        for root in self.roots:
            if not root.is_dir():
                raise DataError(f"{root}: not a folder; pass folders holding one sub-folder per class")
            subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
            if not subdirs:
                raise DataError(f"{root}: no class sub-folders; put each class's images in "
                                f"{root}/<class name>/")
            for d in subdirs:
                found.append((root, d.name, image_files(d, extensions)))

        by_name: dict[str, list[tuple[Path, list[Path]]]] = {}
        for root, folder, files in found:
            by_name.setdefault(folder, []).append((root, files))
        names, folders, file_lists = [], [], []
        for root, folder, files in found:
            entries = by_name[folder]
            if len(entries) > 1 and merge_same_names:
                if entries[0][0] != root:
                    continue
                names.append(folder)
                files = [f for _, fs in entries for f in fs]
            elif len(entries) > 1:
                names.append(f"{root.name}/{folder}")
            else:
                names.append(folder)
            folders.append(folder)
            file_lists.append(files)
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise DataError(f"class names {dup} occur twice (roots with the same folder name); "
                            f"rename a root or pass merge_same_names=True")
        for n, files in zip(names, file_lists):
            if not files:
                raise DataError(f"class folder {n!r} under {', '.join(map(str, self.roots))} holds "
                                f"no images with extensions {sorted(exts)}; add images or remove it")
        self.class_names = names
        self.class_iris = _resolve_iris(names, folders, class_iris)

        total = sum(len(f) for f in file_lists) * channels * size * size
        self.preloaded = (total <= memory_cap_mb * 2**20) if preload is None else bool(preload)
        self._files: list[list[Path]] = []
        self._data: list[torch.Tensor] | None = [] if self.preloaded else None
        for n, files in zip(names, file_lists):
            if self.preloaded:
                buf = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
                kept: list[Path] = []
                for f in files:
                    try:
                        buf[len(kept)] = self._decode(f)
                    except DataError as e:
                        if not skip_bad:
                            raise
                        warnings.warn(f"skipping {e}", stacklevel=2)
                        continue
                    kept.append(f)
                self._data.append(buf[:len(kept)].clone() if len(kept) < len(files) else buf)
            else:
                kept = []
                for f in files:
                    try:
                        self._check(f)
                    except DataError as e:
                        if not skip_bad:
                            raise
                        warnings.warn(f"skipping {e}", stacklevel=2)
                        continue
                    kept.append(f)
            if not kept:
                raise DataError(f"class {n!r}: every image was unreadable and skipped; "
                                f"fix the files or remove the folder")
            self._files.append(kept)

    def _decode(self, path: Path) -> torch.Tensor:
        return load_image_file(path, self.size, self.channels, max_pixels=self.max_pixels)

    def _check(self, path: Path) -> None:
        _check_header(path, self.max_pixels)

    def files(self, c: int) -> list[Path]:
        """Image paths of class ``c``, in index order."""
        return list(self._files[c])

    def count(self, c: int) -> int:
        return len(self._files[c])

    def load(self, c: int, idx: Sequence[int]) -> torch.Tensor:
        t = _check_idx(self, c, idx, len(self._files[c]))
        if self._data is not None:
            return self._data[c].index_select(0, t)  # [len(idx), C, H, W]
        out = torch.empty((t.numel(), self.channels, self.size, self.size), dtype=torch.uint8)
        files = self._files[c]
        for j, i in enumerate(t.tolist()):
            out[j] = self._decode(files[i])
        return out


# ----------------------------------------------------------------------------- DICOM
def _import_pydicom():
    try:
        import pydicom  # noqa: PLC0415 (optional extra, imported lazily)
    except ImportError:
        raise DataError("reading DICOM needs the optional pydicom package: "
                        "pip install kgmeta[dicom]") from None
    return pydicom


def dicom_to_uint8(ds: Any, window: str = "auto") -> np.ndarray:
    """pydicom Dataset -> uint8 [H, W] or [H, W, 3] (middle frame of a multi-frame file).

    Applies RescaleSlope/Intercept, then the file's first VOI window (WindowCenter/Width) when
    ``window="auto"`` and present, else min-max; MONOCHROME1 is inverted so bright = dense.
    """
    a = np.asarray(ds.pixel_array)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        a = a[a.shape[0] // 2]
    if a.ndim == 3 and a.shape[-1] == 3:
        if a.dtype == np.uint8:
            return a
        a = a.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        return np.clip(np.rint((a - lo) / max(hi - lo, 1e-12) * 255), 0, 255).astype(np.uint8)
    a = a.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1) or 1) \
        + float(getattr(ds, "RescaleIntercept", 0) or 0)
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if window == "auto" and center is not None and width is not None:
        def first(v: Any) -> float:  # a DICOM value or the first of a multi-value
            return float(v[0]) if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else float(v)

        c, w = first(center), max(first(width), 1.0)
        lo, hi = c - w / 2.0, c + w / 2.0
    else:
        lo, hi = float(a.min()), float(a.max())
    a = (np.clip(a, lo, hi) - lo) / max(hi - lo, 1e-12) * 255.0
    if photometric == "MONOCHROME1":
        a = 255.0 - a
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


class DicomFolderDataset(ImageFolderDataset):
    """Folder per class of DICOM files (needs ``pip install kgmeta[dicom]``).

    Pixels are rescaled to uint8 by :func:`dicom_to_uint8` (VOI window or min-max), then resized
    and unified to ``channels`` like :class:`ImageFolderDataset`, whose options it takes.
    """

    def __init__(self, roots: str | os.PathLike | Sequence[str | os.PathLike], *,
                 extensions: Sequence[str] = ("dcm", "dicom"), window: str = "auto",
                 **kw: Any) -> None:
        self._pydicom = _import_pydicom()
        if window not in ("auto", "minmax"):
            raise ValueError(f"window must be 'auto' or 'minmax', got {window!r}")
        self.window = window
        super().__init__(roots, extensions=extensions, **kw)

    def _decode(self, path: Path) -> torch.Tensor:
        try:
            ds = self._pydicom.dcmread(str(path))
            arr = dicom_to_uint8(ds, self.window)
        except DataError:
            raise
        except Exception as e:  # pydicom raises many types for damaged files
            raise DataError(f"{path}: cannot decode DICOM ({_one_line(e)}); replace the file "
                            f"or pass skip_bad=True") from None
        im = _pil_to_uint8(Image.fromarray(np.ascontiguousarray(arr)), self.channels)  # L or RGB
        if im.size != (self.size, self.size):
            im = im.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return _as_tensor(_to_channels(np.asarray(im), self.channels))

    def _check(self, path: Path) -> None:
        try:
            if path.stat().st_size == 0:
                raise DataError(f"{path}: empty file (0 bytes); delete it or pass skip_bad=True")
            self._pydicom.dcmread(str(path), stop_before_pixels=True)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{path}: not a readable DICOM file ({_one_line(e)}); replace the "
                            f"file or pass skip_bad=True") from None


# ----------------------------------------------------------------------------- MedMNIST npz
_NPZ_SPLITS = ("train", "val", "test")
_MAX_NPZ_CLASSES = 100_000


def _open_npz(p: Path) -> Any:
    """``np.load`` of an ``.npz`` archive; DataError naming the file for anything else."""
    try:
        check_regular_file(p, "an .npz archive", DataError)
        with open(p, "rb") as fh:
            head = fh.read(6)
    except FileNotFoundError:
        raise DataError(f"{p}: no such file; check the path (data.roots)") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a folder; data.kind 'npz' takes .npz files (use data.kind "
                        f"'folders' for image folders)") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({_one_line(e)}); check the path and its "
                        f"permissions") from None
    if not head:
        raise DataError(f"{p}: empty file (0 bytes); replace it with the .npz archive")
    if head == b"\x93NUMPY":
        raise DataError(f"{p}: a single .npy array, not an .npz archive; save the arrays with "
                        f"np.savez(path, train_images=..., train_labels=...)")
    if not head.startswith(b"PK"):
        raise DataError(f"{p}: not an .npz archive (not a zip file); save the arrays with "
                        f"np.savez(path, train_images=..., train_labels=...)")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as e:  # zipfile, zlib and numpy raise many types for damaged files
        raise DataError(f"{p}: cannot read as .npz ({_one_line(e)}); the file is damaged or "
                        f"truncated") from None


def _npz_nbytes(npz: Any, p: Path, key: str) -> int:
    """Bytes array ``key`` of an open npz decodes to, from its .npy header and without
    decompressing the data; DataError when the member holds fewer bytes than its header declares
    (damaged) or the header cannot be read."""
    name = getattr(npz, "_files", {}).get(key, key + ".npy")  # member name of array ``key``
    try:
        info = npz.zip.getinfo(name)
        with npz.zip.open(name) as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(fh)
            header = fh.tell()
    except Exception as e:  # zipfile, zlib and numpy raise many types for damaged headers
        raise DataError(f"{p}: cannot read the header of {key} ({_one_line(e)}); the file is "
                        f"damaged or truncated") from None
    nbytes = math.prod(shape) * dtype.itemsize
    if dtype.hasobject:
        return info.file_size - header  # refused when read, as a pickled object array
    if header + nbytes > info.file_size:
        raise DataError(f"{p}: {key} declares shape {tuple(shape)} ({format_bytes(nbytes)}) but "
                        f"holds {format_bytes(info.file_size - header)}; the file is damaged or "
                        f"truncated")
    return nbytes


def _npz_array(npz: Any, p: Path, key: str) -> np.ndarray:
    """One array of an open npz; DataError for object (pickled) or damaged members."""
    try:
        return npz[key]
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(f"{p}: {key} holds Python objects (a pickled object array), which "
                            f"kgmeta does not load; store it as a numeric array") from None
        raise DataError(f"{p}: cannot read {key} ({_one_line(e)}); the file is damaged") from None
    except Exception as e:  # zipfile.BadZipFile, zlib.error, EOFError, OSError ...
        raise DataError(f"{p}: cannot read {key} ({_one_line(e)}); the file is damaged or "
                        f"truncated") from None


class NpzDataset(ImageClassDataset):
    """A MedMNIST-style ``.npz``: ``<split>_images`` [N, H, W] or [N, H, W, 3], ``<split>_labels``
    [N] or [N, 1]. ``split="all"`` concatenates train, val and test (whichever exist).

    Images stay at their stored resolution unless ``size`` is given; ``channels`` defaults to the
    stored one. Multi-label files (ChestMNIST, labels [N, 14]) are refused by default because an
    image with several findings belongs to no single class of an N-way episode;
    ``multilabel="single"`` keeps images with exactly one positive label, ``"first"`` labels each
    image by its first positive label (images without a positive label are dropped in both).
    """

    def __init__(self, path: str | os.PathLike, *, split: str = "train", size: int | None = None,
                 channels: int | None = None, class_names: Sequence[str] | None = None,
                 class_iris: Mapping[str, str | None] | Sequence[str | None] | None = None,
                 multilabel: str = "refuse", name: str | None = None,
                 memory_cap_mb: int | None = 2048) -> None:
        p = Path(path)
        if split not in (*_NPZ_SPLITS, "all"):
            raise ValueError(f"{p}: split must be one of train, val, test, all; got {split!r}")
        if multilabel not in ("refuse", "single", "first"):
            raise ValueError(f"multilabel must be 'refuse', 'single' or 'first', got {multilabel!r}")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        npz = _open_npz(p)
        with npz:
            keys = set(npz.files)
            splits = [s for s in _NPZ_SPLITS if f"{s}_images" in keys] if split == "all" else [split]
            if not splits:
                raise DataError(f"{p}: no '<split>_images' arrays (keys: {sorted(keys)}); "
                                f"expected MedMNIST keys train_images/train_labels/...")
            for s in splits:
                for k in (f"{s}_images", f"{s}_labels"):
                    if k not in keys:
                        raise DataError(f"{p}: missing key {k!r} (keys: {sorted(keys)}); "
                                        f"pick another split or fix the file")
            # the sizes the arrays declare, checked before any is decompressed (a small
            # compressed file can inflate to gigabytes)
            need = sum(_npz_nbytes(npz, p, f"{s}_{kind}") for s in splits
                       for kind in ("images", "labels"))
            if memory_cap_mb is not None and need > memory_cap_mb * 2**20:
                raise DataError(f"{p}: the arrays of split {'+'.join(splits)} decode to "
                                f"{format_bytes(need)}, more than data.memory_cap_mb = "
                                f"{memory_cap_mb} MiB; raise data.memory_cap_mb if the machine "
                                f"has the memory, or use a smaller file")
            check_memory(2 * need, f"{p}: loading split {'+'.join(splits)}",
                         "use a smaller file or free memory", DataError)
            imgs, labs = [], []
            for s in splits:
                im, lab = _npz_array(npz, p, f"{s}_images"), _npz_array(npz, p, f"{s}_labels")
                if im.ndim == 0 or lab.ndim == 0:
                    k = f"{s}_images" if im.ndim == 0 else f"{s}_labels"
                    raise DataError(f"{p}: {k} is a single value, not an array with one entry "
                                    f"per image; fix the file")
                if len(im) != len(lab):
                    raise DataError(f"{p}: {s}_images has {len(im)} images but {s}_labels has "
                                    f"{len(lab)} rows; the file is inconsistent")
                if lab.ndim == 2 and lab.shape[1] == 1:
                    lab = lab[:, 0]  # [N, 1] (MedMNIST) -> [N]
                imgs.append(im)
                labs.append(lab)
        label_shapes = {a.shape[1:] for a in labs}
        if len(label_shapes) > 1:
            raise DataError(f"{p}: splits {', '.join(splits)} have labels of different shapes "
                            f"{sorted(label_shapes)} per image; load one split at a time "
                            f"(split='train', ...) or fix the file")
        shapes = {a.shape[1:] for a in imgs}
        if len(shapes) > 1:
            raise DataError(f"{p}: splits {', '.join(splits)} have different image shapes "
                            f"{sorted(shapes)}; load one split at a time (split='train', ...)")
        images = np.concatenate(imgs) if len(imgs) > 1 else imgs[0]
        labels = np.concatenate(labs) if len(labs) > 1 else labs[0]
        key = f"{splits[0]}_images"
        if images.shape[0] == 0:
            raise DataError(f"{p}: {'+'.join(f'{s}_images' for s in splits)} holds no images; "
                            f"pick another split or fix the file")
        if images.dtype.kind not in "biuf":
            raise DataError(f"{p}: {key} has dtype {images.dtype}; expected integer or float "
                            f"pixels (uint8, uint16 or float in [0, 1])")
        if images.dtype.kind == "f" and not np.isfinite(images).all():
            raise DataError(f"{p}: {key} holds NaN or infinite pixel values; fix the file")
        if labels.dtype.kind not in "biuf":
            raise DataError(f"{p}: {splits[0]}_labels has dtype {labels.dtype}; expected integer "
                            f"class indices 0..C-1 (pass class names separately)")
        if images.ndim == 3:
            images = images[:, None]  # [N, 1, H, W]
        elif images.ndim == 4 and images.shape[-1] in (1, 3):
            images = np.moveaxis(images, -1, 1)  # [N, C, H, W]
        else:
            raise DataError(f"{p}: {key} has shape {images.shape}; expected [N, H, W] or "
                            f"[N, H, W, 3] (3D MedMNIST volumes are not supported)")
        if images.shape[-1] != images.shape[-2] and size is None:
            raise DataError(f"{p}: images are {images.shape[-2]}x{images.shape[-1]}, not square; "
                            f"pass size= to resize them")
        images = self._to_uint8(images)

        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim == 2:
            if multilabel == "refuse":
                raise DataError(
                    f"{p}: {splits[0]}_labels has shape {labels.shape}: multi-label data (e.g. "
                    f"ChestMNIST) where one image can show several findings, so it has no single "
                    f"class for N-way episodes; pass multilabel='single' (keep images with exactly "
                    f"one positive label) or multilabel='first'")
            pos = labels > 0
            keep = pos.sum(1) == 1 if multilabel == "single" else pos.any(1)
            images, labels = images[keep], pos[keep].argmax(1)
        elif labels.ndim != 1:
            raise DataError(f"{p}: labels have shape {labels.shape}; expected [N] or [N, 1]")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            if not np.all(np.isfinite(labels)) or not np.all(np.equal(np.mod(labels, 1), 0)):
                raise DataError(f"{p}: labels are not integers (dtype {labels.dtype}); "
                                f"store class indices 0..C-1")
        labels = labels.astype(np.int64)
        if labels.size and labels.min() < 0:
            raise DataError(f"{p}: negative label {labels.min()}; labels are class indices 0..C-1")
        if class_names is None and labels.size and labels.max() >= _MAX_NPZ_CLASSES:
            raise DataError(f"{p}: label {labels.max()} would make {labels.max() + 1} classes; "
                            f"labels must be class indices 0..C-1 (C < {_MAX_NPZ_CLASSES})")
        n_cls = (int(labels.max()) + 1 if labels.size else 0) if class_names is None else len(class_names)
        if labels.size and labels.max() >= n_cls:
            raise DataError(f"{p}: label {labels.max()} but only {n_cls} class_names given; "
                            f"pass one name per class")
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(n_cls)]
        self.class_iris = _resolve_iris(self.class_names, self.class_names, class_iris)
        self.name = name or f"{p.stem}:{split}"
        self.path, self.split = p, split
        x = torch.from_numpy(np.ascontiguousarray(images))
        self.channels = channels or x.shape[1]
        self.size = size or x.shape[-1]
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(n_cls + 1))
        self._data = []
        for c in range(n_cls):
            xc = x[torch.from_numpy(order[bounds[c]:bounds[c + 1]])]
            xc = _convert_channels_batch(_resize_batch(xc, self.size), self.channels)
            self._data.append(xc.contiguous())
        self.source_index = [torch.from_numpy(order[bounds[c]:bounds[c + 1]]) for c in range(n_cls)]

    @staticmethod
    def _to_uint8(a: np.ndarray) -> np.ndarray:
        if a.dtype == np.uint8:
            return a
        if a.dtype == np.uint16:
            return np.rint(a / 257.0).astype(np.uint8)
        f = a.astype(np.float32)
        if f.size and f.min() >= 0 and f.max() <= 1:
            f = f * 255.0
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)

    def count(self, c: int) -> int:
        return int(self._data[c].shape[0])

    def load(self, c: int, idx: Sequence[int]) -> torch.Tensor:
        return self._data[c].index_select(0, _check_idx(self, c, idx, self._data[c].shape[0]))


# ----------------------------------------------------------------------------- views
class SubsetClasses(ImageClassDataset):
    """A view of some classes of a dataset (class ``i`` here is ``class_indices[i]`` there)."""

    def __init__(self, dataset: ImageClassDataset, class_indices: Sequence[int]) -> None:
        idx = [int(c) for c in class_indices]
        bad = [c for c in idx if not 0 <= c < len(dataset.class_names)]
        if bad:
            raise ValueError(f"class indices {bad} out of range for dataset {dataset.name!r} with "
                             f"{len(dataset.class_names)} classes")
        if len(set(idx)) != len(idx):
            raise ValueError(f"class indices {idx} repeat a class")
        self.base, self.class_indices = dataset, idx
        self.name = dataset.name
        self.class_names = [dataset.class_names[c] for c in idx]
        self.class_iris = [dataset.class_iris[c] for c in idx]
        self.channels, self.size = dataset.channels, dataset.size

    def count(self, c: int) -> int:
        return self.base.count(self.class_indices[c])

    def load(self, c: int, idx: Sequence[int]) -> torch.Tensor:
        return self.base.load(self.class_indices[c], idx)


def subset(dataset: ImageClassDataset, class_indices: Sequence[int]) -> SubsetClasses:
    """Restrict ``dataset`` to ``class_indices`` (in that order)."""
    return SubsetClasses(dataset, class_indices)


class ConcatClasses(ImageClassDataset):
    """The classes of several datasets side by side (same ``channels`` and ``size`` required).

    A class name that occurs in two datasets is prefixed ``"<dataset name>/"``.
    """

    def __init__(self, datasets: Sequence[ImageClassDataset], *, name: str | None = None) -> None:
        if not datasets:
            raise ValueError("ConcatClasses needs at least one dataset")
        geo = {(d.channels, d.size) for d in datasets}
        if len(geo) > 1:
            raise ValueError(f"cannot concatenate datasets with different (channels, size) "
                             f"{sorted(geo)}; load them with the same channels= and size=")
        self.datasets = list(datasets)
        self.name = name or "+".join(d.name for d in datasets)
        self.channels, self.size = datasets[0].channels, datasets[0].size
        all_names = [n for d in datasets for n in d.class_names]
        self.class_names, self.class_iris, self._where = [], [], []
        for di, d in enumerate(datasets):
            for c, n in enumerate(d.class_names):
                self.class_names.append(f"{d.name}/{n}" if all_names.count(n) > 1 else n)
                self.class_iris.append(d.class_iris[c])
                self._where.append((di, c))
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class names repeat after prefixing by dataset name "
                             f"({self.class_names}); give the datasets distinct names")

    def count(self, c: int) -> int:
        di, k = self._where[c]
        return self.datasets[di].count(k)

    def load(self, c: int, idx: Sequence[int]) -> torch.Tensor:
        di, k = self._where[c]
        return self.datasets[di].load(k, idx)


# ----------------------------------------------------------------------------- duplicates
@dataclass(frozen=True)
class ImageRef:
    split: str
    class_name: str
    class_index: int   # in the split's dataset
    index: int         # image index within the class


@dataclass(frozen=True)
class DuplicatePair:
    a: ImageRef
    b: ImageRef
    distance: int      # Hamming distance of the 64-bit perceptual hashes (0..64)
    exact: bool        # identical pixels (sha1)


@dataclass
class DuplicateReport:
    pairs: list[DuplicatePair]
    n_images: dict[str, int]
    max_distance: int
    pairs_truncated: bool = False

    @property
    def exact(self) -> list[DuplicatePair]:
        return [p for p in self.pairs if p.exact]

    @property
    def near(self) -> list[DuplicatePair]:
        return [p for p in self.pairs if not p.exact]

    def __len__(self) -> int:
        return len(self.pairs)

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def summary(self) -> str:
        imgs = ", ".join(f"{k}: {v}" for k, v in self.n_images.items())
        return (f"{len(self.exact)} exact and {len(self.near)} near-duplicate pairs across splits "
                f"(pHash Hamming <= {self.max_distance}; images {imgs})"
                + (" [pair list truncated]" if self.pairs_truncated else ""))

    def to_dict(self) -> dict[str, Any]:
        def ref(r: ImageRef) -> list[Any]:
            return [r.split, r.class_name, r.class_index, r.index]
        return {"max_distance": self.max_distance, "n_images": dict(self.n_images),
                "pairs_truncated": self.pairs_truncated,
                "pairs": [{"a": ref(p.a), "b": ref(p.b), "distance": p.distance, "exact": p.exact}
                          for p in self.pairs]}


def _dct_matrix(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    m = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * (2.0 / n) ** 0.5
    m[0] /= 2 ** 0.5
    return m.float()  # orthonormal DCT-II, [n, n]


_DCT32 = _dct_matrix(32)
_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))


def phash(images: torch.Tensor) -> np.ndarray:
    """64-bit DCT perceptual hashes of uint8 ``[N, C, H, W]`` images -> uint64 ``[N]``.

    Grayscale (luma), 32x32 antialiased resize, 2-D DCT-II, the 8x8 lowest frequencies (DC
    included) compared with their median: the pHash of Zauner (2010) / ``imagehash.phash``.
    """
    x = images.float()
    if x.shape[1] == 3:
        x = (x * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] != 1:
        x = x.mean(1, keepdim=True)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)[:, 0]
    coef = (_DCT32 @ x @ _DCT32.T)[:, :8, :8].reshape(-1, 64)  # [N, 64]
    bits = (coef > coef.median(dim=1, keepdim=True).values).numpy()
    return (bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


if hasattr(np, "bitwise_count"):
    def _popcount(x: np.ndarray) -> np.ndarray:
        return np.bitwise_count(x)
else:  # numpy < 2.0
    _POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def _popcount(x: np.ndarray) -> np.ndarray:
        return _POP8[x[..., None].view(np.uint8)].sum(-1, dtype=np.uint8)


def find_duplicates(splits: Mapping[str, tuple[ImageClassDataset, Sequence[int] | None]], *,
                    max_distance: int = 4, batch: int = 512, max_pairs: int = 100_000,
                    progress: Callable[[str], None] | None = None) -> DuplicateReport:
    """Images shared by two splits: exact (sha1 of the uint8 pixels) or near (pHash Hamming
    distance <= ``max_distance``; -1 checks exact copies only).

    ``splits`` maps a split name to ``(dataset, class_indices or None for all classes)``; the
    datasets may be the same object (class splits of one dataset) or different ones (image splits
    of a MedMNIST file). Pairs are compared across splits only, all against all, in blocks of
    at most 4M pairs with a vectorised popcount (about 36 MB of scratch memory). At most
    ``max_pairs`` pairs are listed (``pairs_truncated`` says when more matched).
    """
    names = list(splits)
    refs: dict[str, list[ImageRef]] = {}
    hashes: dict[str, np.ndarray] = {}
    shas: dict[str, list[bytes]] = {}
    for s in names:
        ds, cls = splits[s]
        cls = list(range(len(ds.class_names))) if cls is None else [int(c) for c in cls]
        r, h, sh = [], [], []
        for c in cls:
            n = ds.count(c)
            for start in range(0, n, batch):
                x = ds.load(c, range(start, min(n, start + batch)))  # [b, C, H, W] uint8
                h.append(phash(x))
                xn = x.numpy()
                sh.extend(hashlib.sha1(xn[i].tobytes()).digest() for i in range(len(xn)))
                r.extend(ImageRef(s, ds.class_names[c], c, i) for i in range(start, start + len(x)))
        refs[s], shas[s] = r, sh
        hashes[s] = np.concatenate(h) if h else np.zeros(0, np.uint64)
        if progress:
            progress(f"hashed {len(r)} images of split {s!r}")

    pairs: list[DuplicatePair] = []
    truncated = False
    for ai, sa in enumerate(names):
        for sb in names[ai + 1:]:
            ha, hb = hashes[sa], hashes[sb]
            found: dict[tuple[int, int], int] = {}
            if max_distance >= 0 and len(ha) and len(hb):
                rows = max(1, min(batch, 4_000_000 // len(hb)))  # <= 32 MB of xor per block
                for start in range(0, len(ha), rows):
                    d = _popcount(ha[start:start + rows, None] ^ hb[None, :])  # [rows, nb]
                    ia, ib = np.nonzero(d <= max_distance)
                    for i, j in zip(ia.tolist(), ib.tolist()):
                        found[(start + i, j)] = int(d[i, j])
            index_b: dict[bytes, list[int]] = {}
            for j, dig in enumerate(shas[sb]):
                index_b.setdefault(dig, []).append(j)
            exact = set()
            for i, dig in enumerate(shas[sa]):
                for j in index_b.get(dig, ()):
                    exact.add((i, j))
                    found.setdefault((i, j), 0)
            for (i, j), d in sorted(found.items(), key=lambda kv: (kv[1], kv[0])):
                if len(pairs) >= max_pairs:
                    truncated = True
                    break
                pairs.append(DuplicatePair(refs[sa][i], refs[sb][j], d, (i, j) in exact))
    return DuplicateReport(pairs, {s: len(refs[s]) for s in names}, max_distance, truncated)


__all__ = [
    "IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS", "ImageClassDataset", "ImageFolderDataset", "image_files",
    "DicomFolderDataset", "NpzDataset", "SubsetClasses", "ConcatClasses", "subset",
    "load_image_file", "dicom_to_uint8", "phash", "find_duplicates", "DuplicateReport",
    "DuplicatePair", "ImageRef",
]
