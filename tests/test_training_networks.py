"""training.networks / training.data: network arithmetic, the RC module, MuLUT weights, crops."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rclut_numba.spec import Branch, ModelSpec, mulut_sdy_x2, rclut_paper
from training.data import DataError, SRDataset, synthetic_images
from training.naive import naive_block, naive_forward, naive_rc
from training.networks import Block, LUTNet, RCModule, WeightsError, load_mulut_npz, round_ste

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "training" / "configs").glob("*.toml"))
SHARED = ROOT.parent / "shared"
MULUT_NPZ = SHARED / "mulut" / "network_2022.npz"
SET5 = SHARED / "data" / "benchmark" / "Set5"


def _assert_same_up_to_rounding_flips(a, b):
    # Two float32 evaluation orders of the same network: now and then a value sits on a
    # rounding boundary (x.5) in one and not the other.  Anything beyond rare +-1 flips (and
    # their small stage-2 echo) is a real difference.
    d = (a - b).abs()
    assert int(d.max()) <= 4 and float((d > 0).float().mean()) <= 0.01, \
        (int(d.max()), int((d > 0).sum()))


def _image(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).float() / 255.0


def _assert_same_gradients(module, fast_loss, slow_loss, *, rtol, atol):
    """The gradients of two scalar losses with respect to every parameter of ``module`` agree."""
    params = list(module.parameters())
    for a, b in zip(torch.autograd.grad(fast_loss, params), torch.autograd.grad(slow_loss, params),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# -- rounding ----------------------------------------------------------------------------------
def test_round_ste_is_exact_half_even_with_identity_gradient():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, 126.49999, 3.7], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == [0.0, 2.0, 2.0, -0.0, 126.0, 4.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0] * 6


# -- RC module ---------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [1, 3, 5])
def test_rc_module_equals_per_position_loop(window):
    torch.manual_seed(window)
    rc = RCModule(window, channels=6)
    x = _image((2, 1, 7, 9), seed=window)
    fast, slow = rc(x), naive_rc(rc, x)
    assert fast.shape == (2, 1, 7, 9)
    assert torch.equal(fast, slow)
    assert torch.equal(fast, fast.round()) and fast.min() >= 0 and fast.max() <= 255
    # Gradients through the straight-through rounding agree with the loop as well.
    w = torch.randn_like(fast)
    _assert_same_gradients(rc, (fast * w).sum(), (naive_rc(rc, x) * w).sum(), rtol=1e-4, atol=1e-5)


def test_rc_window_position_is_offset_from_centre():
    # Only position p = N*i + j responds: an impulse at (y, x) shows up at (y - di, x - dj).
    n = 5
    rc = RCModule(n, channels=3)
    for i, j in [(0, 0), (1, 3), (4, 2)]:
        p = n * i + j
        with torch.no_grad():
            for t in (rc.w1, rc.b1, rc.w2, rc.b2):
                t.zero_()
            rc.w1[p] = 1.0
            rc.w2[p] = float(n * n)  # a_p = 3 * 25; the mean divides by 25 -> slope 3
        x = torch.zeros(1, 1, 11, 11)
        x[0, 0, 5, 5] = 1.0
        m = rc.mean_response(x)[0, 0].detach()
        nz = torch.nonzero(m).tolist()
        assert nz == [[5 - (i - n // 2), 5 - (j - n // 2)]], (i, j, nz)
        assert float(m[nz[0][0], nz[0][1]]) == pytest.approx(3.0)


def test_rc_quantisation_formula():
    rc = RCModule(1, channels=1)
    with torch.no_grad():
        rc.w1.fill_(1.0)
        rc.b1.zero_()
        rc.w2.fill_(1.0)
        rc.b2.zero_()
    x = torch.linspace(-3, 3, 50).view(1, 1, 5, 10)
    q = rc(x)
    assert torch.equal(q, torch.round((torch.tanh(x) + 1) * 127.5))


# -- blocks and the whole network ----------------------------------------------------------------
def test_pattern_pixels_in_spec_order_with_edge_padding():
    img = torch.arange(16.0).view(1, 1, 4, 4)
    for pattern, want_last in [("S", [15, 15, 15, 15]), ("D", [15, 15, 15, 15]),
                               ("Y", [15, 15, 15, 15])]:
        blk = Block(Branch(pattern), 1, 4, nf=2)
        p = blk.patterns(img).view(4, 4, 4)
        offsets = {"S": [(0, 0), (0, 1), (1, 0), (1, 1)], "D": [(0, 0), (0, 2), (2, 0), (2, 2)],
                   "Y": [(0, 0), (1, 1), (1, 2), (2, 1)]}[pattern]
        assert p[0, 0].tolist() == [4 * dy + dx for dy, dx in offsets]
        assert p[3, 3].tolist() == want_last


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_fast_forward_equals_naive_forward(config, residual):
    _check_fast_equals_naive(dataclasses.replace(ModelSpec.from_toml(config), residual=residual))


def test_eight_orientations_fast_forward_equals_naive_forward():
    spec = ModelSpec.from_toml(ROOT / "training" / "configs" / "rclut_x3.toml")
    _check_fast_equals_naive(dataclasses.replace(spec, orientations=8))


def _check_fast_equals_naive(spec):
    torch.manual_seed(1)
    model = LUTNet(spec, nf=6, rc_channels=5)
    for shape in [(2, 1, 10, 10), (1, 1, 7, 11)]:  # square (batched rotations) and not
        x = _image(shape, seed=shape[-1])
        y = model(x)
        assert y.shape == (shape[0], 1, spec.scale * shape[2], spec.scale * shape[3])
        _assert_same_up_to_rounding_flips(y, naive_forward(model, x))
        assert torch.equal(y, y.round())
    x = _image((2, 1, 8, 8), seed=3)
    s = spec.scale
    hr = torch.rand(2, 1, 8 * s, 8 * s, generator=torch.Generator().manual_seed(0))
    # atol: one rounding flip (above) moves d(loss)/d(output) of its pixel by 2 / (255^2 N),
    # about 3e-8 here, times the pixel's output gradient (up to ~100): a few 1e-6 at most
    _assert_same_gradients(model, ((model(x) / 255 - hr) ** 2).mean(),
                           ((naive_forward(model, x) / 255 - hr) ** 2).mean(), rtol=1e-3, atol=5e-6)


def test_single_pixel_table_gradient_matches_direct_mlp():
    torch.manual_seed(0)
    blk = Block(Branch("1", rc=3), 16, 4, nf=5, rc_channels=4)
    x = _image((2, 1, 6, 6))
    y_fast = blk(x)
    y_slow = naive_block(blk, x)
    torch.testing.assert_close(y_fast, y_slow, rtol=0, atol=1e-6)
    w = torch.randn_like(y_fast)
    _assert_same_gradients(blk, (y_fast * w).sum(), (naive_block(blk, x) * w).sum(),
                           rtol=1e-4, atol=1e-6)


def test_rclut_paper_layout_and_outputs():
    spec = rclut_paper()
    model = LUTNet(spec, nf=4)
    assert list(model.blocks) == ["s1_b1", "s1_b2", "s1_b3", "s2_b1", "s2_b2", "s2_b3"]
    assert model.blocks["s2_b1"].conv6.out_features == 16
    assert model.blocks["s1_b3"].rc.window == 7 and model.blocks["s2_b1"].pattern == "1"


# -- the published MuLUT network -------------------------------------------------------------------
@pytest.mark.skipif(not MULUT_NPZ.is_file(), reason="../shared/mulut/network_2022.npz not present")
def test_mulut_weights_load_and_output_is_sane():
    model = LUTNet(mulut_sdy_x2(), nf=64)
    load_mulut_npz(model, MULUT_NPZ)
    d = np.load(MULUT_NPZ)
    w = d["s1_y.model.conv1.conv.weight"]
    assert torch.equal(model.blocks["s1_b3"].conv1.weight, torch.from_numpy(w.reshape(64, 4)))
    if not SET5.is_dir():
        pytest.skip("../shared/data/benchmark/Set5 not present")
    from rclut_numba.evaluation import dataset_pairs
    from rclut_numba.metrics import score

    name, lr, hr = next(iter(dataset_pairs(SET5, 4)))  # baby, RGB
    lr, hr = lr[:24, :24], hr[:96, :96]
    sr = model.upscale_uint8(lr)
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    psnr, _ = score(sr, hr, shave=4)
    from rclut_numba.bicubic import upscale
    bic, _ = score(upscale(lr, 4), hr, shave=4)
    assert psnr > bic + 0.5, (psnr, bic)  # the network beats bicubic on this crop
    # Against MuLUT's own LUT output (the LUTs were made from this network): nearly equal.
    ref_path = SHARED / "mulut" / "reference_outputs" / "Set5" / "X4" / f"{name}.png"
    if ref_path.is_file():
        from rclut_numba.imaging import read_image
        ref = read_image(ref_path)[4:92, 4:92].astype(int)
        assert np.abs(sr[4:92, 4:92].astype(int) - ref).mean() < 1.5


def test_mulut_npz_errors(tmp_path):
    model = LUTNet(mulut_sdy_x2(), nf=8)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="cannot read"):
        load_mulut_npz(model, bad)
    np.savez(tmp_path / "part.npz", x=np.zeros(3))
    with pytest.raises(WeightsError, match="no array 's1_s.model.conv1.conv.weight'"):
        load_mulut_npz(model, tmp_path / "part.npz")
    if MULUT_NPZ.is_file():
        with pytest.raises(WeightsError, match="expected"):
            load_mulut_npz(model, MULUT_NPZ)  # nf=8 against 64-filter weights


# -- data ----------------------------------------------------------------------------------------
def test_dataset_crops_are_reproducible_aligned_and_cached(tmp_path):
    synthetic_images(tmp_path / "img", n=3, size=80)
    logs = []
    ds = SRDataset([tmp_path / "img"], 4, 8, tmp_path / "cache", seed=5, log=logs.append)
    assert "3 downscaled now" in logs[-1]
    lr, hr = ds.batch(7, 4)
    assert lr.shape == (4, 1, 8, 8) and hr.shape == (4, 1, 32, 32)
    lr2, hr2 = ds.batch(7, 4)
    assert torch.equal(lr, lr2) and torch.equal(hr, hr2)
    assert not torch.equal(ds.batch(8, 4)[0], lr)
    # Data-parallel ranks take slices of the same global batch.
    assert torch.equal(ds.batch(7, 4, rank=1, world=2)[0], lr[2:])
    # LR and HR crops line up (flips/turns applied to both): the 4x4-mean of HR ~ LR.
    pooled = torch.nn.functional.avg_pool2d(hr, 4)
    assert (pooled - lr).abs().mean() < 0.03
    # Second construction reads the cache; touching a file invalidates its entry only.
    logs.clear()
    SRDataset([tmp_path / "img"], 4, 8, tmp_path / "cache", log=logs.append)
    assert "0 downscaled now" in logs[-1]
    f = tmp_path / "img" / "synth_0.png"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    SRDataset([tmp_path / "img"], 4, 8, tmp_path / "cache", log=logs.append)
    assert "1 downscaled now" in logs[-1]


def _grey_folder(folder: Path, level: int, sizes) -> Path:
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        iio.imwrite(folder / f"grey_{i}.png", np.full((size, size), level, np.uint8))
    return folder


def test_data_shares_set_each_entrys_share_of_the_samples(tmp_path):
    # two flat folders tell the entries apart by level; "small" holds 9 of 347 LR positions
    big = _grey_folder(tmp_path / "big", 50, [80, 80])
    small = _grey_folder(tmp_path / "small", 200, [40])
    quiet = {"log": lambda _s: None}

    def small_fraction(ds):
        lrs = torch.cat([ds.batch(step, 64)[0] for step in range(20)])
        assert set(torch.unique(lrs * 255).round().tolist()) <= {50.0, 200.0}
        return float((lrs[:, 0, 0, 0] * 255 > 100).float().mean())

    by_pixels = SRDataset([big, small], 4, 8, tmp_path / "cache", **quiet)
    assert by_pixels.entry_shares == pytest.approx([338 / 347, 9 / 347])
    assert small_fraction(by_pixels) < 0.08
    logs = []
    shared = SRDataset([big, small], 4, 8, tmp_path / "cache", shares=[1, 3], log=logs.append)
    assert shared.entry_shares == pytest.approx([0.25, 0.75])
    assert logs[-1] == "data shares: big 25.0%, small 75.0%"
    assert 0.68 < small_fraction(shared) < 0.82  # 1280 draws of p = 0.75
    for bad, match in (([1], "1 data share.*2 data entries"), ([1, 0], "finite and > 0"),
                       ([1, float("nan")], "finite and > 0"), (["a", 1], "must be numbers")):
        with pytest.raises(DataError, match=match):
            SRDataset([big, small], 4, 8, tmp_path / "cache", shares=bad, **quiet)
    tiny = _grey_folder(tmp_path / "tiny", 9, [16])  # smaller than one 32px HR crop
    with pytest.raises(DataError, match="tiny has a share but no image"):
        SRDataset([big, tiny], 4, 8, tmp_path / "cache", shares=[1, 1], **quiet)


def test_flat_share_replaces_samples_with_flat_crops_and_keeps_the_others(tmp_path):
    synthetic_images(tmp_path / "img", n=3, size=80)
    plain = SRDataset([tmp_path / "img"], 4, 8, tmp_path / "cache", seed=5, log=lambda _s: None)
    mixed = SRDataset([tmp_path / "img"], 4, 8, tmp_path / "cache", seed=5, log=lambda _s: None,
                      flat_share=0.5)
    n_flat = 0
    for step in range(6):
        lr, hr = plain.batch(step, 8)
        lr_m, hr_m = mixed.batch(step, 8)
        assert torch.equal(mixed.batch(step, 8, rank=1, world=2)[1], hr_m[4:])
        for i in range(8):
            level = lr_m[i].flatten()[0]
            if torch.all(lr_m[i] == level) and torch.all(hr_m[i] == level):
                n_flat += 1
            else:  # not replaced: the sample of a run without flat crops
                assert torch.equal(lr_m[i], lr[i]) and torch.equal(hr_m[i], hr[i])
    assert 12 <= n_flat <= 36  # about half of 48
    with pytest.raises(DataError, match="flat_share"):
        SRDataset([tmp_path / "img"], 4, 8, tmp_path / "cache", flat_share=1.0)
