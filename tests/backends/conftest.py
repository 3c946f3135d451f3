import os
import shutil
import socket
import subprocess
import sys

import pytest

#: small sweeps: tiny evaluation, 300 training points, no figures
QUICK = ["--eval-samples", "16", "--quadrature-points", "12", "--curve-points", "32", "--gap-points", "0",
         "--quiet", "--no-figures", "--train-size", "300", "--test-size", "60", "--cpus-per-run", "1"]

#: a plain Pyro VAE on the 64 digits pixels that sleeps 0.1 s per call while the file FLAG exists,
#: so a test can stop a sweep mid-training without racing it; the numbers never depend on FLAG
SLOWABLE_MODEL = '''
import os
import time

import pyro
import pyro.distributions as dist
import torch
from torch import nn

decoder = nn.Sequential(nn.Linear(2, 16), nn.Softplus(), nn.Linear(16, 64))


def model(x):
    if os.path.exists({flag!r}):
        time.sleep(0.1)
    pyro.module("decoder", decoder)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)
'''

NAN_MODEL = '''
import pyro
import pyro.distributions as dist
import torch
from torch import nn

decoder = nn.Linear(2, 64)
calls = [0]


def model(x):
    pyro.module("decoder", decoder)
    calls[0] += 1
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        logits = decoder(z)
        if calls[0] > 25:  # a fault injected after 25 calls: the likelihood turns NaN
            logits = logits * float("nan")
        pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)
'''


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """A Ray cluster started as users start one, ``ray start --head`` with 2 CPUs; the address to join it."""
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    started = subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--port", str(port),
                              "--include-dashboard", "false", "--disable-usage-stats"],
                             capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    import ray as ray_core

    try:  # this process stays connected, so the sweeps run in it reuse warm workers
        ray_core.init(address="auto", include_dashboard=False, log_to_driver=False)
        yield "auto"  # the cluster started on this machine, as in the README
    finally:
        ray_core.shutdown()
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """The slowable and the NaN model as files, and the flag that slows the first one down."""
    root = tmp_path_factory.mktemp("programs")
    flag = root / "slow"
    (root / "slowable.py").write_text(SLOWABLE_MODEL.format(flag=str(flag)))
    (root / "nan.py").write_text(NAN_MODEL)
    return {"slowable": f"{root / 'slowable.py'}:model", "nan": f"{root / 'nan.py'}:model", "flag": flag}


@pytest.fixture
def backend_flags(request):
    """The command-line flags that pick a backend by its test name: serial, jobs (2 processes) or ray."""

    def flags(name: str) -> list[str]:
        if name == "ray":
            return ["--backend", "ray", "--ray-address", request.getfixturevalue("ray_address")]
        return {"serial": ["--jobs", "1"], "jobs": ["--jobs", "2"]}[name]

    return flags
