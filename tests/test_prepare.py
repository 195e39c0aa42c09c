"""data/afhq/prepare.py and data/cifar10/prepare.py on small inputs these tests make (no network).

AFHQ: a zip and a folder tree in AFHQ's layout (afhq/train/<class>/*.jpg), each image a known colour.
CIFAR-10: the cifar-10-batches-py folder in the real pickle format, read through torchvision with its
md5 checks pointed at the files made here. Downloads run torchvision's real code against files made
here, served over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import io
import pickle
import subprocess
import sys
import tarfile
import threading
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def load_script(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"prepare_{name}", REPO / "data" / name / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


afhq = load_script("afhq")
cifar = load_script("cifar10")


@pytest.fixture
def cache_calls(monkeypatch) -> list[tuple[Path, int]]:
    """Records the caches the scripts ask training_data.load_image_folder to build, instead of building them."""
    import training_data

    calls: list[tuple[Path, int]] = []
    monkeypatch.setattr(training_data, "load_image_folder", lambda folder, image_size: calls.append((Path(folder), image_size)))
    return calls


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A folder served over HTTP on 127.0.0.1: (folder, base URL). Downloads of it run offline."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("no_proxy", "NO_PROXY"):  # never send these requests to a proxy
        monkeypatch.setenv(name, "127.0.0.1")
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "data" / name / "prepare.py"), *args],
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- AFHQ

# Per class, the colours of its images; every image is one solid colour so that any resize keeps it.
AFHQ_COLOURS = {
    "cat": [(250, 10, 10), (10, 250, 10), (10, 10, 250)],
    "dog": [(200, 200, 20), (20, 200, 200)],
    "wild": [(120, 60, 180), (240, 240, 240)],
}


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def afhq_files() -> dict[str, bytes]:
    """AFHQ's zip layout, plus what the scripts must skip: the val split and macOS resource forks."""
    files = {
        f"afhq/train/{c}/flickr_{c}_{i:06d}.jpg": jpeg(colour)
        for c, colours in AFHQ_COLOURS.items()
        for i, colour in enumerate(colours)
    }
    files["afhq/val/cat/flickr_cat_999999.jpg"] = jpeg((0, 0, 0))
    files["__MACOSX/afhq/train/cat/._flickr_cat_000000.jpg"] = b"\x00\x05\x16\x07 resource fork"
    return files


