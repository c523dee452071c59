"""Predict images stored in a file on a Dask cluster, block by block.

Run:  python examples/dask_predict.py      (needs: pip install "skcnn[dask]")

A CNN fitted in memory predicts test images read from a .npy file by the
workers of a ``dask.distributed`` cluster -- here a LocalCluster of two
worker processes, one thread each; a real cluster only changes the address.
Each worker reads and predicts whole blocks of rows, so no process ever
holds more than a few blocks: the same code predicts a file larger than
any one machine's memory. The labels are the same as ``clf.predict`` on the
images in memory.
"""

import tempfile
import time
from collections import Counter
from pathlib import Path

import dask.array as da
import numpy as np
from dask.distributed import Client, LocalCluster, get_task_stream
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skcnn import CNNClassifier
from skcnn.dask import predict_blocks


class NpyRows:
    """The rows of a .npy file, read by the task that needs them.

    ``da.from_array(np.load(path, mmap_mode="r"))`` would put the memory map
    into the task graph, and a memory map pickles as its whole contents:
    the file would travel to the workers through the scheduler. This object
    pickles as its path instead, and each block's task maps the file and
    reads its own rows, so the file must be at the same path on every
    worker (a shared file system; for a cluster, zarr or HDF5 are the usual
    formats, see ``da.from_zarr``).
    """

    def __init__(self, path):
        self.path = str(path)
        rows = np.load(self.path, mmap_mode="r")  # reads the header only
        self.shape, self.dtype, self.ndim = rows.shape, rows.dtype, rows.ndim

    def __getitem__(self, index):
        return np.load(self.path, mmap_mode="r")[index]


def main(block_rows=128):
    X, y = load_digits(return_X_y=True)
    images = (X / 16).astype(np.float32).reshape(-1, 8, 8, 1)  # (n, H, W, C)
    X_train, X_test, y_train, y_test = train_test_split(
        images, y, test_size=0.5, random_state=0, stratify=y
    )
    # a small network: it converges in about a second
    clf = CNNClassifier(
        conv_filters=(16,), batch_size=32, learning_rate_init=3e-3, tol=1e-3,
        random_state=0,
    )  # fmt: skip
    clf.fit(X_train, y_train)
    with (
        tempfile.TemporaryDirectory() as directory,
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        path = Path(directory) / "X_test.npy"
        np.save(path, X_test)
        # chunked along the samples only: each block holds whole images
        X_file = da.from_array(
            NpyRows(path), chunks=(block_rows, -1, -1, -1), inline_array=True
        )
        lazy = [
            predict_blocks(clf, X_file),  # lazy: nothing has run yet
            predict_blocks(clf, X_file, method="predict_proba"),
        ]
        start = time.perf_counter()
        with get_task_stream(client) as tasks:
            labels, proba = client.gather(client.compute(lazy))
        seconds = time.perf_counter() - start
    names = {result.name for result in lazy}
    blocks = Counter(task["worker"] for task in tasks.data if task["key"][0] in names)
    accuracy = np.mean(labels == y_test)
    same = np.array_equal(labels, clf.predict(X_test))
    gap = np.abs(proba - clf.predict_proba(X_test)).max()
    print(f"{len(X_test)} images in {X_file.numblocks[0]} blocks of {block_rows} rows")
    print(f"{sum(blocks.values())} block tasks (2 methods), {len(blocks)} workers")
    print(f"done in {seconds:.1f} s; test accuracy: {accuracy:.4f}")
    print(f"labels as clf.predict in memory: {same}")
    print(f"probabilities within {gap:.1e} of clf.predict_proba in memory")
    return {"clf": clf, "X_test": X_test, "labels": labels, "accuracy": accuracy}


if __name__ == "__main__":
    main()
