import io
import itertools
import tarfile

import torch

from webssl_cli.data.stream import expand_urls
from webssl_cli.specs.train import CropConfig
from webssl_cli.train.batches import LaneLoader, to_model_input


def test_workers_do_not_change_batches(shards):
    crops = CropConfig(global_size=16, local_size=8, n_local=2)
    out = {}
    for workers in (0, 2):
        loader = LaneLoader(expand_urls(shards), 0, crops, 4, 1, 0, 1, num_workers=workers)
        out[workers] = list(itertools.islice(loader, 3))
        loader.close()
    for a, b in zip(out[0], out[2], strict=True):
        assert torch.equal(a.globals_u8, b.globals_u8) and torch.equal(a.locals_u8, b.locals_u8)
        assert a.positions == b.positions
    assert out[0][0].globals_u8.shape == (2, 4, 16, 16, 3) and out[0][0].locals_u8.shape == (
        2,
        4,
        8,
        8,
        3,
    )
    x = to_model_input(out[0][0].globals_u8, torch.device("cpu"))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and abs(float(x.mean())) < 3


def test_bad_images_are_skipped_and_counted(tmp_path, shards):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for i, data in enumerate([b"\xff\xd8broken", b"junk"]):
            info = tarfile.TarInfo(f"b{i}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("b9.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    urls = [str(bad)] + expand_urls(shards)
    loader = LaneLoader(urls, 0, CropConfig(global_size=16, local_size=8, n_local=0), 4, 1, 0, 1)
    batches = list(itertools.islice(loader, 20))
    assert loader.problems[0]["undecodable"] >= 2 and loader.problems[0]["no_image"] >= 1
    assert batches[-1].problems[0]["undecodable"] >= 2


def test_single_view_mode_keeps_lanes_workers_and_resume(shards):
    """One crop + flip per image at the global size (CLIP, MAE); the same images and positions
    as the multi-crop mode, the same crops at any worker count and from a resumed position."""
    import numpy as np

    from webssl_cli.data.multicrop import SingleView

    crops = CropConfig(global_size=16, local_size=8, n_local=2)
    urls = expand_urls(shards)
    runs = {}
    for workers in (0, 2):
        loader = LaneLoader(urls, 0, crops, 4, 2, 0, 1, num_workers=workers, single_view=(0.2, 1.0))  # fmt: skip
        runs[workers] = list(itertools.islice(loader, 4))
        loader.close()
    multi = LaneLoader(urls, 0, crops, 4, 2, 0, 1)
    dino = list(itertools.islice(multi, 4))
    multi.close()
    for a, b, d in zip(runs[0], runs[2], dino, strict=True):
        assert a.globals_u8.shape == (1, 4, 16, 16, 3) and a.locals_u8.shape[0] == 0
        assert torch.equal(a.globals_u8, b.globals_u8) and a.positions == b.positions
        assert a.positions == d.positions  # the same samples make each step
    resumed = LaneLoader(urls, 0, crops, 4, 2, 0, 1, positions=runs[0][1].positions,
                         single_view=(0.2, 1.0))  # fmt: skip
    again = list(itertools.islice(resumed, 2))
    resumed.close()
    assert all(torch.equal(x.globals_u8, y.globals_u8) for x, y in zip(again, runs[0][2:], strict=True))  # fmt: skip
    # the view: a flip of the full image when the scale forces the whole frame
    img = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    views = [SingleView(8, (1.0, 1.0))(img, np.random.default_rng(s))[0][0] for s in range(8)]
    assert all(np.array_equal(v, img) or np.array_equal(v, img[:, ::-1]) for v in views)
    assert any(np.array_equal(v, img[:, ::-1]) for v in views)
