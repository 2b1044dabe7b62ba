"""Image reading (PNG/JPEG/TIFF/BMP/NIfTI/DICOM), dataset discovery and the fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnunetv2_mednext.classification.fingerprint import compute_fingerprint, describe, load_or_compute, warnings_for
from nnunetv2_mednext.classification.hashing import difference_hash, exact_hash, near_pairs, thumbnail
from nnunetv2_mednext.classification.index import discover, index_csv
from nnunetv2_mednext.classification.io import load_for_model, read_image, to_unit
from nnunetv2_mednext.classification.synthetic import make_shapes_dataset, shape_image
from nnunetv2_mednext.errors import MedNeXtUserError


def _gradient(h: int = 24, w: int = 32) -> np.ndarray:
    return (np.add.outer(np.arange(h) * 4, np.arange(w) * 3) % 256).astype(np.uint8)


def test_reads_every_supported_format(tmp_path: Path):
    import SimpleITK

    g = _gradient()
    rgb = np.stack([g, 255 - g, g // 2], axis=2)
    Image.fromarray(g).save(tmp_path / "grey.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full_like(g, 128)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(g).save(tmp_path / "grey.bmp")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    Image.fromarray(g.astype(np.uint16) * 200).save(tmp_path / "sixteen.png")  # 16-bit PNG
    Image.fromarray(g.astype(np.float32) / 7.0).save(tmp_path / "float.tif")
    ct = (g.astype(np.int16) * 8 - 1000)  # Hounsfield-like
    SimpleITK.WriteImage(SimpleITK.GetImageFromArray(ct), str(tmp_path / "slice.nii.gz"))
    SimpleITK.WriteImage(SimpleITK.GetImageFromArray(ct[None]), str(tmp_path / "slice1.nii"))  # 1 x H x W
    SimpleITK.WriteImage(SimpleITK.GetImageFromArray(ct.astype(np.uint16) + 1000), str(tmp_path / "slice.dcm"))

    shapes = {p.name: read_image(p).shape for p in sorted(tmp_path.iterdir())}
    assert shapes["grey.png"] == (24, 32, 1) and shapes["grey.bmp"] == (24, 32, 1)
    for name in ("rgb.png", "rgba.png", "palette.png", "rgb.jpg"):
        assert shapes[name] == (24, 32, 3), name
    for name in ("sixteen.png", "float.tif", "slice.nii.gz", "slice1.nii", "slice.dcm"):
        assert shapes[name] == (24, 32, 1), name
    assert np.array_equal(read_image(tmp_path / "grey.png")[:, :, 0], g)
    assert read_image(tmp_path / "sixteen.png").dtype == np.uint16
    # 8-bit keeps absolute intensities; other dtypes are rescaled per image into [0, 1]
    assert to_unit(read_image(tmp_path / "grey.png")).max() == pytest.approx(g.max() / 255)
    for name in ("sixteen.png", "float.tif", "slice.nii.gz", "slice.dcm"):
        u = to_unit(read_image(tmp_path / name))
        assert u.min() == 0.0 and u.max() == 1.0, name
    x = load_for_model(tmp_path / "slice.dcm", 16, 3)
    assert x.shape == (3, 16, 16) and x.dtype == np.uint8
    assert np.array_equal(x[0], x[2])  # grey replicated to 3 channels
    assert load_for_model(tmp_path / "rgb.jpg", 20, 1).shape == (1, 20, 20)


def test_unreadable_and_3d_images_raise_one_line_errors(tmp_path: Path):
    import SimpleITK

    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    buf = tmp_path / "ok.png"
    Image.fromarray(_gradient(64, 64)).save(buf)
    (tmp_path / "truncated.png").write_bytes(buf.read_bytes()[:60])
    SimpleITK.WriteImage(SimpleITK.GetImageFromArray(np.zeros((3, 8, 8), np.int16)), str(tmp_path / "vol.nii.gz"))
    for name, words in (("junk.png", "cannot read image"), ("truncated.png", "cannot read image"),
                        ("vol.nii.gz", "is 3D")):
        with pytest.raises(MedNeXtUserError) as e:
            read_image(tmp_path / name)
        assert words in str(e.value) and name in str(e.value) and "\n" not in str(e.value)


def test_folder_and_csv_discovery(tmp_path: Path):
    root = make_shapes_dataset(tmp_path / "data", n_per_class=3, size=16)
    (root / "circle" / "notes.txt").write_text("ignored")
    (root / "square" / "sub").mkdir()
    Image.fromarray(shape_image("square", 16, np.random.default_rng(1))).save(root / "square" / "sub" / "deep.png")
    idx = discover(root)
    assert idx.class_names == ["circle", "square", "stripes"]
    assert idx.class_counts() == {"circle": 3, "square": 4, "stripes": 3}
    assert "square/sub/deep.png" in idx.ids and idx.kind == "folder"

    csv = tmp_path / "labels.csv"
    lines = ["path,label,group"] + [f"data/{s.id},{s.label},p{i % 4}" for i, s in enumerate(idx.samples)]
    csv.write_text("\n".join(lines) + "\n")
    c = index_csv(csv)
    assert c.has_groups and len(c) == len(idx) and c.samples[0].group == "p0"
    assert c.class_names == idx.class_names
    # numeric labels sort numerically
    csv2 = tmp_path / "numeric.csv"
    csv2.write_text("path,label\n" + "\n".join(f"data/{s.id},{[2, 10][i % 2]}" for i, s in enumerate(idx.samples)))
    assert index_csv(csv2).class_names == ["2", "10"]


def test_hashes_find_exact_and_near_duplicates(tmp_path: Path):
    rng = np.random.default_rng(0)
    a = shape_image("circle", 64, rng)
    b = shape_image("square", 64, rng)
    assert exact_hash(a) == exact_hash(a.copy()) and exact_hash(a) != exact_hash(b)
    near = np.clip(a.astype(int) + rng.integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    ha, hn, hb = difference_hash(a[:, :, None]), difference_hash(near[:, :, None]), difference_hash(b[:, :, None])
    assert max(ha, hn, hb) < 2**256 and bin(ha ^ hn).count("1") <= 44 < bin(ha ^ hb).count("1")
    assert near_pairs([ha, hb, hn], threshold=44) == [(0, 2)]
    assert near_pairs([ha, hb, hn], threshold=-1) == []
    ta, tn, tb = (thumbnail(x[:, :, None]) for x in (a, near, b))
    assert near_pairs([ha, hb, hn], threshold=44, thumbs=[ta, tb, tn]) == [(0, 2)]  # a true near pair passes


def test_near_duplicates_need_correlated_thumbnails():
    """Two smooth images that rise left to right in every row have the same dHash (every bit 1), whatever else they
    show: a pure ramp and a ramp under strong horizontal bands. Their thumbnails do not correlate, so they are no
    near duplicates; a copy with a little noise is."""
    x = np.linspace(0, 1, 64)[None, :].repeat(64, 0)
    y = np.linspace(0, 1, 64)[:, None].repeat(64, 1)
    ramp = (x * 200).astype(np.uint8)
    banded = (x * 20 + (np.sin(y * 12) > 0) * 200).astype(np.uint8)
    h_ramp, h_banded = difference_hash(ramp[:, :, None]), difference_hash(banded[:, :, None])
    assert h_ramp == h_banded == 2**256 - 1
    thumbs = [thumbnail(ramp[:, :, None]), thumbnail(banded[:, :, None])]
    z = [np.frombuffer(__import__("base64").b64decode(t), np.uint8).astype(float) for t in thumbs]
    assert abs(np.corrcoef(z[0], z[1])[0, 1]) < 0.2
    assert near_pairs([h_ramp, h_banded], threshold=0) == [(0, 1)]  # the hash alone links them
    assert near_pairs([h_ramp, h_banded], threshold=0, thumbs=thumbs) == []
    flat = [thumbnail(np.full((8, 8, 1), v, np.uint8)) for v in (10, 10)]
    assert near_pairs([0, 0], threshold=0, thumbs=flat) == [(0, 1)]  # two flat images: r undefined, taken as 1


def test_fingerprint_reports_and_caches(tmp_path: Path):
    root = make_shapes_dataset(tmp_path / "data", n_per_class=4, size=24)
    src = root / "circle" / "circle_000.png"
    (root / "square" / "copy_of_circle.png").write_bytes(src.read_bytes())  # cross-class exact duplicate
    Image.fromarray(np.stack([shape_image("stripes", 24, np.random.default_rng(5))] * 3, 2)).save(
        root / "stripes" / "grey_as_rgb.png")
    idx = discover(root)
    fp = compute_fingerprint(idx, near_threshold=44)
    assert fp["n_images"] == 14 and fp["class_counts"] == {"circle": 4, "square": 5, "stripes": 5}
    assert fp["image_size"]["height"] == {"min": 24, "median": 24.0, "max": 24}
    assert fp["channels"] == {"grey": 13, "grey_stored_as_rgb": 1, "colour": 0} and fp["color_mode"] == "grey"
    assert fp["duplicates"]["exact_groups"] == [["circle/circle_000.png", "square/copy_of_circle.png"]]
    assert fp["duplicates"]["cross_class"][0]["labels"] == ["circle", "square"]
    assert 0 < fp["normalization"]["grey"]["mean"][0] < 1 and fp["normalization"]["grey"]["std"][0] > 0
    w = warnings_for(fp)
    assert any("circle/circle_000.png [circle] == square/copy_of_circle.png [square]" in x for x in w)
    assert any("14 images" in line for line in describe(fp))
    json.dumps(fp)  # JSON-able

    path = tmp_path / "fp.json"
    _, reused = load_or_compute(idx, path, 44)
    assert not reused and path.is_file()
    _, reused = load_or_compute(idx, path, 44)
    assert reused
    Image.fromarray(shape_image("circle", 24, np.random.default_rng(9))).save(root / "circle" / "new.png")
    _, reused = load_or_compute(discover(root), path, 44)
    assert not reused  # a new file invalidates the cached fingerprint
