import gzip

import numpy as np
import pytest

from elbogap.idx import read_idx, write_idx


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, name, dtype):
    array = (np.arange(2 * 3 * 4) % 200).reshape(2, 3, 4).astype(dtype)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.shape == (2, 3, 4) and np.array_equal(back, array)


def test_idx_header_is_the_published_format(tmp_path):
    """Magic 0x00000803 for 3-D unsigned bytes, then big-endian sizes, then the pixels."""
    write_idx(tmp_path / "a", np.zeros((1, 2, 2), dtype=np.uint8))
    assert (tmp_path / "a").read_bytes()[:16] == bytes.fromhex("00000803" "00000001" "00000002" "00000002")


def test_bad_magic_and_truncation_are_named(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short.gz", np.zeros((3, 2, 2), dtype=np.uint8))
    raw = gzip.decompress((tmp_path / "short.gz").read_bytes())
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")
