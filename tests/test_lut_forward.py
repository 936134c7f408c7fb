"""The torch LUT forward (fine-tuning) equals the numba engine bit for bit."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="torch is not installed (training extra)")

from rclut_numba.engine import LutModel
from rclut_numba.rc_storage import project_rc_tables
from rclut_numba.spec import ModelSpec, mulut_sdy_x2, rclut_paper, srlut
from strategies import images, random_arrays, specs
from training.lut_forward import LutForward, _WeightedGather, _WindowSum, round_half_even_div


def torch_upscale(spec, arrays, image, project_rc=False):
    net = LutForward(spec, arrays, project_rc=project_rc)
    with torch.no_grad():
        y = net(torch.from_numpy(image.astype(np.float32))[None, None])
    assert torch.equal(y, torch.round(y))  # integer-valued
    return y[0, 0].numpy().astype(np.uint8)


@settings(max_examples=60)
@given(spec=specs(max_stages=3), seed=st.integers(0, 2 ** 32 - 1), image=images(max_side=24))
def test_torch_forward_equals_engine(spec, seed, image):
    arrays = random_arrays(spec, seed)
    assert np.array_equal(torch_upscale(spec, arrays, image), LutModel(spec, arrays).upscale(image))


@settings(max_examples=30)
@given(spec=specs(), seed=st.integers(0, 2 ** 32 - 1), image=images(max_side=16),
       scale_rows=st.integers(0, 9))
def test_projected_forward_equals_the_engine_on_the_stored_tables(spec, seed, image, scale_rows):
    # off-grid RC tables (random int16 rows, shrunk by 2**scale_rows so every shift occurs):
    # project_rc reads them as the bundle will store them
    arrays = random_arrays(spec, seed)
    rng = np.random.default_rng(seed)
    for k in [k for k in arrays if k.endswith("_rc_table")]:
        arrays[k] = (rng.integers(-32768, 32768, arrays[k].shape) >> scale_rows).astype(np.int16)
    stored = project_rc_tables(arrays)
    assert np.array_equal(torch_upscale(spec, arrays, image, project_rc=True),
                          LutModel(spec, stored).upscale(image))
    assert np.array_equal(torch_upscale(spec, stored, image, project_rc=True),
                          torch_upscale(spec, stored, image))  # on the grid: nothing moves


@pytest.mark.parametrize("make", [srlut, mulut_sdy_x2, rclut_paper])
def test_named_families_at_interval_16(make):
    spec = make()
    arrays = random_arrays(spec, 3)
    image = np.random.default_rng(1).integers(0, 256, (13, 10), dtype=np.uint8)
    image[0] = 255
    assert np.array_equal(torch_upscale(spec, arrays, image), LutModel(spec, arrays).upscale(image))


def test_round_half_even_div():
    num = torch.arange(-50, 51)
    for den in (1, 2, 3, 4, 6, 192):
        expected = [round(__import__("fractions").Fraction(int(n), den)) for n in num]
        assert round_half_even_div(num, den).tolist() == expected


def test_gradients_reach_every_table():
    spec = rclut_paper()
    spec = ModelSpec(spec.name, 4, spec.stages, interval=64)
    arrays = random_arrays(spec, 0)
    net = LutForward(spec, arrays)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 1, 9, 9)).astype(np.float32))
    net(x).float().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


@pytest.mark.parametrize("n", [1, 3, 5])
def test_rc_window_sum_gradients_equal_plain_autograd(n):
    # The hand-written window sum against its plain-autograd twin: the value, the table's
    # gradient (read counts) and the pixels' gradient (the table's central difference).
    rng = np.random.default_rng(n)
    table0 = torch.from_numpy(rng.integers(-3000, 3000, n * n * 256).astype(np.float64))
    v0 = torch.from_numpy(rng.integers(0, 256, (40, n * n)).astype(np.float32))
    idx = v0.long() + 256 * torch.arange(n * n)
    upstream = torch.from_numpy(rng.normal(size=40))

    table, v = table0.clone().requires_grad_(True), v0.clone().requires_grad_(True)
    (_WindowSum.apply(table, v, idx) * upstream).sum().backward()

    t_ref, v_ref = table0.clone().requires_grad_(True), v0.clone().requires_grad_(True)
    t2 = t_ref.detach().reshape(n * n, 256)
    slope = (t2[:, list(range(1, 256)) + [255]] - t2[:, [0] + list(range(255))]) / 2
    ref = t_ref[idx].sum(1) + (slope.reshape(-1)[idx] * (v_ref - v_ref.detach()).double()).sum(1)
    (ref * upstream).sum().backward()

    assert torch.equal(_WindowSum.apply(table0, v0, idx), ref.detach())
    torch.testing.assert_close(table.grad, t_ref.grad)
    torch.testing.assert_close(v.grad, v_ref.grad)


@pytest.mark.parametrize("outputs", [1, 16])
def test_weighted_gather_gradients_equal_plain_autograd(outputs):
    # The stage's simplex gather against its plain-autograd twin, repeated rows included
    # (float64, so that summation order cannot hide behind float32 rounding).
    rng = np.random.default_rng(outputs)
    table0 = torch.from_numpy(rng.integers(-128, 128, (50, outputs)).astype(np.float64))
    weights0 = torch.from_numpy(rng.integers(0, 17, (300, 5)).astype(np.float64))
    idx = torch.from_numpy(rng.integers(0, 50, (300, 5)))
    upstream = torch.from_numpy(rng.normal(size=(300, outputs)))

    table, weights = table0.clone().requires_grad_(True), weights0.clone().requires_grad_(True)
    (_WeightedGather.apply(table, weights, idx) * upstream).sum().backward()
    t_ref, w_ref = table0.clone().requires_grad_(True), weights0.clone().requires_grad_(True)
    ref = (t_ref[idx] * w_ref.unsqueeze(2)).sum(1)
    (ref * upstream).sum().backward()

    assert torch.equal(_WeightedGather.apply(table0, weights0, idx), ref.detach())
    torch.testing.assert_close(table.grad, t_ref.grad)
    torch.testing.assert_close(weights.grad, w_ref.grad)


def test_export_round_trips():
    spec = ModelSpec("m", 2, mulut_sdy_x2().stages, interval=64)
    arrays = random_arrays(spec, 5)
    exported = LutForward(spec, arrays).export_arrays()
    assert exported.keys() == arrays.keys()
    for k in arrays:
        assert exported[k].dtype == arrays[k].dtype and np.array_equal(exported[k], arrays[k])
