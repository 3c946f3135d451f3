import numpy as np
import pytest
import torch

from elbogap.data import digits, linear_gaussian, load_data
from elbogap.errors import UsageError


def test_digits_are_binary_and_split_reproducibly():
    first, second = digits(), digits()
    assert first.train.shape == (1438, 64) and first.test.shape == (359, 64)
    assert first.is_binary
    assert torch.equal(first.test, second.test)


def test_linear_gaussian_records_its_generating_parameters():
    data = linear_gaussian()
    assert set(data.truth) == {"weight", "bias", "sigma"}
    assert not data.is_binary and data.data_dim == data.truth["weight"].shape[0]


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".npz"])
def test_user_files_load_as_float_matrices(tmp_path, suffix):
    array = np.random.default_rng(0).integers(0, 2, size=(50, 2, 3)).astype(float)
    path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, array)
    elif suffix == ".npz":
        np.savez(path, images=array)
    else:
        np.savetxt(path, array.reshape(50, 6), delimiter=",", header="a,b,c,d,e,f", comments="")
    data = load_data(str(path))
    assert data.train.shape == (40, 6) and data.test.shape == (10, 6) and data.is_binary


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((0, 3)), "empty"),
    (np.array([1.0, 2.0]), "one row per data point"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or infinite"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
])
def test_bad_arrays_are_named(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(UsageError, match=message):
        load_data(str(tmp_path / "bad.npy"))


def test_npz_with_several_unnamed_arrays_is_refused(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    with pytest.raises(UsageError, match="'train' and 'test'"):
        load_data(str(tmp_path / "two.npz"))
