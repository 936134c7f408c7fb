"""Upscale many images on a Dask cluster (the ``dask`` extra: ``pip install 'rclut_numba[dask]'``).

    rclut upscale photos/ --out-dir out/ -r --dask tcp://scheduler:8786

or from Python::

    from distributed import Client
    from rclut_numba import load_model
    from rclut_numba.dask_batch import upscale_items

    with Client("tcp://scheduler:8786") as client:
        for src, line, error in upscale_items(client, load_model(), [(src, dst), ...]):
            ...

The model goes to every worker once: :func:`ship_model` broadcasts its tables
(``Client.scatter(broadcast=True)``), every task holds only a reference to them, and each worker
process builds its :class:`~rclut_numba.engine.LutModel` from them once and keeps it
(:func:`worker_model`).  Images go in batches per task (a task costs the scheduler about a
millisecond, an image tens of them).  On the worker each image is read, upscaled and written by
:func:`rclut_numba.cli.upscale_file`, as by the local ``rclut upscale``: the same bytes, the same
atomic writes, and the same one-line error per failed file, handed back to the caller.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .engine import LutModel
from .imaging import DEFAULT_MAX_PIXELS
from .spec import ModelSpec

BATCH = 8  # images per task
KEPT_MODELS = 4  # models a worker process keeps built (a long-lived cluster sees several)


@dataclass(frozen=True)
class ShippedModel:
    """What a worker needs to build the model: its spec and tables (no compiled state)."""
    token: str  # names this model and arithmetic: a worker builds each token once
    spec: ModelSpec
    arrays: dict[str, np.ndarray]
    source: str
    arithmetic: str


def _token(model: LutModel) -> str:
    digest = hashlib.sha256(model.spec.to_json().encode())
    digest.update(model.arithmetic.encode())
    for name in sorted(model.arrays):
        a = np.ascontiguousarray(model.arrays[name])
        digest.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def ship_model(client, model: LutModel):
    """Broadcast ``model``'s tables to every worker of ``client``'s cluster: a Future that
    tasks take as an argument (workers that join later fetch it from a peer)."""
    shipped = ShippedModel(_token(model), model.spec, model.arrays, model.source,
                           model.arithmetic)
    return client.scatter(shipped, broadcast=True, hash=False)


_built: dict[str, LutModel] = {}
_built_lock = threading.Lock()
builds = 0  # models built in this process (tests check that a batch builds one)


def worker_model(shipped: ShippedModel) -> LutModel:
    """The model ``shipped`` describes, built once per worker process and kept."""
    global builds
    with _built_lock:
        model = _built.get(shipped.token)
        if model is None:
            if len(_built) >= KEPT_MODELS:
                _built.pop(next(iter(_built)))  # the oldest
            model = LutModel(shipped.spec, shipped.arrays, shipped.source,
                             arithmetic=shipped.arithmetic)
            _built[shipped.token] = model
            builds += 1
    return model


def _upscale_batch(shipped: ShippedModel, pairs: list[tuple[Path, Path]], force: bool,
                   luma_only: bool, max_pixels: int | None,
                   threads: int) -> list[tuple[Path, str | None, str | None]]:
    """A task: each (input, output) pair upscaled on the worker; (src, line, error) each."""
    from .cli import FileFailed, upscale_file
    model = worker_model(shipped)
    results = []
    for src, dst in pairs:
        try:
            line = upscale_file(model, src, dst, force=force, luma_only=luma_only,
                                max_pixels=max_pixels, threads=threads)
            results.append((src, line, None))
        except FileFailed as e:
            results.append((src, None, str(e)))
    return results


def upscale_items(client, model: LutModel, items: Sequence[tuple[Path, Path]], *,
                  force: bool = False, luma_only: bool = False,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, threads: int | None = None,
                  batch: int = BATCH) -> Iterator[tuple[Path, str | None, str | None]]:
    """Upscale every (input, output) pair on ``client``'s cluster; yields ``(input, result
    line, None)`` or ``(input, None, one-line error)`` per pair as its task finishes.

    Paths must mean the same file on every worker (a shared file system).  ``threads``: numba
    threads per image (default 1: a worker's task slots already run images side by side).
    A task that fails as a whole (a worker lost) is reported against each of its inputs."""
    from distributed import as_completed
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    shipped = ship_model(client, model)
    batches = {}
    for i in range(0, len(items), batch):
        pairs = [(Path(src), Path(dst)) for src, dst in items[i:i + batch]]
        future = client.submit(_upscale_batch, shipped, pairs, force, luma_only, max_pixels,
                               threads or 1, pure=False)
        batches[future] = pairs
    for future in as_completed(list(batches)):
        pairs = batches.pop(future)
        try:
            yield from future.result()
        except Exception as e:  # the task itself failed: every input of it did
            message = " ".join(str(e).split()) or type(e).__name__
            for src, _ in pairs:
                yield src, None, f"{src}: its Dask task failed: {message}"
