"""Converters from the published ADE20K, NYUv2 and class-per-folder layouts, on fixture folders
written here in those layouts; bad folders give one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from webssl_cli.errors import UserError
from webssl_cli.eval.convert import convert_to_shards
from webssl_cli.eval.dense_data import load_dense
from webssl_cli.eval.features import load_labelled


def _jpg(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), arr)


def make_ade(root: Path, n: int = 3) -> Path:
    src = root / "ADEChallengeData2016"
    for folder in ("training", "validation"):
        for i in range(n):
            stem = f"ADE_{folder[:5]}_{i:08d}"
            _jpg(src / "images" / folder / f"{stem}.jpg", 40, 30, i)
            label = np.full((30, 40), 3, np.uint8)
            label[:, :10] = 0  # "other": ignored after the shift
            label[0, 0] = 150
            _png(src / "annotations" / folder / f"{stem}.png", label)
    return src


def make_nyu(root: Path) -> Path:
    src = root / "nyu"
    lines: dict[str, list[str]] = {"nyu_train.txt": [], "nyu_test.txt": []}
    for split, names in (("nyu_train.txt", ["kitchen_0001/rgb_00001", "kitchen_0001/rgb_00002"]),
                         ("nyu_test.txt", ["office_0003/rgb_00009"])):  # fmt: skip
        for name in names:
            _jpg(src / f"{name}.jpg", 64, 48)
            depth = np.full((48, 64), 2500, np.uint16)
            depth[0, :] = 0  # missing
            dname = name.replace("rgb_", "sync_depth_")
            _png(src / f"{dname}.png", depth)
            lines[split].append(f"/{name}.jpg /{dname}.png 518.8579")
    for f, ls in lines.items():
        (src / f).write_text("\n".join(ls) + "\n")
    return src


def make_folders(root: Path) -> Path:
    src = root / "imagenet"
    for split in ("train", "val"):
        for c, cls in enumerate(("n01440764", "n01443537")):
            for i in range(3 if split == "train" else 2):
                _jpg(src / split / cls / f"{cls}_{i}.JPEG", 32, 32, c * 10 + i)
    return src


def test_ade20k_layout(tmp_path: Path) -> None:
    src = make_ade(tmp_path)
    n, pattern = convert_to_shards("ade20k", src, tmp_path / "out")
    assert n == 6
    train, val = load_dense(pattern, "segmentation")
    assert len(train) == len(val) == 3  # the published split, not a hash
    t = train.targets[0]
    assert t.shape == (30, 40) and t.dtype == np.uint8
    assert (t[1:, :10] == 255).all() and t[5, 20] == 2 and t[0, 0] == 149  # 0 -> 255, k -> k-1
    assert train.ignore_label == 255 and len(train.class_names) == 150


def test_nyuv2_layout(tmp_path: Path) -> None:
    src = make_nyu(tmp_path)
    n, pattern = convert_to_shards("nyuv2", src, tmp_path / "out")
    assert n == 3
    train, val = load_dense(pattern, "depth")
    assert len(train) == 2 and len(val) == 1
    d = val.targets[0]
    assert d.shape == (48, 64) and d[5, 5] == pytest.approx(2.5) and (d[0] == 0).all()


def test_class_folder_layout_feeds_the_probes(tmp_path: Path) -> None:
    src = make_folders(tmp_path)
    n, pattern = convert_to_shards("class-folder", src, tmp_path / "out")
    assert n == 10
    train, val = load_labelled(pattern)
    assert len(train) == 6 and len(val) == 4  # the folders' split
    assert sorted(set(train.labels)) == [0, 1] and train.class_names == {
        0: "n01440764",
        1: "n01443537",
    }


def test_cli_convert_writes_shards(tmp_path: Path) -> None:
    from webssl_cli.cli import app

    src = make_folders(tmp_path)
    r = CliRunner().invoke(
        app, ["eval", "convert", str(src), str(tmp_path / "o"), "--layout", "class-folder"]
    )
    assert r.exit_code == 0, r.output
    assert "wrote 10 samples" in r.output


def _err(layout: str, src: Path, out: Path) -> str:
    with pytest.raises(UserError) as e:
        convert_to_shards(layout, src, out)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_ade20k_folders(tmp_path: Path) -> None:
    src = make_ade(tmp_path)
    (src / "annotations" / "training" / "ADE_train_00000001.png").unlink()
    assert "ADE_train_00000001.jpg: its mask" in _err("ade20k", src, tmp_path / "o1")
    _png(src / "annotations" / "training" / "ADE_train_00000001.png", np.zeros((10, 10), np.uint8))
    assert "ADE_train_00000001.png: mask is 10x10" in _err("ade20k", src, tmp_path / "o2")
    _png(src / "annotations" / "training" / "ADE_train_00000001.png", np.zeros((30, 40), np.uint8))
    (src / "images" / "validation" / "ADE_valid_00000002.jpg").write_bytes(b"not a jpeg")
    assert "ADE_valid_00000002.jpg: not a readable image" in _err("ade20k", src, tmp_path / "o3")
    assert "not a folder" in _err("ade20k", tmp_path / "nope", tmp_path / "o4")


def test_bad_nyuv2_folders(tmp_path: Path) -> None:
    src = make_nyu(tmp_path)
    _png(src / "office_0003" / "sync_depth_00009.png", np.zeros((48, 64, 3), np.uint8))
    assert "sync_depth_00009.png: expected a single-channel uint16 PNG" in _err(
        "nyuv2", src, tmp_path / "o1"
    )
    _png(src / "office_0003" / "sync_depth_00009.png", np.zeros((24, 32), np.uint16))
    assert "sync_depth_00009.png: depth is 32x24" in _err("nyuv2", src, tmp_path / "o2")
    (src / "office_0003" / "sync_depth_00009.png").unlink()
    assert "nyu_test.txt:1:" in _err("nyuv2", src, tmp_path / "o3")
    (src / "nyu_train.txt").unlink()
    (src / "nyu_test.txt").unlink()
    assert "no nyu_train.txt or nyu_test.txt" in _err("nyuv2", src, tmp_path / "o4")


def test_bad_class_folders(tmp_path: Path) -> None:
    src = make_folders(tmp_path)
    (src / "val" / "n01440764" / "n01440764_0.JPEG").write_bytes(b"")
    assert "n01440764_0.JPEG: not a readable image" in _err("class-folder", src, tmp_path / "o1")
    (src / "val" / "n01440764" / "n01440764_0.JPEG").unlink()
    _jpg(src / "val" / "n99999999" / "x.JPEG", 8, 8)
    assert "n99999999: class 'n99999999' has no folder in train/" in _err(
        "class-folder", src, tmp_path / "o2"
    )
