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
