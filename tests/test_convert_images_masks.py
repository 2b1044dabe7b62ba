"""``nnunetv2-mednext convert images-masks``: image + mask folders to nnU-Net's 2D natural-image raw format, checked
with nnU-Net's own reader and dataset check; every bad input stops with one line before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnunetv2_mednext.cli import main
from nnunetv2_mednext.conversion.images_masks import convert_images_masks, parse_label_map
from nnunetv2_mednext.errors import MedNeXtUserError


def _quiet(_msg: str) -> None:
    return None


def _pair(root: Path, stem: str, size=(40, 32), grey=False, img_ext=".jpg", mask_ext=".png", seed=0,
          mask_values=(0, 255)) -> tuple[np.ndarray, np.ndarray]:
    """An image with a bright disc and its mask; returns (image pixels as saved, label 0/1)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(w, h) / 4) ** 2
    base = rng.integers(20, 60, (h, w, 3)).astype(np.uint8)
    base[disc] = [200, 120, 90]
    img = base[..., 0] if grey else base
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(root / "images" / f"{stem}{img_ext}", quality=95)
    mask = np.where(disc, mask_values[1], mask_values[0]).astype(np.uint8)
    Image.fromarray(mask).save(root / "masks" / f"{stem}{mask_ext}")
    saved = np.asarray(Image.open(root / "images" / f"{stem}{img_ext}"))
    return saved, disc.astype(np.uint8)


def _nnunet_read(path: Path, seg: bool = False) -> np.ndarray:
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    io = NaturalImage2DIO()
    return (io.read_seg(str(path)) if seg else io.read_images([str(path)]))[0]


def test_rgb_jpeg_images_png_masks_through_nnunets_reader(tmp_path: Path):
    src = tmp_path / "src"
    pixels = {f"case{i:02d}": _pair(src, f"case{i:02d}", size=(40 + 4 * i, 32), seed=i) for i in range(8)}
    res = convert_images_masks(src, tmp_path / "raw", dataset_id=7, name="Polyps", labels=["polyp"], test_cases=2,
                               seed=3, write_splits=True, preprocessed=tmp_path / "pre", log=_quiet)
    folder = tmp_path / "raw" / "Dataset007_Polyps"
    assert res.folder == folder and len(res.train) == 6 and len(res.test) == 2
    again = convert_images_masks(src, tmp_path / "raw2", dataset_id=7, name="Polyps", test_cases=2, seed=3,
                                 log=_quiet)
    assert again.test == res.test  # the draw is seeded
    other = convert_images_masks(src, tmp_path / "raw3", dataset_id=7, name="Polyps", test_cases=2, seed=4,
                                 log=_quiet)
    assert other.test != res.test
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["file_ending"] == ".png"
    assert meta["labels"] == {"background": 0, "polyp": 1} and meta["numTraining"] == 6
    for case, (img, label) in pixels.items():
        tag = "Ts" if case in res.test else "Tr"
        arr = _nnunet_read(folder / f"images{tag}" / f"{case}_0000.png")
        assert arr.shape == (3, 1, *img.shape[:2])
        np.testing.assert_array_equal(arr[:, 0].transpose(1, 2, 0), img)  # decoded JPEG pixels, losslessly
        seg = _nnunet_read(folder / f"labels{tag}" / f"{case}.png", seg=True)
        np.testing.assert_array_equal(seg[0, 0], label)
    splits = json.loads((tmp_path / "pre" / "Dataset007_Polyps" / "splits_final.json").read_text())
    assert len(splits) == 5 and sorted(splits[0]["train"] + splits[0]["val"]) == sorted(res.train)
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(folder), num_processes=1)  # nnU-Net's own check raises on any problem


