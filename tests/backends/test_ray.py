"""The Ray backend's own promises: refusals in one line, a shared --out proven before training (a sweep on Ray, its
numbers and the node of each run: tests/backends/test_sweep.py)."""

import subprocess
import sys

from tests.backends.conftest import QUICK

SWEEP = ["compare", "--guides", "diag", "--seeds", "0", "--steps", "10", *QUICK]


def test_without_ray_installed_the_ray_backend_is_refused_naming_the_extra(tmp_path):
    hide_ray = "import sys; sys.modules['ray'] = None; from elbogap.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", hide_ray, *SWEEP, "--backend", "ray", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "pip install -e '.[ray]'" in result.stderr and "--backend local" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_an_unreachable_cluster_is_refused_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "elbogap.cli", *SWEEP, "--backend", "ray",
                             "--ray-address", "127.0.0.1:1", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "cannot reach a Ray cluster at --ray-address 127.0.0.1:1" in result.stderr.strip().splitlines()[-1]


def test_an_out_the_workers_do_not_share_is_refused_before_training(ray_address, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # the driver alone sees a private tmpfs over --out (its own mount namespace); the cluster's workers see the disk
    command = (f"mount -t tmpfs none {out} && exec {sys.executable} -m elbogap.cli "
               + " ".join([*SWEEP, "--backend", "ray", "--ray-address", ray_address, "--out", str(out)]))
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "is not shared with Ray node" in last and "a filesystem every node mounts" in last
    assert not (out / "runs").exists() and not (out / "results.json").exists()
