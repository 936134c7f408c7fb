"""Batches on a Dask cluster: a LocalCluster in this process (threads, two workers).

The outputs must equal a local ``rclut upscale`` byte for byte, failures must come back per
file with the CLI's messages and exit code, and the model must be built once per worker
process, not per image.
"""
import imageio.v3 as iio
import numpy as np
import pytest

distributed = pytest.importorskip(
    "distributed", reason="the dask extra is not installed (pip install -e '.[dask]')")

from rclut_numba import dask_batch, load_model
from rclut_numba.cli import main


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(5)
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    iio.imwrite(d / "rgb.png", rng.integers(0, 256, (13, 9, 3), dtype=np.uint8))
    iio.imwrite(d / "gray.png", rng.integers(0, 256, (7, 11), dtype=np.uint8))
    iio.imwrite(d / "sub" / "rgba.png", rng.integers(0, 256, (6, 5, 4), dtype=np.uint8))
    (d / "broken.png").write_text("not an image")
    return d


def _without_compile_notice(err: str) -> str:
    return "".join(line for line in err.splitlines(keepends=True)
                   if "compiling the numba kernels" not in line)


def _outputs(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("extra", [[], ["--luma-only"]], ids=["rgb", "luma-only"])
def test_folder_on_dask_equals_local_run_and_reports_each_failure(client, folder, tmp_path,
                                                                  capsys, extra):
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    assert main(["upscale", str(folder), "--out-dir", str(local), "-r", *extra]) == 1
    local_err = capsys.readouterr().err
    assert main(["upscale", str(folder), "--out-dir", str(remote), "-r", *extra,
                 "--dask", client.scheduler.address]) == 1
    out, err = capsys.readouterr()
    assert _outputs(remote) == _outputs(local)
    assert len(_outputs(remote)) == 3
    assert sorted(line.split(" -> ")[0] for line in out.splitlines()) == sorted(
        str(folder / name) for name in ("rgb.png", "gray.png", "sub/rgba.png"))
    # the same one-line error for the broken file, and the same summary, as the local run (a
    # cold numba cache adds a compile notice to whichever run compiles first)
    assert _without_compile_notice(err) == _without_compile_notice(local_err)
    assert f"{folder / 'broken.png'}: not an image file" in err
    assert err.strip().endswith(f"1 of 4 inputs failed: {folder / 'broken.png'}")


def test_the_model_ships_once_to_every_worker_and_is_built_once(client, folder, tmp_path):
    model = load_model()
    image = iio.imread(folder / "rgb.png")
    items = []
    for i in range(10):
        (tmp_path / f"{i}.png").write_bytes((folder / "rgb.png").read_bytes())
        items.append((tmp_path / f"{i}.png", tmp_path / f"{i}_x4.png"))
    dask_batch._built.clear()
    before = dask_batch.builds
    results = list(dask_batch.upscale_items(client, model, items, batch=3))
    assert [error for _, _, error in results] == [None] * 10
    # one build for 4 tasks of 10 images: both in-process workers share this module
    assert dask_batch.builds - before == 1
    expected = model.upscale(image)
    for _, dst in items:
        assert np.array_equal(iio.imread(dst), expected)
    shipped = dask_batch.ship_model(client, model)
    assert set(client.who_has(shipped)[shipped.key]) == set(client.scheduler_info()["workers"])


def test_a_failed_task_is_reported_against_each_of_its_inputs(client, tmp_path, monkeypatch):
    def lost_worker(*args):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(dask_batch, "_upscale_batch", lost_worker)
    items = [(tmp_path / f"{i}.png", tmp_path / f"{i}_x4.png") for i in range(3)]
    results = list(dask_batch.upscale_items(client, load_model(), items, batch=2))
    assert sorted(src for src, _, _ in results) == [src for src, _ in items]
    assert all(line is None and error == f"{src}: its Dask task failed: worker lost"
               for src, line, error in results)
