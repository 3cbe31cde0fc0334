import numpy as np
import pytest
import simplejpeg

from webssl_cli.data import multicrop as mc
from webssl_cli.specs.train import CropConfig


def _jpeg(h=80, w=60, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return simplejpeg.encode_jpeg(img, quality=90, colorspace="RGB")


def test_shapes_dtype_and_determinism():
    t = mc.MultiCrop(CropConfig(global_size=32, local_size=16, n_local=3))
    g, loc = t(_jpeg(), np.random.default_rng(5))
    assert [x.shape for x in g] == [(32, 32, 3)] * 2 and [x.shape for x in loc] == [(16, 16, 3)] * 3
    assert all(x.dtype == np.uint8 for x in g + loc)
    g2, loc2 = t(_jpeg(), np.random.default_rng(5))
    assert all(np.array_equal(a, b) for a, b in zip(g + loc, g2 + loc2, strict=True))
    g3, _ = t(_jpeg(), np.random.default_rng(6))
    assert not np.array_equal(g[0], g3[0])


def test_crop_box_areas_within_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = mc.crop_box(rng, 100, 150, (0.05, 0.32))
        assert top >= 0 and top + h <= 100 and left >= 0 and left + w <= 150
        assert 0.04 <= h * w / 15000 <= 0.34
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def _count(monkeypatch, name):
    calls = []
    real = getattr(mc, name) if hasattr(mc, name) else None

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(mc, name, spy)
    return calls


@pytest.mark.parametrize(
    "mode,expected", [("dinov2-code", (0.0, 0.9, 0.5)), ("written", (1.0, 0.1, 0.5))]
)
def test_blur_and_solarize_probabilities(monkeypatch, mode, expected):
    # Count blur calls per crop slot by wrapping cv2.GaussianBlur inside the module.
    slots = []
    real_blur = mc.cv2.GaussianBlur

    class CV2Proxy:
        def __getattr__(self, name):
            return getattr(mc.__dict__["_cv2"], name)

        @staticmethod
        def GaussianBlur(*a, **kw):
            slots.append(current["slot"])
            return real_blur(*a, **kw)

    current = {"slot": None}
    monkeypatch.setitem(mc.__dict__, "_cv2", mc.cv2)
    monkeypatch.setattr(mc, "cv2", CV2Proxy())
    solar = []
    real_sol = mc._solarize
    monkeypatch.setattr(mc, "_solarize", lambda img: solar.append(current["slot"]) or real_sol(img))
    real_aug = mc.augment
    order = iter([])

    def tagged(*a, **kw):
        current["slot"] = next(order)
        return real_aug(*a, **kw)

    monkeypatch.setattr(mc, "augment", tagged)
    t = mc.MultiCrop(CropConfig(global_size=16, local_size=8, n_local=2, blur_probs=mode))
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    n = 600
    for i in range(n):
        order = iter(["g1", "g2", "l", "l"])
        t(img, np.random.default_rng(i))
    freq = {s: slots.count(s) / (n * (2 if s == "l" else 1)) for s in ("g1", "g2", "l")}
    for slot, p in zip(("g1", "g2", "l"), expected, strict=True):
        assert abs(freq[slot] - p) < 0.06, (slot, freq)
    assert set(solar) == {"g2"} and abs(len(solar) / n - 0.2) < 0.05


def test_solarize_and_jitter_keep_uint8_range():
    img = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    sol = mc._solarize(img)
    assert sol[0, 0, 0] == 0 and sol.reshape(-1, 3)[200, 0] == 55
    out = mc.color_jitter(np.random.default_rng(0), img)
    assert out.dtype == np.uint8 and out.shape == img.shape


def test_undecodable_raises_its_own_error():
    with pytest.raises(mc.UndecodableImage):
        mc.decode_rgb(b"\xff\xd8 not a jpeg")
    with pytest.raises(mc.UndecodableImage):
        mc.decode_rgb(b"garbage")
    assert mc.decode_rgb(_jpeg(20, 30)).shape == (20, 30, 3)


def test_blur_scale_shrinks_sigma_and_kernel(monkeypatch):
    # The recipe's 9 px kernel and sigma 0.1-2 at scale 1; at a quarter scale a 3 px kernel
    # and sigma 0.025-0.5, so a small crop keeps the detail a large one would.
    assert mc.blur_kernel(1.0) == 9 and mc.blur_kernel(0.5) == 5 and mc.blur_kernel(0.2) == 3
    seen = []
    real = mc.cv2.GaussianBlur

    class CV2Proxy:
        def __getattr__(self, name):
            return getattr(mc.__dict__["_cv2"], name)

        @staticmethod
        def GaussianBlur(img, ksize, sigmaX, sigmaY):
            seen.append((ksize, sigmaX))
            return real(img, ksize, sigmaX=sigmaX, sigmaY=sigmaY)

    monkeypatch.setitem(mc.__dict__, "_cv2", mc.cv2)
    monkeypatch.setattr(mc, "cv2", CV2Proxy())
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for scale in (1.0, 0.25):
        seen.clear()
        for i in range(200):
            mc.augment(np.random.default_rng(i), img, 24, (0.5, 1.0), 1.0, blur_scale=scale)
        sigmas = [s for _, s in seen]
        assert {k for k, _ in seen} == {(mc.blur_kernel(scale),) * 2}
        assert 0.1 * scale <= min(sigmas) and max(sigmas) <= 2.0 * scale
        assert max(sigmas) > 1.8 * scale  # the whole range is used
    # MultiCrop passes the config's scale to every crop.
    seen.clear()
    mc.MultiCrop(CropConfig(global_size=16, local_size=8, n_local=2, blur_probs="written",
                            blur_scale=0.25))(img, np.random.default_rng(0))  # fmt: skip
    assert seen and all(k == (3, 3) and s <= 0.5 for k, s in seen)


def test_hue_range_sets_how_far_colours_move():
    # A saturated red image: with hue 0 it stays red; with 0.5 its hue lands anywhere on the wheel.
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 220

    def hues(hue):
        out = []
        for i in range(300):
            x = mc.color_jitter(np.random.default_rng(i), img, saturation=0.0, hue=hue)
            out.append(int(mc.cv2.cvtColor(x[:1, :1], mc.cv2.COLOR_RGB2HSV_FULL)[0, 0, 0]))
        return np.array(out)

    assert all(min(h, 256 - h) <= 2 for h in hues(0.0))
    wide = hues(0.5)
    assert np.histogram(wide, bins=8, range=(0, 256))[0].min() > 15  # every eighth of the wheel
