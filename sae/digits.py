"""Handwritten-digit images as SAE training data, for the MDL-SAE digits reproduction
([Ayonrinde2024] train on MNIST).

- :func:`load_digits_images`: scikit-learn's bundled 8x8 digits (1797 images, shipped with
  scikit-learn, so no download is ever needed), the embedded default.
- :func:`read_idx` / :func:`load_mnist`: the MNIST IDX files (``train-images-idx3-ubyte`` and
  friends, optionally gzipped) for users who have them on disk.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_digits_images", "load_mnist", "read_idx"]

# IDX type byte -> big-endian numpy dtype
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def load_digits_images(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits (UCI optical recognition of digits).

    Returns:
        ``images`` ``(1797, 64)`` in ``[0, 1]`` (pixel counts 0..16 divided by 16; row-major
        8x8) and ``labels`` ``(1797,)`` int64 digit classes.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.as_tensor(data.data / 16.0, dtype=dtype)
    labels = torch.as_tensor(data.target, dtype=torch.int64)
    return images, labels


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format; gzip-compressed when the name ends in ``.gz``).

    Layout: two zero bytes, a type byte (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
    ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), a byte with the number of
    dimensions, one big-endian uint32 per dimension, then the data, big-endian, row-major.

    Returns:
        The array in native byte order. ``ValueError`` naming the file when the header is
        not IDX or the data is truncated or has trailing bytes.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX data has {len(raw) - header} bytes, the header {shape} needs {expected}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def load_mnist(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MNIST images (and labels) from IDX files.

    Args:
        images_path: an ``(n, rows, cols)`` uint8 IDX file, e.g. ``train-images-idx3-ubyte``.
        labels_path: the matching ``(n,)`` labels file, or None.

    Returns:
        ``images`` ``(n, rows * cols)`` in ``[0, 1]`` (pixels / 255) and ``labels`` ``(n,)``
        int64 (None without ``labels_path``).
    """
    images = read_idx(images_path)
    if images.ndim != 3:
        raise ValueError(
            f"{images_path}: expected (n, rows, cols) images, got shape {images.shape}"
        )
    flat = torch.as_tensor(images.reshape(images.shape[0], -1).astype(np.float64) / 255.0)
    labels = None
    if labels_path is not None:
        lab = read_idx(labels_path)
        if lab.shape != (images.shape[0],):
            raise ValueError(
                f"{labels_path}: expected {images.shape[0]} labels, got shape {lab.shape}"
            )
        labels = torch.as_tensor(lab.astype(np.int64))
    return flat.to(dtype), labels
