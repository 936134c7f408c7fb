"""training.synthetic: drawn HR patches and their bicubic LR, mixed into the training batches."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rclut_numba.bicubic import downscale
from training.data import DataError, SRDataset, synthetic_images
from training.synthetic import KINDS, draw_patch, synthetic_pair


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_draws_visible_edges_reproducibly(kind):
    for seed in range(8):
        patch = draw_patch(np.random.default_rng(seed), 96, kind)
        assert patch.shape == (96, 96) and patch.dtype == np.uint8
        assert np.array_equal(patch, draw_patch(np.random.default_rng(seed), 96, kind))
    # over a few seeds the kind yields content with strong edges, not a flat square
    steps = [np.abs(np.diff(draw_patch(np.random.default_rng(s), 96, kind).astype(int), axis=1))
             .max() for s in range(8)]
    assert max(steps) >= 30
    assert not np.array_equal(draw_patch(np.random.default_rng(0), 96, kind),
                              draw_patch(np.random.default_rng(1), 96, kind))


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown synthetic kind 'text'"):
        draw_patch(np.random.default_rng(0), 32, "text")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pair_lr_is_the_bicubic_of_its_hr(scale):
    lr, hr = synthetic_pair(np.random.default_rng(7), 12, scale)
    assert hr.shape == (12 * scale, 12 * scale) and lr.shape == (12, 12)
    assert np.array_equal(lr, downscale(hr, scale))


def test_synthetic_share_replaces_samples_and_keeps_the_others(tmp_path):
    synthetic_images(tmp_path / "img", n=3, size=80)
    quiet = {"log": lambda _s: None, "seed": 5}
    plain = SRDataset([tmp_path / "img"], 4, 8, tmp_path / "cache", **quiet)
    mixed = SRDataset([tmp_path / "img"], 4, 8, tmp_path / "cache", synthetic_share=0.5, **quiet)
    both = SRDataset([tmp_path / "img"], 4, 8, tmp_path / "cache", synthetic_share=0.5,
                     flat_share=0.3, **quiet)
    n_drawn = 0
    for step in range(6):
        lr, hr = plain.batch(step, 8)
        lr_m, hr_m = mixed.batch(step, 8)
        assert torch.equal(mixed.batch(step, 8, rank=1, world=2)[1], hr_m[4:])
        lr_b, hr_b = both.batch(step, 8)
        for i in range(8):
            if torch.equal(lr_m[i], lr[i]) and torch.equal(hr_m[i], hr[i]):
                continue  # not replaced: the sample of a run without drawn patches
            n_drawn += 1
            # a drawn sample: its LR is the bicubic of its HR (not a crop of the images)
            hr_u8 = (hr_m[i, 0] * 255).round().to(torch.uint8).numpy()
            assert np.array_equal((lr_m[i, 0] * 255).round().to(torch.uint8).numpy(),
                                  downscale(hr_u8, 4))
            flat = torch.all(hr_b[i] == hr_b[i].flatten()[0])
            # with flat crops as well, a drawn sample is either the same drawing or flat
            assert flat or (torch.equal(lr_b[i], lr_m[i]) and torch.equal(hr_b[i], hr_m[i]))
    assert 12 <= n_drawn <= 36  # about half of 48
    with pytest.raises(DataError, match="synthetic_share"):
        SRDataset([tmp_path / "img"], 4, 8, tmp_path / "cache", synthetic_share=1.0)
