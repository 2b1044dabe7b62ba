"""``nnunetv2-mednext convert synapse|acdc|msd SRC``: public dataset layouts to nnU-Net's raw format with the papers' splits.

synapse: BTCV RawData (img/img0001.nii.gz + label/label0001.nii.gz, 13 organs) or TransUNet's copy
(train_npz/case0005_slice000.npz + test_vol_h5/case0001.npy.h5). Protocol ``transunet``: 18 training cases in
imagesTr, 12 test cases in imagesTs/labelsTs, 8 organs; ``cv5``: all 30 cases in imagesTr.

acdc: the challenge's patientXXX/ folders (Info.cfg, patientXXX_frameYY.nii.gz, _gt) or the SSL4MIS HDF5 copy
(data/patientXXX_frame01.h5, or _slice_K.h5 files). TransUNet 70/10/20 patient split: the 20 test patients go to
imagesTs/labelsTs; --write-splits writes one fold (train 70 / val 10 patients).

images-masks: SRC/images/ + SRC/masks/ (or --images DIR --masks DIR), the layout most 2D sets ship in (endoscopy,
dermoscopy, fundus, histology, ultrasound): pairs matched by stem, JPEG/PNG/TIFF/BMP images written as PNG for nnU-Net's
2D natural-image reader (RGB with channel names R, G, B; grey stays one channel), masks as 0/255, 0/1, palette or
colour-coded (--label-map); --test-cases N drawn with --seed, or --test-list FILE, go to imagesTs/labelsTs.

msd: a Medical Segmentation Decathlon style task folder (imagesTr/<case>.nii.gz, labelsTr/<case>.nii.gz,
single channel), e.g. Task04_Hippocampus; --max-cases keeps the first N cases (sorted) for quick runs.

The output is $nnUNet_raw/DatasetXXX_Name (or --out); an existing folder is kept unless --overwrite.
"""

from __future__ import annotations

import argparse

NAME = "convert"
HELP = ("convert Synapse/BTCV, ACDC, MSD-style or image + mask folders to nnU-Net's raw format (with the papers' "
        "splits)")
DESCRIPTION = __doc__
ORDER = 30


def _common(p: argparse.ArgumentParser, default_id: int, default_name: str) -> None:
    p.add_argument("src", help="folder with the source layout")
    _target(p, default_id, default_name)
    p.add_argument("--allow-missing", action="store_true", help="convert what is there even if protocol cases are missing")
    p.add_argument("--spacing", help="z,y,x spacing in mm for layouts without geometry (h5/npz), replacing the nominal one")
    _writing(p)


def _target(p: argparse.ArgumentParser, default_id: int, default_name: str) -> None:
    """Where the dataset goes (``convert msd`` and ``convert images-masks``)."""
    p.add_argument("--out", help="nnU-Net raw root to write into (default $nnUNet_raw)")
    p.add_argument("--id", type=int, default=default_id, help=f"dataset id (default {default_id})")
    p.add_argument("--name", default=default_name, help=f"dataset name (default {default_name})")


