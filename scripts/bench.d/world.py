"""The benchmark's world (for bench.py): the topics and regions, the Postgres servers
`scripts/bench` started (one per region), the daemon's configuration and processes, and what
is read of a process from /proc."""
import concurrent.futures
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time

import psycopg

TOPIC = "chat.messages"
KC_TOPIC = "chat.kc"  # the KC-style peer's backlog when the main one is larger than KC_EVENTS
KC_EVENTS = 200_000
STEADY_TOPIC = "chat.steady"
ORIGIN = "sa-east-1"  # not a target region: every backlog event applies in every region
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def utc_now_text():
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class World:
    def __init__(self, args):
        self.args = args
        self.ports = [int(p) for p in args.pg_ports.split(",")]
        self.bin = args.bin_dir
        self.dir = args.work_dir

    def dsn(self, i, db):
        return f"host=127.0.0.1 port={self.ports[i]} dbname={db} user=postgres"

    def create_db(self, i, db):
        with psycopg.connect(self.dsn(i, "postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}"')
            c.execute(f'CREATE DATABASE "{db}"')

    def config(self, name, regions, http_port, brokers=None, topic=TOPIC, level="notice", capture_region=None):
        path = os.path.join(self.dir, f"{name}.yaml")
        lines = [
            "kafka:", f'  brokers: "{brokers or self.args.brokers}"', f"  topic: {topic}", f"  group_prefix: bench-{name}",
            "  properties:",
            # Tansu takes ~23 s to complete a group join with the default 45 s session timeout.
            '    session.timeout.ms: "6000"', '    heartbeat.interval.ms: "500"', '    log_level: "4"',
            # Tansu answers a fetch only when fetch.wait.max.ms (default 500) has passed, even when
            # records are there (Kafka answers at once when fetch.min.bytes is reached): without
            # this, Tansu alone would add ~250 ms on average to every record's latency.
            '    fetch.wait.max.ms: "10"',
        ]
        # Experiments: extra librdkafka properties, "key=value,key=value".
        for kv in filter(None, os.environ.get("BENCH_KAFKA_PROPERTIES", "").split(",")):
            k, v = kv.split("=", 1)
            lines.append(f'    {k}: "{v}"')
        lines.append("regions:")
        for (i, region, db) in regions:
            lines += [f"  - name: {region}", f'    dsn: "{self.dsn(i, db)}"']
            if region == capture_region:  # capture.py: this region publishes its own writes
                lines.append("    capture: true")
        lines += ["apply:", f"  max_batch_events: {self.args.batch_events}", f"  max_batch_delay_ms: {self.args.batch_delay_ms}"]
        if self.args.connections is not None:
            lines.append(f"  connections: {self.args.connections}")
        lines += ["http:", f'  listen: "127.0.0.1:{http_port}"', "log:", f"  level: {level}"]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        subprocess.run([os.path.join(self.bin, "region-replicator"), "migrate", "--config", path],
                       check=True, stdout=subprocess.DEVNULL)
        return path

    def start_daemon(self, config, name, perf_data=None):
        """Starts `region-replicator run`; under `perf record` when `perf_data` is given.
        Returns (process to stop, daemon pid)."""
        logf = open(os.path.join(self.dir, f"daemon-{name}.log"), "w")
        cmd = [os.path.join(self.bin, "region-replicator"), "run", "--config", config]
        if perf_data is None:
            p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
            return p, p.pid
        p = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "997", "-g", "-o", perf_data, "--"] + cmd,
                             stdout=logf, stderr=subprocess.STDOUT)
        for _ in range(100):
            kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
            if kids:
                return p, int(kids[0])
            time.sleep(0.05)
        raise RuntimeError("perf did not start the daemon")


def stop(proc, pid=None, seconds=30):
    if proc.poll() is None:
        os.kill(pid or proc.pid, signal.SIGTERM)
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def peak_rss_mb(pid, field="VmHWM:"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def in_parallel(fn, arg_tuples):
    """Runs fn(*args) for every tuple at once, one thread each; returns the results in order
    and re-raises the first failure in the calling thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(arg_tuples)) as pool:
        futures = [pool.submit(fn, *args) for args in arg_tuples]
    return [f.result() for f in futures]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_mock(world, topic, partitions, name="mock-bootstrap"):
    """librdkafka's mock cluster (`rr-devtool broker`) with `topic`, as its own process.
    Returns (process to stop, bootstrap servers)."""
    path = os.path.join(world.dir, name)
    mock = subprocess.Popen([os.path.join(world.bin, "rr-devtool"), "broker", "--brokers", "1", "--topic", topic,
                             "--partitions", str(partitions), "--bootstrap-file", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        if os.path.exists(path) and open(path).read().strip():
            return mock, open(path).read().strip()
        time.sleep(0.1)
    stop(mock)
    raise RuntimeError("the mock cluster did not start within 30 s")


def wait_assigned(world, name, proc, count=3):
    """Waits until the daemon `name` logged `count` partition assignments (one per pipeline shard)."""
    path = os.path.join(world.dir, f"daemon-{name}.log")
    deadline = time.monotonic() + 60
    while sum(1 for line in open(path) if "partitions assigned" in line) < count:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"the daemon {name} did not get its partitions within 60 s")
        time.sleep(0.2)
    time.sleep(1)


def perf_report(perf_data, json_path, suffix, sort="dso,symbol", lines=60):
    """`perf report` of `perf_data`, demangled, written beside the JSON; returns its path."""
    report = subprocess.run(f"perf report -i {perf_data} --no-children --sort {sort} --stdio -g none "
                            f"2>/dev/null | swift demangle --simplified | grep -v '^#' | grep -v '^$' | head -{lines}",
                            shell=True, capture_output=True, text=True).stdout
    path = os.path.splitext(json_path)[0] + suffix
    with open(path, "w") as f:
        f.write(report)
    return path
