"""Our MMIDIDX writer/reader: round trip, byte compatibility with megatron-core, atomic writes."""
import os

import numpy as np
import pytest

from mindr1.data.indexed import IndexedReader, IndexedWriter


def _docs(seed=0, n=50, high=151000):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, high, size=int(rng.integers(1, 40)), dtype=np.int64) for _ in range(n)]


def _write(prefix, docs, dtype=np.int32):
    writer = IndexedWriter(str(prefix), dtype)
    writer.add_documents(np.concatenate(docs[:20]), [d.size for d in docs[:20]])
    writer.add_documents(np.concatenate(docs[20:]), [d.size for d in docs[20:]])
    writer.finalize()
    writer.commit()


@pytest.mark.parametrize("dtype", [np.int32, np.uint16])
def test_round_trip(tmp_path, dtype):
    docs = _docs(high=60000)
    _write(tmp_path / "d", docs, dtype)
    reader = IndexedReader(str(tmp_path / "d"))
    assert len(reader) == len(docs) and reader.dtype == dtype
    for got, want in zip((reader[i] for i in range(len(reader))), docs):
        np.testing.assert_array_equal(got, want)


def test_identical_to_megatron_builder_and_read_by_megatron(tmp_path):
    torch = pytest.importorskip("torch")
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    docs = _docs(1)
    _write(tmp_path / "ours", docs)
    builder = IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=np.int32)
    for d in docs:
        builder.add_item(torch.tensor(d))
        builder.end_document()
    builder.finalize(str(tmp_path / "theirs.idx"))
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"ours{ext}").read_bytes() == (tmp_path / f"theirs{ext}").read_bytes()
    ds = IndexedDataset(str(tmp_path / "ours"))
    assert len(ds) == len(docs)
    np.testing.assert_array_equal(ds.document_indices, np.arange(len(docs) + 1))
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(ds[i], d)


def test_abort_leaves_nothing(tmp_path):
    writer = IndexedWriter(str(tmp_path / "x"))
    writer.add_documents(np.arange(5), [2, 3])
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_lengths_must_match(tmp_path):
    writer = IndexedWriter(str(tmp_path / "x"))
    with pytest.raises(ValueError, match="lengths sum to 4 but 5 tokens"):
        writer.add_documents(np.arange(5), [2, 2])
    writer.abort()
