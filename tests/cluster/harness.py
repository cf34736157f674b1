"""A single-node Slurm cluster on this machine, from Debian's packages, for the cluster tests.

``SlurmCluster.start`` moves the calling process into private network and mount namespaces
(``enter_private_namespaces``), then starts munged, MariaDB, slurmdbd, slurmctld and slurmd as its
children, with every config file, state folder, socket and log under one temporary folder; the
config folder is bind-mounted on /etc/slurm inside the mount namespace only. The node is
``localhost`` and the daemons talk over 127.0.0.1, in a network namespace that has nothing but the
loopback (and an empty bridge). ``stop`` cancels the jobs and stops each daemon by its PID, then
checks that no process is left in the namespace.

No cgroups: ``proctrack/linuxproc``, ``task/none``, ``jobacct_gather/linux``. Accounting goes
through slurmdbd to MariaDB, because the Snakemake executor plugin asks ``sacct`` for job states
by default, as it does on a real cluster.

The node declares more than this machine has (8 CPUs, 64000 MB and one GPU: a ``gpu`` gres backed
by /dev/null; ``SlurmdParameters=config_overrides``) so that the requests of ``profiles/slurm``
(a GPU, 4 CPUs and 32000 MB for collection) are scheduled as written. The work itself runs on
this machine's CPUs.

    python -m tests.cluster.harness install   # apt-get install the packages when missing (root)
    python -m tests.cluster.harness check     # say what is missing, exit 1 if anything is
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DEBIAN_PACKAGES = ("munge", "slurm-wlm", "slurmdbd", "mariadb-server", "iproute2")
"""What the cluster needs: slurm-wlm pulls slurmctld, slurmd and the client commands."""

PROGRAMS = {
    "munged": "munge",
    "slurmctld": "slurm-wlm",
    "slurmd": "slurm-wlm",
    "sbatch": "slurm-wlm",
    "sacct": "slurm-wlm",
    "slurmdbd": "slurmdbd",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-server",
    "ip": "iproute2",
}
"""Each program the harness runs, and the Debian package that ships it."""

SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
NODE = "localhost"
PARTITION = "gpu"
NODE_CPUS = 16
NODE_MEMORY_MB = 128000
NODE_GPUS = 3
GPU_STAND_INS = ("/dev/null", "/dev/zero", "/dev/full")
CLUSTER_NAME = "compendium"
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
SLURM_CONFIG_FOLDER = "/etc/slurm"
BRIDGE = "cluster0"
BRIDGE_ADDRESS = "192.0.2.1"


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped; the message carries the daemon logs."""


