"""A real single-node Slurm for the `slurm` tests, and the small sweep the launch tests share.

`slurm_cluster` (session-scoped): installs Debian's slurm-wlm, munge, slurmdbd and mariadb-server
with apt when they are missing (root; the tests fail, not skip, when that is impossible), writes a
slurm.conf for this host under a temporary folder, starts munged, mariadbd, slurmdbd (accounting,
so `sacct` and submitit see cancelled jobs), slurmctld and slurmd as plain processes on free
ports, and stops them by PID at the end. Clients find it through SLURM_CONF.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from algoperf.workloads.mnist import input_pipeline as mnist

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel", "sacct", "sacctmgr")
TOOLS = ("mungekey", "munge", "unmunge", "mariadb-install-db", "mariadb", "mariadb-admin")
SBIN = ("/usr/sbin", "/sbin")
CRED_EXPIRE_S = 10
"""Slurm holds a requeued job for cred_expire + 1 s (default 120); 5 is the least accepted."""


class SlurmUnavailable(RuntimeError):
    """Slurm could not be installed or started here; the message says why."""


def which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN:
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return None


def install() -> float:
    """apt-get install the packages if a program is missing; returns the seconds it took."""
    missing = [name for name in DAEMONS + CLIENTS + TOOLS if which(name) is None]
    if not missing:
        return 0.0
    start = time.time()
    apt = f"apt-get install -y --no-install-recommends {' '.join(PACKAGES)}"
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"Slurm is not installed ({missing[0]} missing); as root: {apt}")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"Slurm is not installed and there is no apt-get: {apt}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # The postinsts would start munge/slurm/mariadb with /etc's defaults; policy-rc.d stops that.
    policy = pathlib.Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        candidate = subprocess.run(
            ["apt-cache", "policy", "slurmctld"], capture_output=True, text=True, env=env
        ).stdout
        if "Candidate: (none)" in candidate or "Candidate:" not in candidate:
            _run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=300"], env=env, timeout=600)
        # (waits for a dpkg lock another apt holds instead of failing at once)
        install_argv = [*apt.split(), "-q", "-o", "DPkg::Lock::Timeout=300"]
        try:
            _run(install_argv, env=env, timeout=900)
        except SlurmUnavailable:
            # A stale package index names .debs the mirror no longer has: refresh it, retry once.
            _run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=300"], env=env, timeout=600)
            _run(install_argv, env=env, timeout=900)
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    missing = [name for name in DAEMONS + CLIENTS + TOOLS if which(name) is None]
    if missing:
        raise SlurmUnavailable(f"{apt} left {missing} missing")
    return time.time() - start


def _run(argv, timeout=120, check=True, **kwargs) -> subprocess.CompletedProcess:
    argv = [which(argv[0]) or argv[0], *argv[1:]]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout)[-800:]
        raise SlurmUnavailable(f"`{' '.join(argv)}` failed ({result.returncode}): {output}")
    return result


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    try:
        while len(ports) < count:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
            ports.append(probe.getsockname()[1])
    finally:
        for probe in sockets:
            probe.close()
    return ports


def wait_until(condition, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


class SlurmCluster:
    """One controller, one compute node (this host), accounting; everything under `root`."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.conf = root / "etc" / "slurm.conf"
        self.host = socket.gethostname().split(".")[0]
        self.daemons: dict[str, subprocess.Popen] = {}
        self.munge_socket = root / "munge-run" / "munge.socket.2"
        self.mysql_socket = root / "mysql" / "run" / "mysqld.sock"
        self.ctld_port, self.slurmd_port, self.dbd_port, self.mysql_port = free_ports(4)
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        for name in (
            "etc",
            "state",
            "spool",
            "log",
            "munge",
            "munge-run",
            "mysql/data",
            "mysql/run",
        ):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        (self.root / "munge-run").chmod(0o755)  # munged wants its socket folder o+x
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        _run(["mungekey", "--create", f"--keyfile={key}", "--force"])
        key.chmod(0o600)
        self._daemon(
            "munged", "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--pid-file={self.root / 'munge-run' / 'munged.pid'}",
            f"--seed-file={self.root / 'munge' / 'munged.seed'}",
        )  # fmt: skip
        self._wait("munged", self._munge_works, 30)
        self._write_configs()
        self._start_accounting()
        self._daemon("slurmctld", "-D", "-c", "-f", str(self.conf))
        self._daemon("slurmd", "-D", "-f", str(self.conf), "-N", self.host)
        self._wait("slurmd", self._node_idle, 60)

    def _munge_works(self) -> bool:
        sock = str(self.munge_socket)
        encoded = subprocess.run([which("munge"), "-n", "-S", sock], capture_output=True)
        if encoded.returncode != 0:
            return False
        decoded = subprocess.run(
            [which("unmunge"), "-S", sock], input=encoded.stdout, capture_output=True
        )
        return decoded.returncode == 0

    def _node_idle(self) -> bool:
        result = subprocess.run(
            [which("sinfo"), "-h", "-o", "%T"], capture_output=True, text=True, env=self.env
        )
        return result.returncode == 0 and result.stdout.strip().startswith("idle")

    def _start_accounting(self) -> None:
        data = self.root / "mysql" / "data"
        _run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
        )  # fmt: skip
        self._daemon(
            "mariadbd", "--no-defaults", "--user=root", f"--datadir={data}",
            f"--socket={self.mysql_socket}", f"--pid-file={self.root / 'mysql' / 'run' / 'pid'}",
            "--bind-address=127.0.0.1", f"--port={self.mysql_port}", "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M", f"--log-error={self.root / 'log' / 'mariadb.err'}",
        )  # fmt: skip
        ping = ["mariadb-admin", "--no-defaults", f"--socket={self.mysql_socket}", "ping"]
        self._wait("mariadbd", lambda: _run(ping, check=False).returncode == 0, 60)
        _run(
            ["mariadb", "--no-defaults", f"--socket={self.mysql_socket}", "-u", "root", "-e",
             "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw'; "
             "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"],
        )  # fmt: skip
        self._daemon("slurmdbd", "-D")
        self._wait("slurmdbd", lambda: self._port_open(self.dbd_port), 60)
        add = ["sacctmgr", "-i", "add", "cluster", "algoperf"]
        self._wait("sacctmgr", lambda: _run(add, check=False, env=self.env).returncode == 0, 30)

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", port)) == 0

    def _node_line(self) -> str:
        memory_mb = 1024
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(int(line.split()[1]) / 1024 * 0.9)
        described = _run(["slurmd", "-C"], check=False).stdout.splitlines()
        line = described[0] if described else ""
        if not (line.startswith("NodeName=") and "CPUs=" in line):
            line = f"NodeName=x CPUs={os.cpu_count()}"
        fields = [f for f in line.split() if not f.startswith(("NodeName=", "RealMemory="))]
        fields = [f"NodeName={self.host}", "NodeAddr=127.0.0.1", *fields]
        return " ".join(fields + [f"RealMemory={memory_mb}", "State=UNKNOWN"])

    def _write_configs(self) -> None:
        r = self.root
        self.conf.write_text(
            f"""ClusterName=algoperf
# "localhost" is accepted as the controller whatever the host's name
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again
AuthInfo=socket={self.munge_socket},cred_expire={CRED_EXPIRE_S}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/slurmd-%n
SlurmctldPidFile={r}/state/slurmctld.pid
SlurmdPidFile={r}/spool/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
# no cgroups: plain /proc process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
# slurmdbd connections take the munge socket from here, not from AuthInfo
AccountingStoragePass={self.munge_socket}
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
SchedulerType=sched/backfill
# schedule at once, and look at pending (e.g. requeued) jobs every 2 s instead of 60 s
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=30
Waittime=0
{self._node_line()}
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""
        )
        dbd = self.conf.parent / "slurmdbd.conf"  # slurmdbd looks beside SLURM_CONF
        dbd.write_text(
            f"""AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser=root
PidFile={r}/state/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.mysql_port}
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
"""
        )
        dbd.chmod(0o600)

    def _daemon(self, name: str, *args: str) -> None:
        with open(self.root / "log" / f"{name}.out", "w") as out:
            self.daemons[name] = subprocess.Popen(
                [which(name), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    def _wait(self, name: str, condition, timeout: float) -> None:
        if wait_until(condition, timeout):
            return
        logs = ""
        for path in sorted((self.root / "log").glob("*")):
            logs += f"\n--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-15:])
        raise SlurmUnavailable(f"{name} did not come up within {timeout:g} s:{logs}")

    # -- stop ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel jobs, let their steps end, then TERM (KILL after 30 s) our daemons by PID."""
        ctld = self.daemons.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            ids = _run(["squeue", "-h", "-o", "%i"], check=False, env=self.env).stdout.split()
            if ids:
                _run(["scancel", *ids], check=False, env=self.env)
                squeue = ["squeue", "-h", "-o", "%i"]
                wait_until(lambda: not _run(squeue, check=False, env=self.env).stdout.strip(), 60)
        wait_until(lambda: not self.step_daemons(), 30)
        self._stop_group("slurmd", "slurmctld")
        self._stop_group("slurmdbd", "mariadbd", "munged")

    def step_daemons(self) -> list[int]:
        """slurmstepd processes of this cluster (they carry its SLURM_CONF)."""
        found = []
        for proc in pathlib.Path("/proc").glob("[0-9]*"):
            try:
                if not (proc / "cmdline").read_bytes().startswith(b"slurmstepd"):
                    continue
                if f"SLURM_CONF={self.conf}".encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    def _stop_group(self, *names: str) -> None:
        running = [self.daemons[n] for n in names if n in self.daemons]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)

    # -- helpers for tests ---------------------------------------------------------------------
    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(list(argv), check=check, env=self.env)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node Slurm (SLURM_CONF exported for the session)."""
    try:
        seconds = install()
    except (SlurmUnavailable, subprocess.TimeoutExpired) as error:
        pytest.fail(f"Slurm could not be installed: {error}", pytrace=False)
    # Not under pytest's 0700 temp folders: munged wants every folder above its socket o+x.
    root = pathlib.Path(tempfile.mkdtemp(prefix="algoperf-slurm-"))
    root.chmod(0o755)
    cluster = SlurmCluster(root)
    cluster.install_s = seconds
    started = time.time()
    try:
        cluster.start()
    except (SlurmUnavailable, subprocess.TimeoutExpired, OSError) as error:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"Slurm could not be started: {error}", pytrace=False)
    cluster.start_s = time.time() - started
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    print(
        f"\n[slurm fixture] install {seconds:.1f} s, start {cluster.start_s:.1f} s",
        file=sys.stderr,
    )
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- the sweep the launch tests share -------------------------------------------------------------
MAX_STEPS, EVAL_EVERY = 120, 40
RUN_ARGS = [
    "--max_global_steps", str(MAX_STEPS), "--eval_every_steps", str(EVAL_EVERY),
    "--torch_compile", "false", "--deterministic", "--download", "false", "--progress", "false",
]  # fmt: skip
METRIC_PREFIXES = ("train/", "validation/", "test/")


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> pathlib.Path:
    """A small MNIST in idx format (random pixels: fast to read; the tests compare rows)."""
    root = tmp_path_factory.mktemp("mnist_data")
    mnist.write_random_files(root / "mnist", num_train=1200, num_test=200)
    return root


def sweep_text(
    data_dir, experiment_dir, *, name="mini", studies=1, trials=2, extra="", run_args=None
):
    """The shared sweep's TOML: `studies` x `trials` of mnist (NAdamW), CPU, RUN_ARGS."""
    args = ", ".join(f'"{a}"' for a in (RUN_ARGS if run_args is None else run_args))
    return (
        f'name = "{name}"\nrng_seed = 7\nworkloads = ["mnist"]\nnum_studies = {studies}\n'
        f'num_tuning_trials = {trials}\ndata_dir = "{data_dir}"\n'
        f'experiment_dir = "{experiment_dir}"\ngpus_per_trial = 0\nrun_args = [{args}]\n{extra}'
    )


def launch(*args: str, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`algoperf launch ...` in a subprocess."""
    env = {**(env or os.environ), "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "algoperf", "launch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metric_rows(trial_dir: pathlib.Path) -> list[dict]:
    import csv

    with open(trial_dir / "eval_measurements.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {k: v for k, v in row.items() if k.startswith(METRIC_PREFIXES) or k == "global_step"}
        for row in rows
    ]


TRIAL_KEYS = ("study_0/mnist_pytorch/trial_1", "study_0/mnist_pytorch/trial_2")


@pytest.fixture(scope="session")
def local_reference(tmp_path_factory, mnist_dir):
    """The shared sweep run uninterrupted with `algoperf launch local --parallel 2`."""
    root = tmp_path_factory.mktemp("reference")
    sweep = root / "sweep.toml"
    sweep.write_text(sweep_text(mnist_dir, root / "exp"))
    started = time.time()
    result = launch("local", str(sweep), "--parallel", "2")
    seconds = time.time() - started
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    sweep_dir = root / "exp" / "mini"
    rows = {key: metric_rows(sweep_dir / key) for key in TRIAL_KEYS}
    return {"sweep": sweep, "dir": sweep_dir, "rows": rows, "result": result, "seconds": seconds}
