"""Reading 2D images (PNG/JPEG/TIFF/BMP through Pillow; NIfTI/DICOM/MHA/NRRD through SimpleITK).

Every reader returns a ``(H, W, C)`` array in the file's own dtype; :func:`to_unit` maps it to ``[0, 1]`` and
:func:`load_for_model` produces what the network sees (uint8, channels first, square ``size``). Unreadable files raise
:class:`~nnunetv2_mednext.errors.MedNeXtUserError` naming the file.
"""

from __future__ import annotations

import os

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ITK_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".mha", ".mhd", ".nrrd")
SUPPORTED_SUFFIXES = PIL_SUFFIXES + ITK_SUFFIXES


def image_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix, ``.nii.gz`` counted as one."""
    name = os.fspath(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def is_image_file(path: str | os.PathLike) -> bool:
    name = os.path.basename(os.fspath(path))
    return not name.startswith(".") and image_suffix(name) in SUPPORTED_SUFFIXES


def _unreadable(path: str, reason: str) -> MedNeXtUserError:
    reason = " ".join(str(reason).split()) or "unknown reason"
    return MedNeXtUserError(
        f"cannot read image {path!r} ({reason}); fix: replace or remove the file (or its CSV row)"
    )


def _read_pil(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.seek(0)  # first frame of multi-page TIFFs
            img.load()  # decode now: truncated files fail here, not later
            mode = img.mode
            if mode in ("1", "LA", "La"):
                img = img.convert("L")
            elif mode not in ("L", "RGB", "I", "I;16", "I;16B", "I;16L", "F"):
                img = img.convert("RGB")  # palette, RGBA, CMYK, YCbCr, ...
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise _unreadable(path, str(e) or type(e).__name__) from None
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _read_itk(path: str) -> np.ndarray:
    import SimpleITK

    from nnunetv2_mednext.image_io import check_complete

    check_complete(path)
    try:
        img = SimpleITK.ReadImage(path)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise _unreadable(path, first[-1] if first else "SimpleITK could not read it") from None
    arr = SimpleITK.GetArrayFromImage(img)
    vector = img.GetNumberOfComponentsPerPixel() > 1
    spatial = arr.ndim - (1 if vector else 0)
    if spatial == 3:
        if arr.shape[0] != 1:
            raise MedNeXtUserError(
                f"image {path!r} is 3D ({arr.shape[0]} slices); fix: the classifier takes 2D images, "
                "extract the slices first"
            )
        arr = arr[0]
    elif spatial != 2:
        raise MedNeXtUserError(f"image {path!r} has {spatial} spatial dimensions; fix: use 2D images")
    return arr


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` to ``(H, W, C)`` (C = 1 or 3) in the file's dtype."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MedNeXtUserError(f"image {path!r} does not exist; fix: check the path")
    suffix = image_suffix(path)
    if suffix in PIL_SUFFIXES:
        arr = _read_pil(path)
    elif suffix in ITK_SUFFIXES:
        arr = _read_itk(path)
    else:
        raise MedNeXtUserError(
            f"unsupported image type {suffix or '(none)'!r} for {path!r}; fix: use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise _unreadable(path, f"unexpected pixel array shape {tuple(arr.shape)}")
    if arr.shape[2] == 2:  # grey + alpha
        arr = arr[:, :, :1]
    elif arr.shape[2] == 4:  # RGBA
        arr = arr[:, :, :3]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if np.iscomplexobj(arr):
        raise _unreadable(path, "complex-valued pixels")
    return arr


def to_unit(arr: np.ndarray) -> np.ndarray:
    """Intensities in ``[0, 1]`` as float32.

    8-bit images keep their absolute intensities (``/255``). Any other dtype (16-bit PNG/TIFF, CT in Hounsfield
    units, float MRI) is rescaled per image between its 0.5 and 99.5 percentiles and clipped.
    """
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    a = arr.astype(np.float32)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, 0.0)
    lo, hi = np.percentile(a, (0.5, 99.5))
    if hi <= lo:
        hi = float(a.max())
        lo = float(a.min())
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def is_gray(arr: np.ndarray) -> bool:
    """One channel, or three identical channels (grey stored as RGB)."""
    if arr.shape[2] == 1:
        return True
    return bool(np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 0], arr[:, :, 2]))


def to_channels(unit: np.ndarray, channels: int) -> np.ndarray:
    """``(H, W, C)`` unit image to ``channels`` (1: mean of colour channels; 3: grey replicated)."""
    c = unit.shape[2]
    if channels == c:
        return unit
    if channels == 1:
        return unit.mean(axis=2, keepdims=True)
    if channels == 3 and c == 1:
        return np.repeat(unit, 3, axis=2)
    raise ValueError(f"cannot map {c} channels to {channels}")


def resize_uint8(unit: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, C)`` unit image -> ``(C, size, size)`` uint8 (antialiased bilinear, aspect ratio not kept)."""
    from PIL import Image

    u8 = np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)
    out = []
    for ch in range(u8.shape[2]):
        im = Image.fromarray(np.ascontiguousarray(u8[:, :, ch]))
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        out.append(np.asarray(im))
    return np.stack(out, axis=0)


def load_for_model(path: str | os.PathLike, size: int, channels: int) -> np.ndarray:
    """The network's view of an image file: ``(channels, size, size)`` uint8 (before normalisation)."""
    return resize_uint8(to_channels(to_unit(read_image(path)), channels), size)
