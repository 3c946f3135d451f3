import importlib.util
from pathlib import Path

import pyro
import pytest
import torch

from elbogap.model import LinearGaussian


def pytest_configure(config):
    """One intra-op thread for the tests' small tensors, here and in the subprocesses they start.

    On two cores, torch's second thread costs more in synchronisation than it saves on tensors
    this small (a 16 x 16 tril: 0.5 ms with two threads, 2 us with one); studies started by the
    tests in worker processes or on Ray set their own threads as users' studies do.
    """
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups off the markers
def pytest_collection_modifyitems(items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``), the backend tests run in one worker: they share one Ray
    cluster, which its session fixture starts with ``ray start --head`` and stops with ``ray stop``."""
    for item in items:
        if "backends" in item.path.parts:
            item.add_marker(pytest.mark.xdist_group("backends"))


@pytest.fixture
def elbogap(capsys):
    """The command line run in this process: ``elbogap(*args)`` gives ``(exit status, stderr)``.

    Cheaper than a subprocess (no second import of torch); the entry point itself is run as a
    subprocess in the tests that start it as users do.
    """
    from elbogap.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit:  # argparse's usage errors
            code = exit.code
        return code, capsys.readouterr().err

    return run


@pytest.fixture(autouse=True)
def fresh_pyro_state():
    """Every test starts from an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def known_linear_model(dtype=torch.float64) -> LinearGaussian:
    """PPCA with a fixed, known, non-orthogonal W, so the exact posterior is tilted (not diagonal)."""
    weight = torch.tensor([[1.0, 0.8], [0.5, 1.2], [-0.3, 0.4], [0.9, 0.7], [0.2, -0.6]], dtype=dtype)
    bias = torch.tensor([0.5, -1.0, 0.0, 0.3, 2.0], dtype=dtype)
    return LinearGaussian.from_params(weight, bias, 0.7).to(dtype)


def wide_linear_model(latent_dim: int = 8, data_dim: int = 12, seed: int = 0) -> LinearGaussian:
    """PPCA with a random W: a tilted posterior in more latent dimensions than a small encoder's features."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
    return LinearGaussian.from_params(weight, torch.zeros(data_dim, dtype=torch.float64), 0.7).double()


def low_rank_posterior_model(latent_dim: int = 8, rank: int = 1, seed: int = 0) -> LinearGaussian:
    r"""PPCA whose posterior covariance is :math:`S = D + U U^\top` (low rank plus diagonal), so ``lowrank`` holds it.

    :math:`\sigma^2 M^{-1} = S` where :math:`W^\top W = \sigma^2 (S^{-1} - I)`, which is positive
    definite for the small ``D`` and ``U`` drawn here (every eigenvalue of :math:`S` below one).
    """
    generator = torch.Generator().manual_seed(seed)
    cov_diag = 0.05 + 0.1 * torch.rand(latent_dim, generator=generator, dtype=torch.float64)
    cov_factor = 0.3 * torch.randn(latent_dim, rank, generator=generator, dtype=torch.float64)
    covariance = torch.diag(cov_diag) + cov_factor @ cov_factor.T
    sigma = 0.7
    gram = sigma**2 * (torch.linalg.inv(covariance) - torch.eye(latent_dim, dtype=torch.float64))
    weight = torch.linalg.cholesky(gram).T  # W^T W = gram
    return LinearGaussian.from_params(weight, torch.zeros(latent_dim, dtype=torch.float64), sigma).double()


@pytest.fixture
def linear_model() -> LinearGaussian:
    return known_linear_model()


@pytest.fixture
def linear_data(linear_model) -> torch.Tensor:
    """200 draws from the known linear model."""
    return draw_linear_data(linear_model, 200)


def diag_gap_closed_form(model: LinearGaussian) -> float:
    """Best mean-field gap for PPCA: 1/2 (sum_i log M_ii - log det M), M = W^T W + sigma^2 I."""
    precision = model.precision_matrix()
    return float(0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)))


def optimal_diag_guide(model: LinearGaussian, scale_factor: float = 1.0):
    """The best mean-field Gaussian for PPCA, set in closed form on a linear encoder.

    Mean :math:`M^{-1} W^\\top (x - b)` (the posterior mean) and variances
    :math:`\\sigma^2 / M_{ii}` (the inverse diagonal of the posterior precision), the latter
    multiplied by ``scale_factor**2`` to make a deliberately worse guide.
    """
    from elbogap.guides import build_guide

    guide = build_guide("diag", model, 1, hidden_dims=()).to(torch.float64)
    precision = model.precision_matrix()
    gain = torch.linalg.solve(precision, model.weight.T)
    scale = scale_factor * model.sigma / precision.diagonal().sqrt()
    with torch.no_grad():
        guide.loc.weight.copy_(gain)
        guide.loc.bias.copy_(-gain @ model.bias)
        guide.scale.weight.zero_()
        guide.scale.bias.copy_(torch.log(torch.expm1(scale - 1e-4)))  # inverse of softplus + floor
    return guide


def draw_linear_data(model: LinearGaussian, num_points: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(num_points, model.latent_dim, generator=generator, dtype=torch.float64)
    noise = torch.randn(num_points, model.data_dim, generator=generator, dtype=torch.float64)
    return z @ model.weight.T + model.bias + model.sigma * noise


def load_script(path: Path):
    """A script (examples/, scripts/) loaded as a module, so a test can call its ``main(parse_args([...]))``."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
