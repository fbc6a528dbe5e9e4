"""What the client benchmarks share: stubs generated from proto/, free ports, and the servers
they start for themselves on loopback (never the machine's own instances on standard ports)."""

import importlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_stubs():
    """(broker_pb2, broker_pb2_grpc), generated from the repository's protos at start-up."""
    out = tempfile.mkdtemp(prefix="streamgate-stubs-")
    include = str(pathlib.Path(protoc.__file__).parent / "_proto")
    protos = [str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto")]
    code = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", *protos])
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, out)
    return (importlib.import_module("streamgate.v1.broker_pb2"),
            importlib.import_module("streamgate.v1.broker_pb2_grpc"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, what, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"{what} did not listen on port {port} within {seconds} s")


def cpu_seconds(pid):
    """User + system CPU a process (and its reaped children) used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


class Servers:
    """Processes started for one benchmark, stopped together."""

    def __init__(self):
        self.processes = []
        self.work = tempfile.mkdtemp(prefix="streamgate-clients-bench-")

    def start(self, args, env=None, **kwargs):
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=env, **kwargs)
        self.processes.append(process)
        return process

    def redis(self):
        port = free_port()
        process = self.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", self.work])
        wait_for_port(port, "redis-server")
        return port, process

    def streamgate(self, binary, redis_port):
        port = free_port()
        process = self.start([binary, "serve", "--listen", f"127.0.0.1:{port}",
                              "--redis-url", f"redis://127.0.0.1:{redis_port}", "--log", "warn"])
        wait_for_port(port, "streamgate")
        return port, process

    def stop(self):
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.work, ignore_errors=True)
