"""Prepare CIFAR-10 in the homework's layout, one folder of PNG files per class.

    python data/cifar10/prepare.py                               # download (170 MB, once)
    python data/cifar10/prepare.py --classes cat dog
    python data/cifar10/prepare.py --classes airplane automobile bird   # Part 2's three classes
    python data/cifar10/prepare.py --source /kaggle/input/cifar10-python

CIFAR-10 (Krizhevsky 2009) holds 50,000 training images of 32x32 in ten classes (airplane,
automobile, bird, cat, deer, dog, frog, horse, ship, truck), 5,000 per class. torchvision reads the
official "python version" (cifar-10-batches-py/); this script writes

    <out>/train/<class>/<index>.png      the original 32x32 pixels, lossless

and builds the uint8 cache the trainer reads (training_data.load_image_folder) at --image_size. Train with

    python main.py --data_path data/cifar10/train --data_class cat
    python main.py --class_cond --data_path data/cifar10/train --classes airplane automobile bird

--source may be a folder that holds cifar-10-batches-py/ (a read-only Kaggle input is fine), that
folder itself, or the archive cifar-10-python.tar.gz. Without --source the data is downloaded into
<out>/raw/ (or read from there if an earlier run downloaded it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))
import training_data  # noqa: E402
import utils  # noqa: E402  (the repository's utils.py)
from utils import CommandLineParser, UserError  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCHES = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
MANIFEST = "prepared.json"


def find_root(source: Path) -> Path:
    """The folder torchvision's CIFAR10 wants as `root`: the one that holds cifar-10-batches-py/."""
    if not source.exists():
        raise UserError(f"--source {source}: no such file or folder")
    if source.is_dir():
        if source.name == BATCHES:
            return source.parent
        candidates = sorted(source.glob(BATCHES)) + sorted(source.glob(f"*/{BATCHES}"))
        if candidates:
            return candidates[0].parent
        archives = sorted(source.glob(ARCHIVE)) + sorted(source.glob(f"*/{ARCHIVE}"))
        if not archives:
            raise UserError(f"--source {source}: holds neither {BATCHES}/ nor {ARCHIVE}")
        source = archives[0]
    return source  # an archive: unpacked by load()


def load(source: Path | None, raw: Path):
    """CIFAR-10's training set through torchvision, from `source` or downloaded into `raw`.

    Returns a torchvision.datasets.CIFAR10 whose `.data` is a [50000, 32, 32, 3] uint8 array (HWC)
    and `.targets` the class indices.
    """
    from torchvision.datasets import CIFAR10  # imported here so that --help stays instant
    from torchvision.datasets.utils import extract_archive

    root, download = raw, True
    if source is not None:
        root, download = find_root(source), False
        if root.is_file():  # the tar.gz: unpack it into raw/ (a Kaggle input is read-only)
            print(f"unpacking {root} into {raw} ...")
            try:
                extract_archive(str(root), str(raw))
            except Exception as err:  # noqa: BLE001 tarfile.ReadError, EOFError, OSError ...
                raise UserError(f"--source {root}: could not unpack it ({err})") from None
            root = raw
    try:
        return CIFAR10(root=str(root), train=True, download=download)
    except RuntimeError:  # torchvision's "Dataset not found or corrupted" (its advice, download=True, is not ours)
        if source is not None:
            raise UserError(f"--source {source}: {root / BATCHES} is incomplete or corrupted (a file is missing or "
                            f"its checksum is wrong): pass a good copy of {BATCHES}/ or {ARCHIVE}") from None
        raise UserError(f"the earlier download in {root / BATCHES} is incomplete or corrupted: delete {root} and run "
                        "again, or pass --source with a good copy") from None
    except Exception as err:  # noqa: BLE001 urllib's URLError, HTTPError, OSError, socket timeouts ...
        reason = getattr(err, "reason", None) or err
        raise UserError(f"could not download CIFAR-10 ({reason}); without internet, pass --source "
                           f"PATH to a folder holding {BATCHES}/ or to {ARCHIVE}") from None


def prepare(source: Path | None, out: Path, classes: tuple[str, ...], image_size: int = 32,
            force: bool = False) -> dict[str, int]:
    """Write out/train/<class>/*.png for each class and build their caches; returns images per class.

    A class already written is kept unless `force`. Each class folder is written beside its final
    place and moved in when complete, so an interrupted run never leaves a half-written class where
    the trainer would read it.
    """
    if image_size < 1:
        raise UserError(f"--image_size must be at least 1, got {image_size}")
    train = out / "train"
    manifest_path = train / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    todo = [c for c in classes if force or c not in manifest or not (train / c).is_dir()]
    counts = {c: manifest[c]["images"] for c in classes if c not in todo}
    for c in counts:
        print(f"{train / c}: already prepared (--force to redo)")

    if todo:
        dataset = load(source, out / "raw")
        for c in todo:
            label = dataset.class_to_idx[c]
            indices = [i for i, y in enumerate(dataset.targets) if y == label]
            # Hidden, inside train/: the trainer never reads it, and git ignores it with train/.
            staging = train / f".{c}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for i in tqdm(indices, desc=f"{c:>10}", unit="img"):
                Image.fromarray(dataset.data[i]).save(staging / f"{i:05d}.png")
            shutil.rmtree(train / c, ignore_errors=True)
            os.replace(staging, train / c)
            counts[c] = len(indices)
            manifest[c] = {"images": counts[c]}
            manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    # The pixels stay 32x32 on disk; the cache holds them at the size the trainer will ask for.
    for c in classes:
        training_data.load_image_folder(train / c, image_size)
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(prog="data/cifar10/prepare.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=None,
                        help=f"a folder holding {BATCHES}/, that folder, or {ARCHIVE}; default: download")
    parser.add_argument("--classes", nargs="+", choices=CLASSES, default=list(CLASSES),
                        help="classes to write (default: all ten)")
    parser.add_argument("--image_size", type=int, default=32,
                        help="image size of the trainer's cache to build (default 32, CIFAR-10's own)")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="where train/<class>/ and raw/ go (default: this script's folder, data/cifar10)")
    parser.add_argument("--force", action="store_true", help="rewrite classes that are already written")
    return parser


def main(argv: list[str] | None = None) -> None:
    """The command line; a UserError is reported by utils.run_command_line (one line, exit code 2)."""
    args = build_parser().parse_args(argv)
    counts = prepare(args.source, args.out, tuple(dict.fromkeys(args.classes)), args.image_size, args.force)
    train = args.out / "train"
    print(f"done: {sum(counts.values())} images in {len(counts)} classes in {train}/<class>/")
    print(f"train with: python main.py --data_path {train} --data_class {next(iter(counts))}")
    if len(counts) > 1:  # Part 2: one model for all of them, one label per class folder
        print(f"or, class-conditional: python main.py --class_cond --data_path {train} --classes {' '.join(counts)}")


if __name__ == "__main__":
    sys.exit(utils.run_command_line(main))