def make_afhq_zip(path: Path, files: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in (afhq_files() if files is None else files).items():
            archive.writestr(name, data)
    return path


def make_afhq_tree(root: Path) -> Path:
    for name, data in afhq_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def assert_afhq_written(out: Path, classes, image_size: int) -> None:
    for c in classes:
        files = pngs(out / "train" / c)
        assert [f.name for f in files] == [f"flickr_{c}_{i:06d}.png" for i in range(len(AFHQ_COLOURS[c]))]
        for f, colour in zip(files, AFHQ_COLOURS[c]):
            with Image.open(f) as img:
                assert img.mode == "RGB" and img.size == (image_size, image_size)
                pixels = np.asarray(img).reshape(-1, 3).astype(int)
            # JPEG is lossy: the colour comes back within a few levels, and the same everywhere.
            assert np.abs(pixels - np.array(colour)).max() <= 8, f.name


def test_afhq_zip_is_downsampled_into_train_class_folders(tmp_path, cache_calls):
    source = make_afhq_zip(tmp_path / "afhq.zip")
    out = tmp_path / "out"
    afhq.main(["--source", str(source), "--out", str(out), "--image_size", "8"])

    assert_afhq_written(out, ("cat", "dog", "wild"), 8)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["cat", "dog", "prepared.json", "wild"]
    assert cache_calls == [(out / "train" / c, 8) for c in ("cat", "dog", "wild")]


@pytest.mark.parametrize("given", ["animal-faces", "animal-faces/afhq", "animal-faces/afhq/train"])
def test_afhq_folder_source_at_any_level_of_the_tree(tmp_path, cache_calls, given):
    # Kaggle's copy (andrewmvd/animal-faces) is attached as /kaggle/input/animal-faces/afhq/train/...
    make_afhq_tree(tmp_path / "animal-faces")
    out = tmp_path / "out"
    afhq.main(["--source", str(tmp_path / given), "--out", str(out), "--classes", "cat", "--image_size", "16"])

    assert_afhq_written(out, ("cat",), 16)
    assert not (out / "train" / "dog").exists()
    assert cache_calls == [(out / "train" / "cat", 16)]


def test_afhq_non_square_images_are_centre_cropped_not_squashed(tmp_path, cache_calls):
    # 64x32: blue, green in the middle half, blue. A centre crop keeps only the green.
    wide = np.zeros((32, 64, 3), np.uint8)
    wide[:, :, 2] = 255
    wide[:, 16:48] = (0, 255, 0)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    source = make_afhq_zip(tmp_path / "wide.zip", {"afhq/train/cat/wide.png": buffer.getvalue()})
    afhq.main(["--source", str(source), "--out", str(tmp_path / "out"), "--classes", "cat", "--image_size", "8"])

    pixels = np.asarray(Image.open(tmp_path / "out" / "train" / "cat" / "wide.png")).astype(int)
    # Green everywhere (the resampling filter lets a little blue ring in at the edges); squashed,
    # the left and right quarters would be blue.
    assert (pixels[..., 1] >= 200).all() and (pixels[..., 2] <= 40).all()


def test_afhq_unreadable_images_are_counted_and_named(tmp_path, cache_calls, capsys):
    files = afhq_files()
    files["afhq/train/cat/broken_cat.jpg"] = b"not an image"
    source = make_afhq_zip(tmp_path / "afhq.zip", files)
    afhq.main(["--source", str(source), "--out", str(tmp_path / "out"), "--classes", "cat"])

    assert "skipped 1 unreadable cat image(s): broken_cat" in capsys.readouterr().out
    assert len(pngs(tmp_path / "out" / "train" / "cat")) == len(AFHQ_COLOURS["cat"])


def test_afhq_prepared_classes_are_kept_unless_forced_or_resized(tmp_path, cache_calls):
    source = make_afhq_zip(tmp_path / "afhq.zip")
    out = tmp_path / "out"
    args = ["--source", str(source), "--out", str(out), "--classes", "cat"]
    afhq.main(args + ["--image_size", "8"])
    marker = out / "train" / "cat" / "extra.png"
    Image.new("RGB", (8, 8)).save(marker)

    afhq.main(args + ["--image_size", "8"])
    assert marker.exists()  # kept: nothing to redo
    afhq.main(args + ["--image_size", "8", "--force"])
    assert not marker.exists()
    afhq.main(args + ["--image_size", "4"])
    assert_afhq_written(out, ("cat",), 4)
    # Every run builds (or checks) the cache at its size, even when the images were kept.
    assert cache_calls == [(out / "train" / "cat", s) for s in (8, 8, 8, 4)]


def test_afhq_download_writes_raw_zip_and_reuses_it(tmp_path, cache_calls, monkeypatch, served):
    monkeypatch.setattr(afhq, "KAGGLE_INPUT", tmp_path / "no-kaggle")
    folder, base = served
    zip_path = make_afhq_zip(folder / "afhq.zip")
    out = tmp_path / "out"
    afhq.main(["--url", f"{base}/afhq.zip", "--out", str(out), "--classes", "dog", "--image_size", "8"])

    assert (out / "raw" / "afhq.zip").read_bytes() == zip_path.read_bytes()
    assert not (out / "raw" / "afhq.zip.part").exists()
    assert_afhq_written(out, ("dog",), 8)

    zip_path.unlink()  # a second run for another class must not download again
    afhq.main(["--url", f"{base}/afhq.zip", "--out", str(out), "--classes", "wild", "--image_size", "8"])
    assert_afhq_written(out, ("wild",), 8)


def test_afhq_attached_kaggle_copy_is_found_without_source(tmp_path, cache_calls, monkeypatch, served):
    kaggle_input = tmp_path / "kaggle" / "input"
    make_afhq_tree(kaggle_input / "animal-faces")
    monkeypatch.setattr(afhq, "KAGGLE_INPUT", kaggle_input)
    out = tmp_path / "out"
    afhq.main(["--url", f"{served[1]}/missing.zip", "--out", str(out), "--classes", "cat"])
    assert_afhq_written(out, ("cat",), 32)


def one_line_error(code: int, capsys) -> str:
    """The script's error message: exit code 2 and one line, the last on stderr (after any progress bar)."""
    assert code == 2
    err = capsys.readouterr().err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: ") and "Traceback" not in err, err
    return message


def test_afhq_failed_download_and_no_copy_is_one_line_error(tmp_path, cache_calls, monkeypatch, served, capsys):
    monkeypatch.setattr(afhq, "KAGGLE_INPUT", tmp_path / "no-kaggle")
    url = f"{served[1]}/missing.zip"
    code = afhq.utils.run_command_line(afhq.main, ["--url", url, "--out", str(tmp_path / "out")])
    message = one_line_error(code, capsys)
    assert f"could not download AFHQ from {url}" in message and "--source" in message
    assert list((tmp_path / "out" / "raw").iterdir()) == []
    assert not (tmp_path / "out" / "train").exists()


def test_afhq_download_that_is_not_a_zip_is_one_line_error(tmp_path, cache_calls, monkeypatch, served, capsys):
    monkeypatch.setattr(afhq, "KAGGLE_INPUT", tmp_path / "no-kaggle")
    folder, base = served
    (folder / "page.html").write_text("<html>please sign in</html>")
    code = afhq.utils.run_command_line(afhq.main, ["--url", f"{base}/page.html", "--out", str(tmp_path / "out")])
    assert "is not a zip" in one_line_error(code, capsys)
    assert list((tmp_path / "out" / "raw").iterdir()) == []


def test_afhq_source_without_afhq_layout_is_one_line_error(tmp_path, cache_calls, capsys):
    source = make_afhq_zip(tmp_path / "other.zip", {"photos/cat1.jpg": jpeg((1, 2, 3))})
    code = afhq.utils.run_command_line(afhq.main, ["--source", str(source), "--out", str(tmp_path / "out")])
    message = one_line_error(code, capsys)
    assert "found no images for cat, dog, wild" in message and str(source) in message


def test_afhq_source_that_is_not_a_zip_does_not_say_delete_it(tmp_path, cache_calls, capsys):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    code = afhq.utils.run_command_line(afhq.main, ["--source", str(junk), "--out", str(tmp_path / "out")])
    message = one_line_error(code, capsys)
    assert f"--source {junk} is not a readable zip file" in message and "delete" not in message
    assert junk.read_bytes() == b"not a zip at all"


def test_afhq_help_gives_the_size_and_a_fallback_source(capsys):
    with pytest.raises(SystemExit):
        afhq.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "15,000" in help_text and "512x512" in help_text
    assert "animal-faces" in help_text and "Colab" in help_text


@pytest.mark.slow
def test_afhq_missing_source_exits_without_traceback(tmp_path):
    missing = tmp_path / "nowhere" / "afhq.zip"
    result = run_script("afhq", "--source", str(missing), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --source {missing}: no such file or folder"
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- CIFAR-10

LABELS_PER_BATCH = [c for c in range(10) for _ in range(2)]  # two images of each class per batch


def cifar_image(batch: int, index: int, label: int) -> np.ndarray:
    """A [32, 32, 3] uint8 image (HWC) that names its batch, position and class in its pixels."""
    image = np.empty((32, 32, 3), np.uint8)
    image[..., 0] = 10 * batch + index       # red: where it came from
    image[..., 1] = 20 * label + 5           # green: its class
    image[..., 2] = np.arange(32)[:, None] * 8  # blue: a ramp down the rows, to catch flips and transposes
    return image


def make_cifar_batches(root: Path) -> Path:
    """cifar-10-batches-py/ as the official python version: pickled dicts, images as CHW rows."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for batch, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                  "data_batch_5", "test_batch"], start=1):
        images = [cifar_image(batch, i, y) for i, y in enumerate(LABELS_PER_BATCH)]
        entry = {
            "batch_label": f"{name} of 6",
            "labels": list(LABELS_PER_BATCH),
            "data": np.stack([im.transpose(2, 0, 1).reshape(-1) for im in images]),  # [N, 3072]: R, G, B planes
            "filenames": [f"{name}_{i}.png" for i in range(len(images))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {"label_names": list(cifar.CLASSES), "num_cases_per_batch": len(LABELS_PER_BATCH), "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def trust_batches(monkeypatch):
    """Point torchvision's md5 checks at the batch files a test made, so they still run and pass."""
    from torchvision.datasets import CIFAR10

    def trust(folder: Path) -> None:
        monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")]
                                                    for i in range(1, 6)])
        monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
        monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                              "md5": md5(folder / "batches.meta")})
    return trust


