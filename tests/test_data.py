from pathlib import Path

import numpy as np
import pytest
import torch

from elbogap.data import linear_gaussian, load_data
from elbogap.errors import UsageError


def test_digits_are_binary_and_split_reproducibly():
    first, second = load_data("digits"), load_data("digits")
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
    (np.zeros((0, 3)), "holds no data point"),
    (np.zeros((4, 0)), r"has rows but no values in them \(shape \(4, 0\)\)"),
    (np.array(1.0), "one row per data point"),
    (np.array([[1.0, 2.0], [0.0, np.nan]]),
     r"1 NaN or infinite value\(s\), the first at data row 2, column 2 \(counting from 1, a csv.s header line not "
     r"counted\)"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
])
def test_bad_arrays_are_named(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(UsageError, match=message):
        load_data(str(tmp_path / "bad.npy"))


def test_a_flat_array_is_one_value_per_data_point(tmp_path):
    """A tester's column of counts saved as a 1-D .npy was refused; it reads as a one-column .csv does."""
    np.save(tmp_path / "counts.npy", np.arange(10))
    data = load_data(str(tmp_path / "counts.npy"))
    assert data.train.shape[1] == 1 and len(data.train) + len(data.test) == 10


def test_an_empty_csv_is_refused_in_one_line_without_numpys_warning(tmp_path, recwarn):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UsageError, match=r"empty.csv holds no data point; provide at least one$"):
        load_data(str(tmp_path / "empty.csv"))  # it read "is empty (shape (0, 1))"
    assert not [warning for warning in recwarn if "no data" in str(warning.message)]


def test_a_csv_separated_by_semicolons_is_named_as_such(tmp_path):
    """A tester's file was refused as "'1;2;3;4' on line 2 ... is not a number", line 1 being the same."""
    (tmp_path / "semi.csv").write_text("1;2;3\n4;5;6\n")
    with pytest.raises(UsageError, match="its values are separated by ';', not commas"):
        load_data(str(tmp_path / "semi.csv"))


def test_a_csv_whose_rows_differ_in_width_is_named_by_its_line(tmp_path):
    (tmp_path / "ragged.csv").write_text("x,y,z\n1,2,3\n4,5,6\n7,8\n")
    with pytest.raises(UsageError, match="line 4 has 2 comma-separated values where line 1 has 3") as error:
        load_data(str(tmp_path / "ragged.csv"))
    assert "usecols" not in str(error.value)  # numpy's advice names its own argument, not ours


def test_a_csv_cell_that_is_not_a_number_is_named_by_its_line_and_column_in_the_file(tmp_path):
    """numpy counts the rows after the header from 0 and the columns from 1; the message counts both in the file."""
    (tmp_path / "words.csv").write_text("group,y,school\n0,8,1\n0,7,bx\n")
    with pytest.raises(UsageError, match="'bx' on line 3 of the file, column 3, is not a number"):
        load_data(str(tmp_path / "words.csv"))
    (tmp_path / "gap.csv").write_text("group,y,school\n0,8,1\n0,,2\n")
    with pytest.raises(UsageError, match="line 3 of the file, column 2, is empty .a missing value.; fill it in"):
        load_data(str(tmp_path / "gap.csv"))


def test_npz_with_several_unnamed_arrays_is_refused(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    with pytest.raises(UsageError, match="'train' and 'test'"):
        load_data(str(tmp_path / "two.npz"))


def write_fake_mnist(folder, num_train=30, num_test=10, gz=True):
    """Four IDX files in the MNIST layout, with grey levels 0..255."""
    from elbogap.idx import write_idx

    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, count in (("train", num_train), ("t10k", num_test)):
        write_idx(folder / f"{stem}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 4, 4)).astype(np.uint8))
        write_idx(folder / f"{stem}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, count).astype(np.uint8))
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx_files_gzipped_or_raw(tmp_path, gz):
    folder = write_fake_mnist(tmp_path / "mnist", gz=gz)
    data = load_data("mnist", data_dir=str(folder))
    assert data.train.shape == (30, 16) and data.test.shape == (10, 16)
    assert data.image_shape == (4, 4) and data.is_binary


def test_missing_idx_files_say_how_to_get_them(tmp_path):
    with pytest.raises(UsageError, match="dataset-fashion-mnist"):
        load_data("fashion-mnist", data_dir=str(tmp_path))
    with pytest.raises(UsageError, match="--data-dir"):
        load_data("mnist")
    with pytest.raises(UsageError, match="does not exist"):
        load_data("mnist", data_dir=str(tmp_path / "nowhere"))


def test_binarization_modes(tmp_path):
    folder = write_fake_mnist(tmp_path / "m", num_train=200, num_test=50)
    grey = load_data("mnist", data_dir=str(folder), binarize="none")
    threshold = load_data("mnist", data_dir=str(folder), binarize="threshold")
    assert torch.equal(threshold.train, (grey.train > 0.5).float())
    static = [load_data("mnist", data_dir=str(folder), binarize="static", data_seed=s) for s in (0, 0, 1)]
    assert torch.equal(static[0].train, static[1].train) and not torch.equal(static[0].train, static[2].train)
    # a Bernoulli draw: the mean of the 0/1 pixels matches the mean grey level
    assert float(static[0].train.mean()) == pytest.approx(float(grey.train.mean()), abs=0.02)
    dynamic = load_data("mnist", data_dir=str(folder), binarize="dynamic")
    assert dynamic.dynamic and torch.equal(dynamic.train, grey.train) and dynamic.is_binary
    assert set(dynamic.splits()["train"].unique().tolist()) == {0.0, 1.0}


def test_subsets_are_seeded_and_sized():
    first = load_data("digits", train_size=100, test_size=20, data_seed=3)
    again = load_data("digits", train_size=100, test_size=20, data_seed=3)
    assert first.train.shape == (100, 64) and first.test.shape == (20, 64)
    assert torch.equal(first.train, again.train)


def test_binarizing_data_outside_the_unit_interval_is_refused(tmp_path):
    np.save(tmp_path / "wide.npy", np.linspace(-2, 2, 40).reshape(10, 4))
    with pytest.raises(UsageError, match="--binarize none"):
        load_data(str(tmp_path / "wide.npy"), binarize="threshold")


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (CI installs it)")
def test_fashion_mnist_from_the_debian_package():
    data = load_data("fashion-mnist", train_size=500, test_size=100, binarize="static")
    assert data.train.shape == (500, 784) and data.test.shape == (100, 784) and data.image_shape == (28, 28)


def test_a_first_line_with_a_number_in_it_is_data_not_a_header(tmp_path):
    """A tester's file began 1.0,x: skipped as a header, its row was lost without a word. A first line is a header
    only where none of its cells is a number; otherwise its text cell is named, on line 1."""
    from elbogap.data import read_csv

    (tmp_path / "header.csv").write_text("height,weight\n1,2\n3,4\n")
    (tmp_path / "text.csv").write_text("1.0,x\n2,3\n")
    (tmp_path / "later.csv").write_text("a,b\n1,2\n3,y\n")
    assert read_csv(tmp_path / "header.csv").tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(UsageError, match="'x' on line 1 of the file, column 2, is not a number"):
        read_csv(tmp_path / "text.csv")
    with pytest.raises(UsageError, match="'y' on line 3 of the file, column 2"):
        read_csv(tmp_path / "later.csv")