def _writing(p: argparse.ArgumentParser) -> None:
    """How it is written: overwriting, the 5-fold split file, output."""
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder / splits_final.json")
    p.add_argument("--write-splits", action="store_true", help="also write a deterministic 5-fold splits_final.json")
    p.add_argument("--preprocessed", help="nnU-Net preprocessed root for --write-splits (default $nnUNet_preprocessed)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final line")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    s = sub.add_parser("synapse", help="Synapse/BTCV multi-organ CT (TransUNet 18/12 protocol or 5-fold on 30)")
    _common(s, 801, "Synapse")
    s.add_argument("--protocol", choices=("transunet", "cv5"), default="transunet",
                   help="transunet: 18 train / 12 test (default); cv5: all 30 cases in imagesTr")
    s.add_argument("--organs", type=int, choices=(8, 13), default=8, help="8 (TransUNet) or 13 (all BTCV organs)")
    s.add_argument("--source-labels", choices=("auto", "btcv13", "transunet8"), default="auto",
                   help="label coding of the source (auto: btcv13 for NIfTI, transunet8 for npz/h5)")
    a = sub.add_parser("acdc", help="ACDC cine-MRI (TransUNet 70/10/20 patient split)")
    _common(a, 802, "ACDC")
    a.add_argument("--max-per-split", type=int, help="keep only the first N patients of train, val and test (smoke tests)")
    m = sub.add_parser("msd", help="MSD-style task folder (imagesTr/labelsTr without _0000), e.g. Task04_Hippocampus")
    m.add_argument("src", help="task folder with imagesTr/ and labelsTr/")
    _target(m, 4, "Hippocampus")
    m.add_argument("--labels", help="comma-separated foreground class names (default: the source dataset.json, else class_K)")
    m.add_argument("--max-cases", type=int, help="keep only the first N cases (sorted by name)")
    m.add_argument("--test-cases", type=int, default=0,
                   help="hold out the last N kept cases (by name) in imagesTs/labelsTs as a test set (default 0)")
    _writing(m)
    im = sub.add_parser("images-masks", help="image + mask folders (2D, RGB or grey; e.g. Kvasir-SEG, ISIC)")
    im.add_argument("src", nargs="?", help="folder with images/ and masks/ (or give --images and --masks)")
    im.add_argument("--images", help="folder of the images (default SRC/images)")
    im.add_argument("--masks", help="folder of the masks, same file names (default SRC/masks)")
    _target(im, 500, "ImagesMasks")
    im.add_argument("--labels", help="comma-separated foreground class names (default foreground, or class_K)")
    im.add_argument("--label-map", metavar="JSON",
                    help='name -> mask value (grey) or [R, G, B], first = background, e.g. \'{"background": [0, 0, 0], '
                         '"polyp": [255, 0, 0]}\' (or a JSON file)')
    im.add_argument("--channel-names", help="comma-separated nnU-Net channel names (default R,G,B or L; e.g. "
                                            "rgb_to_0_1,rgb_to_0_1,rgb_to_0_1 for nnU-Net's [0, 1] scaling)")
    im.add_argument("--test-cases", type=int, default=0,
                    help="hold out N cases, drawn with --seed, in imagesTs/labelsTs (default 0)")
    im.add_argument("--test-list", help="text file naming the test cases (file names or stems, one a line)")
    im.add_argument("--seed", type=int, default=0, help="seed of the --test-cases draw (default 0)")
    im.add_argument("--jpeg-threshold", type=int, default=127,
                    help="lossy JPEG masks: foreground where the grey value is above this (default 127)")
    _writing(im)

def run(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.conversion import convert_acdc, convert_msd, convert_synapse
    from nnunetv2_mednext.conversion.common import parse_spacing

    log = (lambda _msg: None) if args.quiet else print
    if args.dataset == "images-masks":
        from nnunetv2_mednext.conversion.images_masks import convert_images_masks, parse_label_map

        res = convert_images_masks(
            args.src, args.out, images=args.images, masks=args.masks, dataset_id=args.id, name=args.name,
            labels=[n.strip() for n in args.labels.split(",")] if args.labels else None,
            label_map=parse_label_map(args.label_map),
            channel_names=[n.strip() for n in args.channel_names.split(",")] if args.channel_names else None,
            test_cases=args.test_cases, test_list=args.test_list, seed=args.seed, jpeg_threshold=args.jpeg_threshold,
            write_splits=args.write_splits, preprocessed=args.preprocessed, overwrite=args.overwrite, log=log)
        print(f"{res.folder}: {len(res.train)} training, {len(res.test)} test cases"
              + (f"; splits in {res.splits_file}" if res.splits_file else ""))
        return 0
    if args.dataset == "msd":
        labels = [n.strip() for n in args.labels.split(",")] if args.labels else None
        res = convert_msd(args.src, args.out, dataset_id=args.id, name=args.name, labels=labels,
                          max_cases=args.max_cases, write_splits=args.write_splits, preprocessed=args.preprocessed,
                          overwrite=args.overwrite, log=log, test_cases=args.test_cases)
        print(f"{res.folder}: {len(res.train)} training, {len(res.test)} test cases"
              + (f"; splits in {res.splits_file}" if res.splits_file else ""))
        return 0
    common = dict(
        dataset_id=args.id, name=args.name, spacing=parse_spacing(args.spacing), write_splits=args.write_splits,
        preprocessed=args.preprocessed, overwrite=args.overwrite, allow_missing=args.allow_missing, log=log,
    )
    if args.dataset == "synapse":
        res = convert_synapse(args.src, args.out, organs=args.organs, protocol=args.protocol,
                              source_labels=args.source_labels, **common)
    else:
        res = convert_acdc(args.src, args.out, max_per_split=args.max_per_split, **common)
    if res.missing:
        print(f"warning: {len(res.missing)} protocol case(s) missing: {', '.join(res.missing)}")
    print(f"{res.folder}: {len(res.train)} training, {len(res.test)} test cases"
          + (f"; splits in {res.splits_file}" if res.splits_file else ""))
    return 0
