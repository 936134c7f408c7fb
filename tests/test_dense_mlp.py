"""training.dense_mlp: the fused MLP Function against its plain-autograd twin and float32."""
import pytest

torch = pytest.importorskip("torch")

from rclut_numba.spec import Branch, mulut_sdy_x2, rclut_paper
from training.dense_mlp import dense_mlp_bf16, dense_mlp_reference
from training.networks import Block, LUTNet


def _block(n_out, nf=16, seed=0):
    torch.manual_seed(seed)
    blk = Block(Branch("S", 0), n_out, 4, nf=nf)
    with torch.no_grad():  # non-zero biases, so the folded bias column is exercised
        for layer in blk.layers():
            layer.bias.uniform_(-0.5, 0.5)
    return blk


def _grads(z, g, p, layers):
    params = [p]
    for layer in layers:
        params += [layer.weight, layer.bias]
    return torch.autograd.grad((z * g).sum(), params)


@pytest.mark.parametrize("n_out", [1, 16])
@pytest.mark.parametrize("rows,chunk", [(300, 64), (256, 256), (100, 4096)])
def test_float64_backward_equals_autograd(n_out, rows, chunk):
    """In float64 the hand-written backward is autograd's gradient up to rounding."""
    blk = _block(n_out)
    p = torch.rand(rows, 4, requires_grad=True)
    g = torch.randn(rows, n_out)
    fast = dense_mlp_bf16(p, blk.layers(), chunk=chunk, dtype=torch.float64)
    slow = dense_mlp_reference(p, blk.layers(), dtype=torch.float64)
    assert fast.dtype == torch.float32 and fast.shape == (rows, n_out)
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-6)
    for a, b in zip(_grads(fast, g, p, blk.layers()), _grads(slow, g, p, blk.layers()),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_out", [1, 16])
def test_bf16_matches_its_twin(n_out):
    """bfloat16: forward within one bf16 rounding of the twin (the two sum the bias in a
    different order), gradients within 3% (norm) of autograd through the twin.  The output
    gradient is positive so that sums over rows do not cancel (a cancelling sum of bf16 partial
    sums is only as exact as its largest partial sum)."""
    blk = _block(n_out, nf=32)
    p = torch.rand(5000, 4, requires_grad=True)
    g = torch.rand(5000, n_out) + 0.5
    fast = dense_mlp_bf16(p, blk.layers(), chunk=1024)
    slow = dense_mlp_reference(p, blk.layers())
    assert (fast - slow).abs().max() <= 2 ** -7 * slow.abs().max()
    for a, b in zip(_grads(fast, g, p, blk.layers()), _grads(slow, g, p, blk.layers()),
                    strict=True):
        assert (a - b).norm() <= 0.03 * b.norm()


def test_chunking_does_not_change_values():
    blk = _block(16)
    p = torch.rand(1000, 4)
    with torch.no_grad():
        ref = dense_mlp_bf16(p, blk.layers(), chunk=1000)
        for chunk in (7, 128, 333, 4096):
            assert torch.equal(dense_mlp_bf16(p, blk.layers(), chunk=chunk), ref)


def test_no_input_gradient_when_not_needed():
    blk = _block(1)
    p = torch.rand(50, 4)  # e.g. stage-1 patterns straight from the image
    dense_mlp_bf16(p, blk.layers(), chunk=16).sum().backward()
    assert p.grad is None and blk.conv1.weight.grad is not None


@pytest.mark.parametrize("spec", [mulut_sdy_x2(), rclut_paper()], ids=["mulut", "rclut"])
def test_network_in_bf16_stays_close_to_float32(spec):
    """Whole network, stated tolerance: the bf16 output (pixel values) differs from the
    float32 network's by less than 1.5 levels on average and keeps integer values."""
    torch.manual_seed(0)
    model = LUTNet(spec, nf=16)
    x = torch.randint(0, 256, (2, 1, 16, 16), generator=torch.Generator().manual_seed(1)) / 255.0
    ref = model(x)
    model.set_precision("bf16")
    low = model(x)
    assert torch.equal(low, low.round())
    assert (low - ref).abs().mean() < 1.5
    model.set_precision("float32")
    assert torch.equal(model(x), ref)  # switching back restores the float32 values exactly


def test_reused_buffers_change_no_value_and_are_never_shared_in_flight():
    """Calls of one shape reuse the buffers a finished call handed back (no fresh pages per
    step), and two calls in flight at once (forwards before their backwards) do not share any:
    values and gradients equal those of calls made one at a time."""
    from training.dense_mlp import _WORKSPACE

    blk = _block(16)
    ps = [torch.rand(300, 4, generator=torch.Generator().manual_seed(i), requires_grad=True)
          for i in range(2)]
    g = torch.rand(300, 16)

    def one_at_a_time(p):
        z = dense_mlp_bf16(p, blk.layers(), chunk=64)
        return z.detach(), _grads(z, g, p, blk.layers())

    alone = [one_at_a_time(p) for p in ps]
    key = ((5, 1 + 5 * 16, 64), torch.bfloat16, torch.device("cpu"))  # 300 rows: 5 chunks
    assert _WORKSPACE._free.get(key), "a finished call hands its features back"
    zs = [dense_mlp_bf16(p, blk.layers(), chunk=64) for p in ps]  # both in flight
    for (z_alone, grads_alone), z, p in zip(alone, zs, ps, strict=True):
        assert torch.equal(z, z_alone)
        for a, b in zip(_grads(z, g, p, blk.layers()), grads_alone, strict=True):
            assert torch.equal(a, b)
