"""Medical image reading that refuses incomplete files.

ITK (SimpleITK, hence nnU-Net's readers) fills the missing part of a truncated ``.nii.gz`` with zeros and reads on:
a copy cut to 80 % of its bytes loads as a volume with its last slices black. :func:`check_complete` reads a NIfTI
file's header, decompresses the whole gzip stream and requires the voxel data it announces; every reader of this
package goes through :func:`read_image`.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError

NIFTI_ENDINGS = (".nii.gz", ".nii")
_CHUNK = 1 << 22


def _nifti_expected_bytes(header: bytes) -> int | None:
    """Bytes a NIfTI-1/2 file must hold (header offset + voxel data), or ``None`` if the header is not NIfTI."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(f"{order}i", header[:4])[0] == 348:
            dims = struct.unpack(f"{order}8h", header[40:56])
            bitpix = struct.unpack(f"{order}h", header[72:74])[0]
            offset = max(int(struct.unpack(f"{order}f", header[108:112])[0]), 352)
            break
        if len(header) >= 540 and struct.unpack(f"{order}i", header[:4])[0] == 540:
            bitpix = struct.unpack(f"{order}h", header[14:16])[0]
            dims = struct.unpack(f"{order}8q", header[16:80])
            offset = max(struct.unpack(f"{order}q", header[168:176])[0], 544)
            break
    else:
        return None
    n = 1
    for d in dims[1 : max(1, min(int(dims[0]), 7)) + 1]:
        n *= max(int(d), 1)
    return offset + n * max(int(bitpix), 8) // 8


def check_complete(path: str | Path) -> None:
    """Raise :class:`MedNeXtUserError` when a NIfTI file is truncated or its gzip stream is corrupt.

    Other formats are left to their readers (PIL, for instance, refuses a truncated PNG on its own).
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(NIFTI_ENDINGS):
        return
    fix = "fix: re-copy or re-export it (an interrupted download or copy leaves a partial file)"
    try:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            header = fh.read(544)
            total = len(header)
            while chunk := fh.read(_CHUNK):
                total += len(chunk)
    except EOFError:
        raise MedNeXtUserError(f"{path} is truncated (its gzip stream ends early); {fix}") from None
    except (OSError, zlib.error) as e:
        raise MedNeXtUserError(f"{path} is not a readable NIfTI file ({e}); {fix}") from None
    expected = _nifti_expected_bytes(header)
    if expected is None:
        raise MedNeXtUserError(f"{path} has no NIfTI header; {fix}")
    if total < expected:
        raise MedNeXtUserError(
            f"{path} is truncated: its header announces {expected} bytes of header and voxels, the file holds "
            f"{total}; {fix}"
        )


def read_image(path: str | Path):  # type: ignore[no-untyped-def]
    """``SimpleITK.ReadImage`` after :func:`check_complete`; unreadable files raise one-line errors."""
    import SimpleITK as sitk

    check_complete(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise MedNeXtUserError(f"cannot read {path} as an image ({reason}); fix: check the file and its format") from None
