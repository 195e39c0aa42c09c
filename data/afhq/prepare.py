"""Prepare AFHQ (Animal Faces-HQ; classes cat, dog, wild) in the homework's layout.

    python data/afhq/prepare.py                                  # download, or find an attached copy
    python data/afhq/prepare.py --source /kaggle/input/animal-faces --classes cat
    python data/afhq/prepare.py --source afhq.zip --image_size 64

AFHQ (StarGAN v2, Choi et al. 2020; CC BY-NC 4.0) holds about 15,000 animal faces as 512x512 JPEGs,
about 5,000 per class; the download's progress bar shows its size. Decoding that many large JPEGs every epoch would starve a GPU on Colab's two
CPU cores, so this script downsamples them once:

    <out>/train/<class>/<name>.png      image_size x image_size RGB, resized and centre-cropped

and builds the uint8 cache the trainer reads (training_data.load_image_folder), so the first training run
starts at once. Train with

    python main.py --data_path data/afhq/train --data_class cat

Where the images come from, in this order:
  1. --source: a folder or a zip in AFHQ's layout (afhq/train/cat/*.jpg ...; any level of the path
     may be the one given, e.g. the Kaggle copy /kaggle/input/animal-faces or its afhq/ folder);
  2. a previous download, <out>/raw/afhq.zip;
  3. an attached Kaggle dataset holding afhq/train/<class>/ under /kaggle/input;
  4. the official download (StarGAN v2's Dropbox link), kept in <out>/raw/afhq.zip.
Only the train split is used.
If the download fails (the link has been disabled at times): on Kaggle attach the dataset
"animal-faces" (andrewmvd/animal-faces); elsewhere, e.g. on Colab, download that dataset's zip
(or afhq.zip) in a browser, upload it (or put it on Google Drive) and pass --source PATH.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))
import training_data  # noqa: E402
import utils  # noqa: E402  (the repository's utils.py)
from utils import CommandLineParser, UserError  # noqa: E402

CLASSES = ("cat", "dog", "wild")
# AFHQ v1 as linked from StarGAN v2's download.sh (github.com/clovaai/stargan-v2); dl=1 asks
# Dropbox for the file itself rather than its preview page.
AFHQ_URL = "https://www.dropbox.com/s/t9l9o3vsx2jai3z/afhq.zip?dl=1"
KAGGLE_INPUT = Path("/kaggle/input")
MANIFEST = "prepared.json"


# ----------------------------------------------------------------------------- finding the images

# An image opener: returns a binary file object of one source image.
Opener = Callable[[], io.BufferedIOBase]


def _match(relpaths: list[str], classes: tuple[str, ...]) -> dict[str, list[str]]:
    """Group the paths of train images by class, wherever AFHQ's tree starts inside the source.

    Accepts `.../train/<class>/<file>` at any depth, or `<class>/<file>` at the top when the source
    is the train folder itself. Skips macOS's resource forks (`__MACOSX/`, `._name`) that zips made
    on a Mac carry next to every image.
    """
    names = "|".join(re.escape(c) for c in classes)
    suffixes = "|".join(re.escape(s) for s in training_data.IMAGE_EXTENSIONS)
    patterns = (
        re.compile(rf"(?:^|/)train/({names})/([^/]+)(?:{suffixes})$", re.IGNORECASE),
        re.compile(rf"^({names})/([^/]+)(?:{suffixes})$", re.IGNORECASE),
    )
    for pattern in patterns:
        found: dict[str, list[str]] = {}
        for path in relpaths:
            m = pattern.search(path)
            if m and "__MACOSX" not in path and not m.group(2).startswith("._"):
                found.setdefault(m.group(1).lower(), []).append(path)
        if found:
            return {c: sorted(paths) for c, paths in found.items()}
    return {}


def _list_zip(path: Path, classes: tuple[str, ...], given: bool) -> dict[str, list[tuple[str, Opener]]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        if given:  # the user's own file: never suggest deleting it
            raise UserError(f"--source {path} is not a readable zip file ({err}): pass AFHQ's zip (afhq.zip) or "
                            "the folder it unpacks to") from None
        raise UserError(f"{path} is not a readable zip file ({err}); delete it and run again, "
                        "or pass --source with a good copy") from None
    groups = _match(archive.namelist(), classes)
    return {c: [(Path(p).stem, lambda p=p: archive.open(p)) for p in paths] for c, paths in groups.items()}


def _list_folder(path: Path, classes: tuple[str, ...]) -> dict[str, list[tuple[str, Opener]]]:
    relpaths = [
        (Path(root) / name).relative_to(path).as_posix()
        for root, _dirs, files in os.walk(path, followlinks=True)
        for name in files
    ]
    groups = _match(relpaths, classes)
    return {c: [(Path(p).stem, lambda p=p: open(path / p, "rb")) for p in paths] for c, paths in groups.items()}


def list_images(source: Path, classes: tuple[str, ...], given: bool = True) -> dict[str, list[tuple[str, Opener]]]:
    """The train images of each requested class in `source` (a folder or a zip), as (name, opener).

    `given`: whether the user named `source` with --source (the error messages then say so).
    """
    where = f"--source {source}" if given else str(source)
    if not source.exists():
        raise UserError(f"{where}: no such file or folder")
    groups = _list_folder(source, classes) if source.is_dir() else _list_zip(source, classes, given)
    missing = [c for c in classes if not groups.get(c)]
    if missing:
        raise UserError(
            f"{where}: found no images for {', '.join(missing)}; expected AFHQ's layout "
            f"afhq/train/<class>/*.jpg with <class> in {', '.join(CLASSES)}"
        )
    return groups


def find_kaggle_copy(max_depth: int = 4) -> Path | None:
    """An attached dataset under /kaggle/input that holds afhq's train/cat/ (e.g. andrewmvd/animal-faces)."""
    root = KAGGLE_INPUT
    if not root.is_dir():
        return None
    for dirpath, dirnames, _files in os.walk(root):
        here = Path(dirpath)
        if (here / "train" / "cat").is_dir():
            return here
        if len(here.relative_to(root).parts) >= max_depth:
            dirnames.clear()  # do not walk into the images themselves
        dirnames[:] = sorted(d for d in dirnames if d != "__MACOSX" and not d.startswith("."))
    return None