def assert_cifar_written(out: Path, classes) -> None:
    for c in classes:
        label = cifar.CLASSES.index(c)
        expected = {  # index in the 50,000 training images -> image
            (batch - 1) * len(LABELS_PER_BATCH) + i: cifar_image(batch, i, y)
            for batch in range(1, 6)
            for i, y in enumerate(LABELS_PER_BATCH) if y == label
        }
        files = pngs(out / "train" / c)
        assert [f.name for f in files] == [f"{i:05d}.png" for i in sorted(expected)]
        for f in files:
            with Image.open(f) as img:
                assert img.mode == "RGB"
                np.testing.assert_array_equal(np.asarray(img), expected[int(f.stem)], err_msg=f.name)


def test_cifar_batches_are_split_into_class_folders(tmp_path, cache_calls, trust_batches):
    trust_batches(make_cifar_batches(tmp_path / "input"))
    out = tmp_path / "out"
    cifar.main(["--source", str(tmp_path / "input"), "--out", str(out)])

    assert_cifar_written(out, cifar.CLASSES)
    assert cache_calls == [(out / "train" / c, 32) for c in cifar.CLASSES]
    assert not (out / "raw").exists()  # read in place: a Kaggle input is read-only


def test_cifar_archive_source_is_unpacked_and_classes_chosen(tmp_path, cache_calls, trust_batches):
    trust_batches(make_cifar_batches(tmp_path / "made"))
    archive = tmp_path / "input" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "made" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    out = tmp_path / "out"
    cifar.main(["--source", str(tmp_path / "input"), "--out", str(out), "--classes", "cat", "dog",
                "--image_size", "16"])

    assert_cifar_written(out, ("cat", "dog"))
    assert sorted(p.name for p in (out / "train").iterdir()) == ["cat", "dog", "prepared.json"]
    assert cache_calls == [(out / "train" / "cat", 16), (out / "train" / "dog", 16)]


