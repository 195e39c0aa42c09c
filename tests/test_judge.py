"""bench/judge.py: its feature extractor's shape, and one-line errors for a missing checkpoint or data folder.

The judge's figures themselves need the shared CIFAR-10 images and minutes of training: they are
measured by hand (bench/README.md, Part 3), never here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

import utils

ROOT = Path(__file__).resolve().parent.parent


def load_judge():
    sys.path.insert(0, str(ROOT / "bench"))  # judge.py imports energy_quality beside it
    spec = importlib.util.spec_from_file_location("judge", ROOT / "bench" / "judge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_features_are_the_penultimate_layer_in_float64(one_thread):
    judge = load_judge()
    torch.manual_seed(0)
    net = judge.JudgeNet()
    features = judge.JudgeFeatures(net)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    out = features(images)
    assert out.shape == (5, judge.JudgeFeatures.num_features) and out.dtype == torch.float64
    with torch.no_grad():  # the same numbers as the network's own layer on [-1, 1] images
        expected = net.eval().features(images.float() / 127.5 - 1).double()
    assert torch.allclose(out, expected)
    assert net.head.in_features == judge.JudgeFeatures.num_features


def test_a_missing_checkpoint_is_one_line_naming_the_flag(tmp_path, capsys):
    judge = load_judge()
    code = utils.run_command_line(judge.main, ["--ebm", str(tmp_path / "nope.pt"), "--data_root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--ebm" in err and "nope.pt" in err and "Traceback" not in err


def test_a_missing_data_folder_is_one_line_naming_it(tmp_path, capsys):
    judge = load_judge()
    code = utils.run_command_line(judge.main, ["--data_root", str(tmp_path), "--cache", str(tmp_path / "j.pt")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(tmp_path / "cifar10-cat") in err