def find_program(name: str) -> str | None:
    """Full path of ``name`` on PATH or in the sbin folders (root's PATH may lack them)."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def missing_packages() -> list[str]:
    """The Debian packages whose programs are not installed."""
    return sorted({package for program, package in PROGRAMS.items() if find_program(program) is None})


def why_not_possible() -> str | None:
    """Why this machine cannot run the cluster at all (not root, not Debian), or None."""
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root: its daemons run as SlurmUser=root and in a network namespace"
    if sys.platform != "linux":
        return f"the Slurm test cluster needs Linux, this is {sys.platform}"
    if find_program("apt-get") is None and missing_packages():
        return f"packages {missing_packages()} are missing and there is no apt-get to install them"
    return None


def install_packages() -> None:
    """``apt-get install`` the missing packages, without starting their system services."""
    missing = missing_packages()
    if not missing:
        print(f"cluster harness: Debian packages present: {', '.join(DEBIAN_PACKAGES)}")
        return
    reason = why_not_possible()
    if reason:
        raise ClusterError(f"cannot install {missing}: {reason}")
    # Debian's maintainer scripts start a package's service unless policy-rc.d forbids it; this
    # harness runs its own daemons, so forbid it for the duration of the install if nobody has.
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = not policy.exists()
    if added_policy:
        policy.write_text("#!/bin/sh\n# added by tests/cluster/harness.py during apt-get install\nexit 101\n")
        policy.chmod(0o755)
    try:
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print(f"cluster harness: apt-get install {' '.join(missing)}", flush=True)
        for command in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        ):
            result = subprocess.run(command, env=environment, capture_output=True, text=True)
            if result.returncode != 0:
                output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                raise ClusterError(f"{' '.join(command)} failed ({result.returncode}):\n{output}")
    finally:
        if added_policy:
            policy.unlink()
    still_missing = missing_packages()
    if still_missing:
        raise ClusterError(f"after apt-get install, still missing: {still_missing}")


def enter_private_namespaces(config_folder: Path) -> str:
    """Move this process into new network and mount namespaces; return the network namespace's id.

    Network: only the loopback and an empty bridge, so nothing the cluster opens can be reached
    from outside, and it sends nothing outside. Mount: ``config_folder`` is bind-mounted on
    /etc/slurm, Slurm's default config folder, seen by this process and its children only (the
    host's /etc/slurm is untouched). The default path matters: the executor's jobstep plugin
    removes every ``SLURM_*`` variable, SLURM_CONF included, before its ``srun``, so the job step
    finds the config where a real cluster keeps it. Every process started afterwards inherits both
    namespaces; that is how ``SlurmCluster.stop`` finds leftovers. One way: there is no going back.
    """
    host_namespace = os.readlink("/proc/self/ns/net")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET | CLONE_NEWNS) != 0:
        error = ctypes.get_errno()
        raise ClusterError(f"unshare(CLONE_NEWNET | CLONE_NEWNS) failed: {os.strerror(error)} (needs CAP_SYS_ADMIN)")
    ip, mount = find_program("ip") or "ip", find_program("mount") or "mount"
    if not Path(SLURM_CONFIG_FOLDER).is_dir():
        raise ClusterError(f"{SLURM_CONFIG_FOLDER} is missing: Debian's slurm-client package creates it")
    # Slurm resolves its listening address with getaddrinfo(AI_ADDRCONFIG), which finds nothing
    # when the loopback is the only interface: give the namespace a bridge with no ports and a
    # documentation address (RFC 5737) that no traffic is ever sent to.
    for command in (
        [mount, "--make-rprivate", "/"],  # no mount made here propagates to the host
        [mount, "--bind", str(config_folder), SLURM_CONFIG_FOLDER],
        [ip, "link", "set", "lo", "up"],
        [ip, "link", "add", BRIDGE, "type", "bridge"],
        [ip, "address", "add", f"{BRIDGE_ADDRESS}/32", "dev", BRIDGE],
        [ip, "link", "set", BRIDGE, "up"],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ClusterError(f"{' '.join(command)} failed in the private namespaces: {result.stderr}")
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != sorted(["lo", BRIDGE]):
        raise ClusterError(f"expected only lo and {BRIDGE} in the private network namespace, found {interfaces}")
    namespace = os.readlink("/proc/self/ns/net")
    if namespace == host_namespace:
        raise ClusterError(f"still in the network namespace {namespace} after unshare")
    return namespace


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(condition: Callable[[], bool], timeout: float, what: str, check: Callable[[], None]) -> None:
    """Poll ``condition`` every 0.2 s until true; ``check`` raises when a daemon died meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        check()
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@dataclass
class SlurmCluster:
    """A running single-node Slurm cluster whose files all live under ``root``.

    Use as a context manager: the daemons are stopped (by PID) on exit, whatever happened.
    ``environment`` is what a client needs (``SLURM_CONF``); ``run`` calls a Slurm command with it.
    """

    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    namespace: str | None = None  # the private network namespace, once entered

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    @property
    def environment(self) -> dict[str, str]:
        """The caller's environment plus SLURM_CONF, for Slurm clients and Snakemake."""
        path = os.environ.get("PATH", "")
        for folder in SBIN:
            if folder not in path.split(os.pathsep):
                path += os.pathsep + folder
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException as error:
            try:
                self.stop()
            except ClusterError as stop_error:
                error.add_note(f"and then, stopping what had started: {stop_error}")
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Enter private namespaces, write the configs and start the daemons in order; raise with logs on failure."""
        for folder in ("etc", "log", "run", "munge", "db", "state/ctld", "state/d", "tmp"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.namespace = enter_private_namespaces(self.root / "etc")
        self.ports = {name: _free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
        self._start_munge()
        self._start_mariadb()
        self._start_slurmdbd()
        self._start_slurmctld()
        self._start_slurmd()

    def stop(self) -> None:
        """Cancel every job, wait for their steps to end, then stop each daemon by PID (TERM, then KILL).

        Every step runs whatever failed before it; the problems met (a daemon that had died, one
        that ignored SIGTERM, a process left behind) are raised together, with the daemon logs.
        """
        problems = []
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", "--user", "root", check=False)
                deadline = time.monotonic() + 60
                while self._job_ids() and time.monotonic() < deadline:
                    time.sleep(0.5)
                if self._job_ids():
                    problems.append(f"jobs still in the queue 60 s after scancel: {self._job_ids()}")
            except (OSError, subprocess.SubprocessError) as error:
                problems.append(f"cancelling the jobs failed: {error}")
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadb", "munged"):
            process = self.processes.get(name)
            if process is None:
                continue
            if process.poll() is not None:
                problems.append(f"{name} (pid {process.pid}) had exited with status {process.returncode} before stop")
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                problems.append(f"{name} (pid {process.pid}) ignored SIGTERM for 30 s; killed")
                process.kill()
                process.wait()
        for pid, command in self.stray_processes().items():  # outlived their daemons: ours, so ours to end
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            problems.append(f"process {pid} ({command}) was left in the cluster's namespace; killed")
        if problems:
            raise ClusterError("stopping the cluster:\n" + "\n".join(problems) + "\n" + self.log_tail())

    def stray_processes(self) -> dict[int, str]:
        """Processes still alive in this cluster's network namespace, other than this one: leftovers."""
        if self.namespace is None:
            return {}
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if os.readlink(entry / "ns" / "net") != self.namespace:
                    continue
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # gone meanwhile
                continue
            found[int(entry.name)] = command.strip()[:200]
        return found

    # -- clients -----------------------------------------------------------------------------------

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster; raise with its output and the logs on failure."""
        result = subprocess.run(command, env=self.environment, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            output = f"{result.stdout}\n{result.stderr}"
            raise ClusterError(f"{' '.join(command)} failed ({result.returncode}):\n{output}\n{self.log_tail()}")
        return result

    def _job_ids(self) -> list[str]:
        result = self.run("squeue", "--noheader", "--format=%i", check=False)
        return result.stdout.split() if result.returncode == 0 else []

    def accounting(self) -> list[dict[str, str]]:
        """Every job and step that sacct knows, as dicts of its fields."""
        fields = ["JobID", "JobName", "Comment", "State", "ExitCode", "AllocTRES", "Timelimit", "Start", "End"]
        result = self.run(
            "sacct", "--allusers", "--parsable2", "--noheader", "--starttime=now-1days", f"--format={','.join(fields)}"
        )
        return [dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines() if line]

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of every daemon log, for error messages."""
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts) or f"(no logs in {self.logs})"

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise ClusterError(f"{name} exited with status {process.returncode}\n{self.log_tail()}")

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.logs / f"{name}.out.log", "ab")  # the child keeps its own descriptor; ours is closed below
        try:
            self.processes[name] = subprocess.Popen(  # own session: a Ctrl-C reaches pytest, which stops them in order
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment,
                cwd=self.root,
                start_new_session=True,
            )
        finally:
            log.close()

    # -- daemons -------------------------------------------------------------------------------

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self.root.chmod(0o755)
        (self.root / "munge").chmod(0o700)
        socket_path = self.root / "munge" / "munge.socket"
        self._spawn(
            "munged",
            [
                find_program("munged") or "munged",
                "--foreground",
                "--force",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={self.root / 'run' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
        )
        _wait(socket_path.exists, 20, "munged's socket", self._check_alive)

    def _start_mariadb(self) -> None:
        datadir = self.root / "db"
        install = subprocess.run(
            [
                find_program("mariadb-install-db") or "mariadb-install-db",
                "--no-defaults",
                f"--datadir={datadir}",
                "--user=root",
                "--skip-test-db",
                "--auth-root-authentication-method=socket",
            ],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}")
        self.db_password = secrets.token_hex(16)
        init = self.root / "etc" / "mariadb-init.sql"
        init.write_text(
            f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}';\n"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';\n"
        )
        init.chmod(0o600)
        socket_path = self.root / "run" / "mariadb.sock"
        self._spawn(
            "mariadb",
            [
                find_program("mariadbd") or "mariadbd",
                "--no-defaults",
                f"--datadir={datadir}",
                "--user=root",
                f"--socket={socket_path}",
                f"--port={self.ports['mariadb']}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                f"--pid-file={self.root / 'run' / 'mariadb.pid'}",
                f"--log-error={self.logs / 'mariadb.log'}",
                f"--init-file={init}",
                "--innodb-buffer-pool-size=64M",
                "--innodb-lock-wait-timeout=900",
            ],
        )
        client = find_program("mariadb") or "mariadb"

        def ready() -> bool:
            probe = [client, "--no-defaults", f"--socket={socket_path}", "-uroot", "-e", "SELECT 1"]
            return subprocess.run(probe, capture_output=True).returncode == 0

        _wait(ready, 60, "MariaDB", self._check_alive)

    def _start_slurmdbd(self) -> None:
        conf = self.root / "etc" / "slurmdbd.conf"
        conf.write_text(
            "\n".join(
                [
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={self.root / 'munge' / 'munge.socket'}",
                    f"DbdHost={socket.gethostname().split('.')[0]}",
                    "DbdAddr=127.0.0.1",
                    f"DbdPort={self.ports['slurmdbd']}",
                    "SlurmUser=root",
                    "DebugLevel=info",
                    f"LogFile={self.logs / 'slurmdbd.log'}",
                    f"PidFile={self.root / 'run' / 'slurmdbd.pid'}",
                    "StorageType=accounting_storage/mysql",
                    "StorageHost=127.0.0.1",
                    f"StoragePort={self.ports['mariadb']}",
                    "StorageUser=slurm",
                    f"StoragePass={self.db_password}",
                    "StorageLoc=slurm_acct_db",
                    "",
                ]
            )
        )
        conf.chmod(0o600)
        self._write_slurm_conf()
        self._spawn("slurmdbd", [find_program("slurmdbd") or "slurmdbd", "-D"])
        _wait(lambda: _listening(self.ports["slurmdbd"]), 60, "slurmdbd", self._check_alive)

    def _write_slurm_conf(self) -> None:
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(
            "\n".join(
                [
                    "# written by tests/cluster/harness.py: a single-node test cluster, no cgroups",
                    f"ClusterName={CLUSTER_NAME}",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={self.ports['slurmctld']}",
                    f"SlurmdPort={self.ports['slurmd']}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.root / 'munge' / 'munge.socket'}",
                    f"StateSaveLocation={self.root / 'state' / 'ctld'}",
                    f"SlurmdSpoolDir={self.root / 'state' / 'd'}",
                    f"SlurmctldPidFile={self.root / 'run' / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'run' / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.logs / 'slurmd.log'}",
                    f"TmpFS={self.root / 'tmp'}",
                    "SlurmctldDebug=info",
                    "SlurmdDebug=info",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/linux",
                    "JobAcctGatherFrequency=30",
                    "AccountingStorageType=accounting_storage/slurmdbd",
                    "AccountingStorageHost=127.0.0.1",
                    f"AccountingStoragePort={self.ports['slurmdbd']}",
                    f"AccountingStoragePass={self.root / 'munge' / 'munge.socket'}",  # munge socket for slurmdbd
                    "AccountingStorageTRES=gres/gpu",
                    "MailProg=/bin/true",
                    "AccountingStoreFlags=job_comment",  # sacct shows the plugin's comment: rule and wildcards
                    "JobCompType=jobcomp/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "SchedulerType=sched/backfill",
                    "SlurmdParameters=config_overrides",
                    "ReturnToService=2",
                    "MpiDefault=none",
                    "GresTypes=gpu",
                    "KillWait=5",
                    "MinJobAge=300",
                    "InactiveLimit=0",
                    f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={NODE} CPUs={NODE_CPUS} "
                    f"Boards=1 SocketsPerBoard=1 CoresPerSocket={NODE_CPUS} ThreadsPerCore=1 "
                    f"RealMemory={NODE_MEMORY_MB} Gres=gpu:{NODE_GPUS} State=UNKNOWN",
                    f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        # a gpu gres needs a device file per GPU (no File: slurmd counts 0); any character device will do
        devices = GPU_STAND_INS[:NODE_GPUS]
        (self.root / "etc" / "gres.conf").write_text("".join(f"NodeName={NODE} Name=gpu File={d}\n" for d in devices))

    def _start_slurmctld(self) -> None:
        self._spawn("slurmctld", [find_program("slurmctld") or "slurmctld", "-D", "-c", "-i"])
        _wait(lambda: _listening(self.ports["slurmctld"]), 60, "slurmctld", self._check_alive)
        _wait(lambda: self.run("sinfo", check=False).returncode == 0, 60, "sinfo to answer", self._check_alive)

    def _start_slurmd(self) -> None:
        self._spawn("slurmd", [find_program("slurmd") or "slurmd", "-D", "-N", NODE])

        def idle() -> bool:
            state = self.run("sinfo", "--noheader", "--Node", "--format=%T", check=False).stdout.split()
            if any(s.startswith(("drain", "down", "fail", "inval")) for s in state):
                reason = self.run("sinfo", "-R", check=False).stdout
                raise ClusterError(f"node {NODE} is {state}: {reason}\n{self.log_tail()}")
            return state == ["idle"]

        _wait(idle, 90, f"node {NODE} to be idle", self._check_alive)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "install":
        reason = why_not_possible()
        if reason and missing_packages():
            print(f"cluster harness: cannot install {missing_packages()}: {reason}", file=sys.stderr)
            return 0  # the tests then skip with this reason
        install_packages()
        return 0
    if command == "check":
        missing = missing_packages()
        print(f"missing Debian packages: {missing}" if missing else "all Debian packages present")
        return 1 if missing else 0
    print(f"unknown command {command!r}; use install or check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