def download(url: str, raw_dir: Path) -> Path:
    """Download the AFHQ zip into raw_dir/afhq.zip; the file appears only once it is complete."""
    from torchvision.datasets.utils import download_url  # imported here: only downloads need it

    target = raw_dir / "afhq.zip"
    partial = raw_dir / "afhq.zip.part"
    partial.unlink(missing_ok=True)  # a leftover of an interrupted download is not a zip
    print(f"downloading AFHQ from {url} (about 15,000 images of 512x512; once) ...")
    try:
        download_url(url, str(raw_dir), filename=partial.name)
    except Exception as err:  # noqa: BLE001 urllib raises URLError, HTTPError, OSError, socket timeouts ...
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise UserError(
            f"could not download AFHQ from {url} ({reason}); use another copy: on Kaggle attach the dataset "
            "'animal-faces' (Add Input); elsewhere (Colab too) download that dataset's zip in a browser, upload "
            "it and pass --source PATH (a zip or folder in AFHQ's layout, afhq/train/cat/*.jpg)"
        ) from None
    if not zipfile.is_zipfile(partial):
        partial.unlink(missing_ok=True)
        raise UserError(
            f"the download from {url} is not a zip (the host may have sent a web page, e.g. a disabled link); "
            "download afhq.zip or Kaggle's 'animal-faces' zip in a browser and pass --source PATH"
        )
    os.replace(partial, target)
    return target


def resolve_source(source: Path | None, out: Path, url: str) -> Path:
    """Where to read AFHQ from: --source, an earlier download, a Kaggle input, or a new download."""
    if source is not None:
        return source
    earlier = out / "raw" / "afhq.zip"
    if earlier.is_file():
        print(f"using the earlier download {earlier}")
        return earlier
    attached = find_kaggle_copy()
    if attached is not None:
        print(f"using the attached copy {attached}")
        return attached
    return download(url, out / "raw")


# ----------------------------------------------------------------------------- converting


