"""Network -> tables: RC windows tabulate exactly, blocks sample on the grid, MuLUT reproduces."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (training extra)")

from conftest import shared_path
from rclut_numba.engine import LutModel, window_offsets
from rclut_numba.evaluation import evaluate
from rclut_numba.kernels.rc_window import level_table, rc_index_maps
from rclut_numba.spec import ModelSpec, mulut_sdy_x2
from training.networks import LUTNet, RCModule, load_mulut_npz
from training.transfer import NETWORK_LEVELS, rc_level_map, tabulate_rc, transfer


@pytest.mark.parametrize("window", [1, 3, 5, 7])
def test_rc_tables_reproduce_the_rc_module(window):
    torch.manual_seed(window)
    rc = RCModule(window, 8).double()
    with torch.no_grad():  # a wider spread of pre-tanh values than the default init gives
        rc.b2.mul_(3.0)
    table, thr = tabulate_rc(rc)
    image = np.random.default_rng(window).integers(0, 256, (40, 40), dtype=np.uint8)
    with torch.no_grad():
        q_net = rc(torch.from_numpy(image).double()[None, None] / 255.0)[0, 0].numpy().astype(int)
    c = window // 2
    q_tab = np.empty((4, 40, 40), np.uint8)
    rc_index_maps(np.pad(image, c, mode="edge"), window_offsets(window), table,
                  *level_table(table, thr), q_tab)
    assert len(np.unique(q_net)) > 5  # the test exercises many steps of the staircase
    # fixed-point rounding can only move a value sitting on a step by one
    diff = np.abs(q_tab[0].astype(int) - q_net)
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999


def _rc_levels_from_tables(rc, image, level_map=NETWORK_LEVELS):
    """The deployed RC levels of ``image`` (uint8 HxW): the numba kernel on the tabulated window."""
    table, thr = tabulate_rc(rc, level_map)
    c = rc.window // 2
    q = np.empty((4,) + image.shape, np.uint8)
    rc_index_maps(np.pad(image, c, mode="edge"), window_offsets(rc.window), table,
                  *level_table(table, thr), q)
    return q[0].astype(int)


@pytest.mark.parametrize("window", [1, 3, 5])
def test_spread_rc_levels_stretch_the_reachable_span(window):
    torch.manual_seed(10 + window)
    rc = RCModule(window, 8).double()
    with torch.no_grad():  # outputs confined to part of 0..255, as trained windows often are
        rc.b2.add_(1.0)
    alpha, beta = rc_level_map(rc)
    assert alpha > 1.2
    image = np.random.default_rng(window).integers(0, 256, (40, 40), dtype=np.uint8)
    with torch.no_grad():
        m = rc.mean_response(torch.from_numpy(image).double()[None, None] / 255.0)[0, 0]
        v = alpha * ((torch.tanh(m) + 1) * 127.5).numpy() + beta
    diff = np.abs(_rc_levels_from_tables(rc, image, (alpha, beta)) - np.clip(np.round(v), 0, 255))
    # the int16 tables' rounding (up to N^2 / 2 units of a sum) moves only values near a step,
    # and stretched levels are closer together than the network's, so a few more of them
    near_step = np.abs(v - np.floor(v) - 0.5) < 0.05
    assert diff.max() <= 1 and not diff[~near_step].any() and (diff == 0).mean() >= 0.99
    # the two extreme windows (each pixel 0 or 255 as its slope's sign says) reach 0 and 255
    a, _ = rc.affine()
    up = (a.detach().numpy() > 0).reshape(window, window)
    lowest = np.where(up, 0, 255).astype(np.uint8)
    levels = [_rc_levels_from_tables(rc, w, (alpha, beta))[window // 2, window // 2]
              for w in (lowest, 255 - lowest)]
    assert levels == [0, 255]


def test_transfer_small_rclut_network_psnr_gap():
    """A tiny RC-LUT trained a few steps: the engine on its tables stays close to the network."""
    from rclut_numba.bicubic import downscale
    # RC feeding both a 4D and a 1D LUT, beside plain branches: quick to fit, covers every kind
    spec = ModelSpec.from_dict({"name": "rc", "scale": 2,
                                "stages": [["rc3-S", "S"], ["rc5-1", "S"]]})
    torch.manual_seed(0)
    net = LUTNet(spec, nf=8)
    yy, xx = np.mgrid[0:32, 0:32]
    hr = (128 + 90 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
    lr = downscale(hr, 2)
    x = torch.from_numpy(lr).float()[None, None] / 255
    target = torch.from_numpy(hr).float()[None, None]
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.mean((net(x) - target) ** 2)
        loss.backward()
        opt.step()
    net.eval()

    def psnr(a, b):
        mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
        return 10 * np.log10(255 ** 2 / max(mse, 1e-12))

    net_out = net.upscale_uint8(lr)
    lut_out = LutModel(*transfer(net)).upscale(lr)
    print(f"network {psnr(net_out, hr):.2f} dB, engine on its tables {psnr(lut_out, hr):.2f} dB, "
          f"network vs engine {psnr(net_out, lut_out):.2f} dB")
    assert psnr(net_out, hr) > 25  # the network learned something image-like
    assert psnr(net_out, lut_out) > 35


def test_published_mulut_network_transfers_to_published_figure(capsys):
    weights = shared_path("mulut", "network_2022.npz")
    data = shared_path("data", "benchmark", "Set5")
    net = LUTNet(mulut_sdy_x2(), nf=64)
    load_mulut_npz(net, weights)
    spec, arrays = transfer(net.eval())
    result = evaluate(LutModel(spec, arrays).upscale, data, 4, out=lambda s: None)
    assert abs(result["mean_psnr"] - 30.528) <= 0.002  # MuLUT's figure before LUT fine-tuning


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("stages", [[["S", "D", "Y"]], [["rc3-1", "rc5-1"]], [["1"]]])
def test_engine_equals_network_where_no_interpolation_happens(stages, residual):
    """On grid-valued pixels a 4D LUT holds the network's own outputs, and 1D LUTs and RC
    tables nearly so (their fixed point can move a window sitting on a step by one code: 0.9 %
    of the rc5 codes here): one stage of the engine then equals the network pixel for pixel."""
    spec = ModelSpec.from_dict({"name": "t", "scale": 2, "interval": 16, "stages": stages,
                                "residual": residual})
    torch.manual_seed(1)
    net = LUTNet(spec, nf=16).eval()
    with torch.no_grad():
        for blk in net.blocks.values():
            # outputs away from the final clip, so that it does not hide errors: positive, or
            # (residual) corrections of either sign
            blk.conv6.bias.fill_(0.0 if residual else 0.3)
    image = (np.random.default_rng(0).integers(0, 16, (12, 9)) * 16).astype(np.uint8)
    net_out = net.upscale_uint8(image)
    lut_out = LutModel(*transfer(net)).upscale(image)
    assert len(np.unique(net_out)) > 10
    # without the residual the RC stage's outputs would clip at 0 here and hide such flips
    agree = 0.98 if any("rc" in b for b in stages[0]) else 0.999
    assert np.mean(net_out == lut_out) >= agree and np.abs(net_out.astype(int) - lut_out).max() <= 1


def test_spread_rc_samples_each_block_where_its_levels_now_point():
    """An RC window feeding an exact 1D LUT: stretching its levels changes which table entry a
    pixel reads, so the engine only agrees with the plain transfer if the table was sampled at
    the inverse map.  They differ by the finer level rounding alone."""
    spec = ModelSpec.from_dict({"name": "t", "scale": 2, "stages": [["rc3-1"]]})
    torch.manual_seed(2)
    net = LUTNet(spec, nf=16).eval()
    blk = net.blocks["s1_b1"]
    with torch.no_grad():
        blk.rc.b2.add_(1.0)           # outputs confined to part of 0..255
        blk.conv6.bias.fill_(0.3)     # positive outputs, so the final clip does not hide errors
    assert rc_level_map(blk.rc)[0] > 1.2
    image = np.random.default_rng(3).integers(0, 256, (24, 20), dtype=np.uint8)
    plain = LutModel(*transfer(net)).upscale(image).astype(int)
    spread = LutModel(*transfer(net, spread_rc=True)).upscale(image).astype(int)
    assert len(np.unique(plain)) > 10
    assert np.abs(plain - spread).mean() < 0.5 and np.abs(plain - spread).max() <= 3
