"""The flat array container of checkpointed detector state."""

from __future__ import annotations

import io

import numpy as np
import pytest

from sluice.models.detectors.state_blob import MAGIC, pack, unpack


def test_round_trip_keeps_dtypes_shapes_and_is_writable() -> None:
    arrays = {
        "a": np.arange(12, dtype=np.float64).reshape(3, 4),
        "b": np.array([True, False]),
        "c": np.zeros((0, 2), dtype=np.float32),
        "d": np.arange(5, dtype=np.uint32)[::2],  # not contiguous
    }
    got = unpack(pack(arrays))
    assert list(got) == list(arrays)
    for name, value in arrays.items():
        assert got[name].dtype == value.dtype
        np.testing.assert_array_equal(got[name], value)
    got["a"][0, 0] = 7.0  # restored state is updated in place


def test_reads_npz_written_by_earlier_versions() -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.arange(3))
    np.testing.assert_array_equal(unpack(buf.getvalue())["x"], np.arange(3))


@pytest.mark.parametrize("blob", [MAGIC + b"\x01", pack({"x": np.arange(4)})[:-3], b"garbage"])
def test_damaged_blobs_raise_value_error(blob: bytes) -> None:
    with pytest.raises((ValueError, OSError)):
        unpack(blob)


def test_object_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="objects"):
        pack({"x": np.array(["a", None], dtype=object)})


def test_large_packings_are_compressed_and_read_back() -> None:
    from sluice.models.detectors.state_blob import COMPRESS_FROM, LZ4_MAGIC

    arrays = {"rows": np.zeros((COMPRESS_FROM, 4)), "n": np.arange(10, dtype=np.int32)}
    blob = pack(arrays)
    assert blob.startswith(LZ4_MAGIC) and len(blob) < COMPRESS_FROM
    got = unpack(blob)
    np.testing.assert_array_equal(got["rows"], arrays["rows"])
    got["n"][0] = 5  # writable
    with pytest.raises(ValueError, match="compressed"):
        unpack(blob[: len(blob) // 2])