def downsample(fp: io.BufferedIOBase, image_size: int) -> Image.Image:
    """Decode one image and resize it (shorter side) and centre-crop it to image_size x image_size."""
    with Image.open(fp) as img:
        # For JPEGs, let the decoder scale down by up to 8x on the fly (DCT scaling): AFHQ's
        # 512x512 images then decode several times faster, and still at least image_size wide.
        img.draft("RGB", (image_size, image_size))
        return ImageOps.fit(img.convert("RGB"), (image_size, image_size), Image.Resampling.LANCZOS)


def convert_class(items: list[tuple[str, Opener]], folder: Path, image_size: int, name: str) -> int:
    """Write every readable image of one class into `folder` as PNG; returns how many were written."""
    folder.mkdir(parents=True)  # parents: train/ itself on the first run
    bad: list[str] = []
    for stem, opener in tqdm(items, desc=f"{name:>4}", unit="img"):
        try:
            with opener() as fp:
                small = downsample(fp, image_size)
        except (UnidentifiedImageError, OSError, ValueError, zipfile.BadZipFile):
            bad.append(stem)
            continue
        small.save(folder / f"{stem}.png")
    written = len(items) - len(bad)
    if bad:
        print(f"warning: skipped {len(bad)} unreadable {name} image(s): {', '.join(bad[:5])}"
              + (" ..." if len(bad) > 5 else ""))
    if written == 0:
        raise UserError(f"none of the {len(items)} {name} images could be read")
    return written


def build_cache(folder: Path, image_size: int) -> None:
    """Decode the folder once into the uint8 cache beside it, as the trainer would on first use."""
    training_data.load_image_folder(folder, image_size)


def prepare(source: Path | None, out: Path, classes: tuple[str, ...], image_size: int,
            url: str = AFHQ_URL, force: bool = False) -> dict[str, int]:
    """Write out/train/<class>/*.png for each class and build their caches; returns images per class.

    A class already prepared at this image size is kept unless `force`. Each class folder is written
    beside its final place and moved in when complete, so an interrupted run never leaves a
    half-written class where the trainer would read it.
    """
    if image_size < 1:
        raise UserError(f"--image_size must be at least 1, got {image_size}")
    train = out / "train"
    manifest_path = train / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    todo = [c for c in classes if force or manifest.get(c, {}).get("image_size") != image_size
            or not (train / c).is_dir()]
    counts = {c: manifest[c]["images"] for c in classes if c not in todo}
    for c in counts:
        print(f"{train / c}: already prepared at {image_size}x{image_size} (--force to redo)")

    if todo:
        groups = list_images(resolve_source(source, out, url), tuple(todo), given=source is not None)
        for c in todo:
            # Hidden, inside train/: the trainer never reads it, and git ignores it with train/.
            staging = train / f".{c}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            counts[c] = convert_class(groups[c], staging, image_size, c)
            shutil.rmtree(train / c, ignore_errors=True)
            os.replace(staging, train / c)
            manifest[c] = {"image_size": image_size, "images": counts[c]}
            manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    for c in classes:
        build_cache(train / c, image_size)
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(prog="data/afhq/prepare.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=None,
                        help="a folder or zip holding AFHQ (afhq/train/<class>/*.jpg); default: find or download it")
    parser.add_argument("--classes", nargs="+", choices=CLASSES, default=list(CLASSES),
                        help="classes to prepare (default: all three)")
    parser.add_argument("--image_size", type=int, default=32, help="side of the square images written (default 32)")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="where train/<class>/ and raw/ go (default: this script's folder, data/afhq)")
    parser.add_argument("--url", default=AFHQ_URL, help="where to download afhq.zip from")
    parser.add_argument("--force", action="store_true", help="redo classes that are already prepared")
    return parser


def main(argv: list[str] | None = None) -> None:
    """The command line; a UserError is reported by utils.run_command_line (one line, exit code 2)."""
    args = build_parser().parse_args(argv)
    counts = prepare(args.source, args.out, tuple(dict.fromkeys(args.classes)), args.image_size,
                     url=args.url, force=args.force)
    train = args.out / "train"
    print(f"done: {', '.join(f'{n} {c}' for c, n in counts.items())} images of "
          f"{args.image_size}x{args.image_size} in {train}/<class>/")
    print(f"train with: python main.py --data_path {train} --data_class {next(iter(counts))}")


if __name__ == "__main__":
    sys.exit(utils.run_command_line(main))