def test_grey_mixed_palette_and_jpeg_masks(tmp_path: Path):
    grey = tmp_path / "grey"
    for i in range(3):
        _pair(grey, f"g{i}", grey=True, img_ext=".png", mask_values=(0, 1), seed=i)
    res = convert_images_masks(grey, tmp_path / "raw", dataset_id=1, name="Grey", log=_quiet)
    assert json.loads((res.folder / "dataset.json").read_text())["channel_names"] == {"0": "L"}
    assert _nnunet_read(res.folder / "imagesTr" / "g0_0000.png").shape[0] == 1

    mixed = tmp_path / "mixed"
    _pair(mixed, "rgb", seed=1)
    _pair(mixed, "grey", grey=True, seed=2)
    notes: list[str] = []
    res = convert_images_masks(mixed, tmp_path / "raw", dataset_id=2, name="Mixed", log=notes.append)
    assert any("1 of 2 images are grey" in n and "written as RGB" in n for n in notes)
    arr = _nnunet_read(res.folder / "imagesTr" / "grey_0000.png")
    assert arr.shape[0] == 3 and (arr[0] == arr[1]).all() and (arr[1] == arr[2]).all()

    jpeg = tmp_path / "jpeg"
    truth = {s: _pair(jpeg, s, mask_ext=".jpg", seed=k)[1] for k, s in enumerate(("a", "b", "c"))}
    notes = []
    res = convert_images_masks(jpeg, tmp_path / "raw", dataset_id=3, name="Jpeg", log=notes.append)
    assert any("3 lossy JPEG mask(s) thresholded at > 127" in n for n in notes)
    for s, label in truth.items():  # a 0/255 disc survives JPEG and the threshold nearly everywhere
        seg = _nnunet_read(res.folder / "labelsTr" / f"{s}.png", seg=True)[0, 0]
        assert (seg != label).mean() < 0.01

    pal = tmp_path / "palette"
    for s in ("p0", "p1"):
        _pair(pal, s, seed=5)
        m = Image.open(pal / "masks" / f"{s}.png").point(lambda v: 2 if v else 0).convert("P")
        lab = np.asarray(m).copy()
        lab[:3, :3] = 1  # a second class in the corner
        p = Image.fromarray(lab, mode="P")
        p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
        p.save(pal / "masks" / f"{s}.png")
    res = convert_images_masks(pal, tmp_path / "raw", dataset_id=4, name="Pal", log=_quiet)
    assert json.loads((res.folder / "dataset.json").read_text())["labels"] == {
        "background": 0, "class_1": 1, "class_2": 2}
    assert set(np.unique(_nnunet_read(res.folder / "labelsTr" / "p0.png", seg=True)).tolist()) == {0, 1, 2}


def test_colour_coded_masks_need_a_label_map(tmp_path: Path):
    src = tmp_path / "src"
    for s in ("x", "y"):
        _, label = _pair(src, s)
        rgb = np.zeros((*label.shape, 3), np.uint8)
        rgb[label == 1] = [255, 0, 0]
        rgb[:2, :2] = [0, 0, 255]
        Image.fromarray(rgb).save(src / "masks" / f"{s}.png")
    with pytest.raises(MedNeXtUserError, match=r"colour-coded mask .* fix: pass --label-map"):
        convert_images_masks(src, tmp_path / "raw", log=_quiet)
    lmap = parse_label_map('{"background": [0, 0, 0], "polyp": [255, 0, 0], "tool": [0, 0, 255]}')
    res = convert_images_masks(src, tmp_path / "raw", label_map=lmap, log=_quiet)
    assert json.loads((res.folder / "dataset.json").read_text())["labels"] == {"background": 0, "polyp": 1, "tool": 2}
    seg = _nnunet_read(res.folder / "labelsTr" / "x.png", seg=True)[0, 0]
    assert seg[0, 0] == 2 and seg[16, 20] == 1 and seg[31, 0] == 0
    with pytest.raises(MedNeXtUserError, match=r"outside --label-map .*most common \[0, 0, 255\]"):
        convert_images_masks(src, tmp_path / "raw_b", label_map=parse_label_map(
            '{"background": [0, 0, 0], "polyp": [255, 0, 0]}'), log=_quiet)
    with pytest.raises(MedNeXtUserError, match="--label-map is not valid"):
        parse_label_map('{"background": "black"}')