def test_cifar_part2_classes_print_the_class_conditional_command(tmp_path, cache_calls, trust_batches, capsys):
    # Part 2's reference homework: airplane, automobile and bird, one folder each, all 10 images of each.
    trust_batches(make_cifar_batches(tmp_path / "input"))
    out = tmp_path / "out"
    cifar.main(["--source", str(tmp_path / "input"), "--out", str(out), "--classes", "airplane", "automobile", "bird"])

    assert_cifar_written(out, ("airplane", "automobile", "bird"))
    assert sorted(p.name for p in (out / "train").iterdir()) == ["airplane", "automobile", "bird", "prepared.json"]
    printed = capsys.readouterr().out
    assert "done: 30 images in 3 classes" in printed
    assert (f"python main.py --class_cond --data_path {out / 'train'} --classes airplane automobile bird"
            in printed)


def test_cifar_one_class_prints_only_the_unconditional_command(tmp_path, cache_calls, trust_batches, capsys):
    trust_batches(make_cifar_batches(tmp_path / "input"))
    out = tmp_path / "out"
    cifar.main(["--source", str(tmp_path / "input"), "--out", str(out), "--classes", "cat"])

    printed = capsys.readouterr().out
    assert f"train with: python main.py --data_path {out / 'train'} --data_class cat" in printed
    assert "--class_cond" not in printed


def test_cifar_download_through_torchvision(tmp_path, cache_calls, trust_batches, monkeypatch, served):
    from torchvision.datasets import CIFAR10

    trust_batches(make_cifar_batches(tmp_path / "made"))
    folder, base = served
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "made" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(CIFAR10, "url", f"{base}/cifar-10-python.tar.gz")
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(archive))
    out = tmp_path / "out"
    cifar.main(["--out", str(out), "--classes", "truck"])

    assert (out / "raw" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert_cifar_written(out, ("truck",))


def test_cifar_corrupted_batches_are_one_line_error(tmp_path, cache_calls, capsys):
    make_cifar_batches(tmp_path / "input")  # torchvision's real md5 sums do not match these files
    code = cifar.utils.run_command_line(cifar.main, ["--source", str(tmp_path / "input"), "--out", str(tmp_path / "out")])
    message = one_line_error(code, capsys)
    assert "corrupted" in message
    assert "download=True" not in message and "--source" in message  # our advice, not torchvision's


def test_cifar_failed_download_is_one_line_error(tmp_path, cache_calls, monkeypatch, served, capsys):
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", f"{served[1]}/missing.tar.gz")
    code = cifar.utils.run_command_line(cifar.main, ["--out", str(tmp_path / "out")])
    message = one_line_error(code, capsys)
    assert "could not download CIFAR-10" in message and "--source" in message


@pytest.mark.slow
def test_cifar_source_without_batches_exits_without_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_script("cifar10", "--source", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: --source {tmp_path / 'empty'}: holds neither "
                                     "cifar-10-batches-py/ nor cifar-10-python.tar.gz")


# ----------------------------------------------------------------------------- with the real cache


def test_prepared_folder_is_what_the_trainer_loads(tmp_path):
    source = make_afhq_zip(tmp_path / "afhq.zip")
    out = tmp_path / "out"
    afhq.main(["--source", str(source), "--out", str(out), "--classes", "dog", "--image_size", "8"])
    import training_data  # the repository's, as the script imported it

    images = training_data.load_image_folder(out / "train" / "dog", 8)
    expected = np.stack([np.asarray(Image.open(f)).transpose(2, 0, 1) for f in pngs(out / "train" / "dog")])
    assert images.dtype == torch.uint8 and tuple(images.shape) == (2, 3, 8, 8)
    # The same pixels, in whatever order the loader lists the files.
    assert sorted(map(bytes, images.numpy())) == sorted(map(bytes, expected))


@pytest.mark.parametrize("script, argv", [(afhq, ["--classes", "kitten"]), (cifar, ["--classes", "kitten"]),
                                          (afhq, ["--image_size", "0"]), (cifar, ["--image_size", "0"])])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, script, argv):
    code = script.utils.run_command_line(script.main, [*argv, "--out", str(tmp_path / "out")])
    message = one_line_error(code, capsys)
    assert argv[0] in message
    assert not (tmp_path / "out").exists()
