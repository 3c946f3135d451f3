"""Runs as Ray tasks (``--backend ray``), on a cluster or on a Ray started for the command.

Each run is one ``ray.remote`` task asking for ``--cpus-per-run`` CPUs and ``--gpus-per-run``
GPUs; Ray places it, in a worker process of its own. Tasks write their run directories to
``--out`` themselves, so ``--out`` must be a filesystem every node mounts:
:meth:`RayBackend.check_shared` proves it before any training. Only the small run records travel
back to the driver.
"""

import logging
import os
import socket
import uuid
from pathlib import Path

from elbogap.backends.task import Outcome, RunTask, execute
from elbogap.config import Config
from elbogap.errors import UsageError
from elbogap.where import where_am_i

#: seconds the driver gives running tasks to checkpoint after it cancels them
STOP_GRACE = 120


def _execute_on_node(config: dict, task: RunTask, threads: int, cwd: str, status: bool) -> Outcome:
    import ray

    return execute(config, task, threads, where_am_i("ray", ray.get_runtime_context().get_node_id()), cwd,
                   status=status)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:240] if text else type(error).__name__


def check_reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` nobody listens on at once (Ray itself would keep retrying for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "local", "auto" and ray:// addresses are Ray's to resolve
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise UsageError(f"cannot reach a Ray cluster at --ray-address {address}: {error.strerror or error}; start "
                         "one with 'ray start --head' or leave --ray-address unset to start Ray for this command"
                         ) from None


def _write_probe(path: str) -> str:
    Path(path).write_text(socket.gethostname())
    return socket.gethostname()


class RayBackend:
    """Submits every run at once; Ray runs as many as the cluster's free resources allow. With ``status``,
    each run writes how far it is to its run directory on the shared ``--out`` for the driver to read."""

    name = "ray"
    slots = float("inf")

    def __init__(self, config: Config, out: Path, status: bool = False):
        try:
            import ray
        except ImportError:
            raise UsageError("--backend ray needs Ray, which is not installed: pip install -e '.[ray]' "
                             "(with -c constraints.txt), or run with --backend local") from None
        self.ray = ray
        self.address = config.ray_address or os.environ.get("RAY_ADDRESS") or "local"
        self.started = not ray.is_initialized()
        if self.started:
            check_reachable(self.address)
            # without progress (-q, or the notebook API's progress=False), Ray's own notice that its cluster uses
            # token authentication (a warning of its logger) is not printed either; its errors are
            notices = logging.getLogger("ray._private.authentication")
            level = notices.level
            if not status:
                notices.setLevel(logging.ERROR)
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                reason = "; ".join(first_line(cause) for cause in (error, error.__cause__) if cause is not None)
                raise UsageError(f"cannot reach a Ray cluster at --ray-address {self.address}: {reason[:200]}; "
                                 "start one with 'ray start --head' or leave --ray-address unset to start Ray "
                                 "for this command") from None
            finally:
                notices.setLevel(level)
        self.config, self.status = config.to_dict(), status
        self.threads = config.cpus_per_run or 1
        # a worker process per run (max_calls=1): a run cancelled while it imports (a stop, another run's failure)
        # leaves half-imported modules behind, and a reused worker's next run met them (sympy without `printing`)
        self.remote = ray.remote(max_calls=1)(_execute_on_node).options(
            num_cpus=self.threads, num_gpus=config.gpus_per_run, max_retries=0)
        self.refs: dict = {}  # ObjectRef -> RunTask
        self.cwd = os.getcwd()
        # runs the cluster holds at once when the command starts (results.json's "workers"; Ray may grow it)
        resources = ray.cluster_resources()
        held = resources.get("CPU", 0) // self.threads
        if config.gpus_per_run:
            held = min(held, resources.get("GPU", 0) // config.gpus_per_run)
        self.concurrent_runs = max(1, int(held))
        self.check_shared(Path(out))

    def check_shared(self, out: Path) -> None:
        """Have a task on every alive node write a file into ``out``; refuse if the driver cannot see one."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray, token = self.ray, uuid.uuid4().hex[:8]
        out = out.resolve()
        nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
        probes = {node: out / f".elbogap-probe-{token}-{node[:8]}" for node in nodes}
        writer = ray.remote(_write_probe)
        refs = {node: writer.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node, soft=False)).remote(str(path)) for node, path in probes.items()}
        try:
            for node, ref in refs.items():
                try:
                    host = ray.get(ref, timeout=120)
                except ray.exceptions.RayTaskError as error:
                    cause = error.cause if isinstance(error.cause, OSError) else error
                    raise UsageError(f"a Ray task on node {node[:8]} cannot write to --out {out} "
                                     f"({getattr(cause, 'strerror', None) or cause}); put --out on a filesystem "
                                     "every node mounts, writable by the Ray workers") from None
                if not probes[node].is_file():
                    raise UsageError(f"--out {out} is not shared with Ray node {node[:8]} ({host}): a file a task "
                                     "wrote there is not seen here; put --out on a filesystem every node mounts")
        finally:
            for path in probes.values():
                path.unlink(missing_ok=True)

    def submit(self, task: RunTask) -> None:
        self.refs[self.remote.remote(self.config, task, self.threads, self.cwd, self.status)] = task

    def wait(self, timeout: float) -> list[Outcome]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        return [self._outcome(ref, self.refs.pop(ref)) for ref in ready]

    def _outcome(self, ref, task: RunTask) -> Outcome:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.TaskCancelledError:
            return Outcome(task, "cancelled")
        except self.ray.exceptions.RayError as error:  # the worker or its node died
            return Outcome(task, "error", f"its Ray task failed: {str(error).strip().splitlines()[0][:300]}")

    def stop(self, signum: int) -> None:
        """Cancel every task: queued ones never start; running ones get SIGINT, checkpoint and return."""
        for ref in self.refs:
            self.ray.cancel(ref, force=False)

    def close(self) -> None:
        if self.refs:  # left running after an error elsewhere: give them their checkpoint, then go
            self.stop(0)
            self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=STOP_GRACE)
        if self.started:
            self.ray.shutdown()