def test_bad_input_stops_before_writing(tmp_path: Path):
    src = tmp_path / "src"
    for i in range(3):
        _pair(src, f"c{i}", seed=i)
    raw = tmp_path / "raw"

    def fails(match: str, **kw) -> None:
        with pytest.raises(MedNeXtUserError, match=match):
            convert_images_masks(kw.pop("src", src), raw, log=_quiet, **kw)
        assert not list(raw.glob("Dataset*")) if raw.exists() else True

    (src / "images" / "lonely.jpg").write_bytes((src / "images" / "c0.jpg").read_bytes())
    fails("1 image\\(s\\) without a mask .* first lonely.jpg; fix")
    (src / "images" / "lonely.jpg").unlink()
    (src / "masks" / "orphan.png").write_bytes((src / "masks" / "c0.png").read_bytes())
    fails("1 mask\\(s\\) without an image .* first orphan.png; fix")
    (src / "masks" / "orphan.png").unlink()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(src / "masks" / "c1.png")
    fails("c1: image c1.jpg is 40x32 px but its mask c1.png is 10x10; fix")
    Image.fromarray(np.full((32, 40), 77, np.uint8)).save(src / "masks" / "c1.png")
    fails("labels \\[0, 1, 77\\], not consecutive from 0 \\(label 77 first in c1.png\\)")
    Image.fromarray(np.full((32, 40), 300, np.uint16)).save(src / "masks" / "c1.png")
    fails("c1.png holds unexpected values \\[300\\]")
    _pair(src, "c1", seed=1)
    fails("--test-list names 1 case", test_list=_write(tmp_path / "t.txt", "c0.jpg\nnope\n"))
    fails("leaves fewer than 2", test_cases=2)
    fails("two images files share the name", src=_dup(tmp_path / "dup"))
    res = convert_images_masks(src, raw, test_list=_write(tmp_path / "t2.txt", "c2.jpg\n"), log=_quiet)
    assert res.test == ["c2"] and (res.folder / "labelsTs" / "c2.png").is_file()
    before = (res.folder / "dataset.json").read_text()
    with pytest.raises(MedNeXtUserError, match="already exists; fix: pass --overwrite"):
        convert_images_masks(src, raw, log=_quiet)
    assert (res.folder / "dataset.json").read_text() == before  # never overwritten without --overwrite
    convert_images_masks(src, raw, overwrite=True, log=_quiet)
    assert json.loads((res.folder / "dataset.json").read_text())["conversion"]["test"] == []
    inside = raw / "Dataset020_Inside" / "source"  # a source inside the dataset folder it would replace
    for i in range(3):
        _pair(inside, f"c{i}", seed=i)
    with pytest.raises(MedNeXtUserError, match="overlap"):
        convert_images_masks(inside, raw, dataset_id=20, name="Inside", overwrite=True, log=_quiet)
    assert (inside / "images" / "c0.jpg").is_file()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _dup(root: Path) -> Path:
    _pair(root, "a")
    _pair(root, "b")
    (root / "images" / "a.png").write_bytes((root / "masks" / "a.png").read_bytes())
    return root


def test_cli_one_line_errors_and_success(tmp_path: Path):
    src = tmp_path / "src"
    for i in range(3):
        _pair(src, f"c{i}", seed=i)
    assert main(["convert", "images-masks", str(src), "--out", str(tmp_path / "raw"), "--id", "12", "--name", "K",
                 "--labels", "polyp", "--test-cases", "1", "-q"]) == 0
    meta = json.loads((tmp_path / "raw" / "Dataset012_K" / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "polyp": 1} and len(meta["conversion"]["test"]) == 1
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "convert", "images-masks", str(src), "--out",
                           str(tmp_path / "raw"), "--id", "12", "--name", "K"], capture_output=True, text=True,
                          env=env, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "already exists; fix: pass --overwrite" in lines[0]
    assert main(["convert", "images-masks", "--out", str(tmp_path / "raw")]) == 2  # no source at all
