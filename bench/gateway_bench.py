"""The gateway benchmark: Accord side by side with nginx, a naive Python proxy and no proxy at all.

Run it through `bench/run` (which installs wrk and nginx and the project's .venv);
see bench/README.md for what is measured and how to read it. In one run:

1. an upstream: nginx, one worker, a small fixed JSON answer;
2. wrk at full load (same threads, connections and duration for all) against
   direct, nginx proxy_pass, the naive FastAPI + httpx proxy, the Accord gateway
   in one process (memory limits) and in two (`--workers 2`, limits in Redis);
3. wrk paced at half of Accord's maximum rate against direct, nginx and Accord:
   the latency Accord adds at a load it can carry;
4. bench/limits.py (policy decisions per second, memory and Redis) and
   bench/snapshot_bench.py (snapshot build and credential lookup, 10k–1M keys).

Figures go to stdout and to bench/results.json. Every process started here runs
in its own process group and is killed on the way out, whatever the way out is.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent
SECRET_KEY = "accord-bench-secret-key-not-for-production"
UPSTREAM_BODY = '{"id":42,"name":"widget","price":9.99,"tags":["bench","small"],"in_stock":true}'
REQUEST_PATH = "/bench/items"  # the same path on every target; the gateway serves the API at /bench
RATE_LIMIT_PREFIX = "accord:rl:"  # RedisLimiter's default key prefix
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- processes ------------------------------------------------------------------------------

@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Processes:
    """Everything this run started; `stop_all` kills each one's whole process group."""

    log_dir: Path
    nice: int = 0  # for each started process's autogroup (see `_prioritize`)
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Started:
        """A server, in its own process group and session, output to a log file."""
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, cwd=ROOT)
        _prioritize(process.pid, self.nice)
        started = Started(name, process, log)
        self.started.append(started)
        return started

    def run(self, name: str, argv: list[str], env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """A command run to its end (wrk, the micro benchmarks), stopped with the rest if the run is cut short."""
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
        _prioritize(process.pid, self.nice)
        started = Started(name, process, self.log_dir / f"{name}.log")  # type: ignore[arg-type]
        self.started.append(started)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            self.stop(started)
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)

    def stop(self, started: Started, timeout: float = 15.0) -> None:
        process = started.process
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        # uvicorn's workers or nginx's worker may outlive their parent for a moment.
        deadline = time.monotonic() + 5
        while _group_pids(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_pids(process.pid):
            _signal_group(process.pid, signal.SIGKILL)
        if started in self.started:
            self.started.remove(started)

    def stop_all(self) -> None:
        for started in reversed(list(self.started)):
            try:
                self.stop(started)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"warning: could not stop {started.name}: {exc}", file=sys.stderr)


def _prioritize(pid: int, nice: int) -> None:
    """Give the process's autogroup the run's nice value.

    Each process started here leads its own session, hence (with the kernel's
    autogroup scheduling, usually on) its own scheduling group, between which a
    plain nice value has no effect: the group's own nice is what competes with
    the other work on a shared machine.
    """
    if not nice:
        return
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError:
        pass  # no autogroups, or not root: the process keeps the nice value it inherited


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (each started process leads its own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _cpu_seconds(watched: Started | int) -> dict[int, float]:
    """User + system CPU seconds of each live process of a started group (or of one pid, e.g. Redis)."""
    out = {}
    pids = _group_pids(watched.process.pid) if isinstance(watched, Started) else [watched]
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def _machine_cpu_seconds() -> tuple[float, float]:
    """(CPU seconds used on the machine, all cores; seconds stolen by the hypervisor), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9])
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, started: Started | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if started is not None and started.process.poll() is not None:
            raise RuntimeError(f"{started.name} exited with {started.process.returncode}; see {started.log}:\n"
                               + started.log.read_text()[-3000:])
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


# --- nginx ------------------------------------------------------------------------------------

NGINX_COMMON = """
worker_processes 1;
pid {dir}/nginx-{name}.pid;
error_log {dir}/nginx-{name}.error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {dir}/{name}-body;
    proxy_temp_path {dir}/{name}-proxy;
    fastcgi_temp_path {dir}/{name}-fastcgi;
    uwsgi_temp_path {dir}/{name}-uwsgi;
    scgi_temp_path {dir}/{name}-scgi;
{body}
}}
"""

NGINX_UPSTREAM = """
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{answer}';
        }}
    }}
"""

NGINX_PROXY = """
    upstream origin {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


def start_nginx(processes: Processes, tmp: Path, name: str, body: str) -> Started:
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(NGINX_COMMON.format(dir=tmp, name=name, body=body))
    return processes.start(f"nginx-{name}", [nginx_binary(), "-p", str(tmp), "-e", str(tmp / f"nginx-{name}.error.log"),
                                             "-c", str(conf)])


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


# --- the program ------------------------------------------------------------------------------

async def prepare_program(database_url: str, upstream_url: str) -> str:
    """Migrate a fresh database, apply bench/program.yaml and return the partner's key."""
    from accord.auth.actor import CLI_ACTOR
    from accord.core import migrate
    from accord.core.config import Settings
    from accord.core.db import create_engine, session_factory, session_scope
    from accord.program.apply import apply_program
    from accord.program.document import load_document

    await migrate.upgrade_async(database_url)
    settings = Settings(database_url=database_url, secret_key=SECRET_KEY)
    document = load_document(BENCH / "program.yaml", environ={**os.environ, "BENCH_UPSTREAM": upstream_url})
    engine = create_engine(database_url)
    try:
        async with session_scope(session_factory(engine)) as session:
            result = await apply_program(session, settings, document, actor=CLI_ACTOR)
    finally:
        await engine.dispose()
    (secret,) = [created.secret for created in result.secrets]
    return secret


def usage_recorded(database_file: Path) -> int:
    """Requests the gateway's usage recorder wrote (one request row per request, metric NULL)."""
    with sqlite3.connect(database_file) as db:
        return int(db.execute("SELECT COALESCE(SUM(count), 0) FROM usage_counts WHERE metric_id IS NULL").fetchone()[0])


def clean_redis(url: str) -> int:
    import redis

    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=f"{RATE_LIMIT_PREFIX}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
    return len(keys)


# --- wrk --------------------------------------------------------------------------------------

@dataclass
class Load:
    threads: int
    connections: int
    duration: float
    warmup: float


def run_wrk(processes: Processes, url: str, load: Load, key: str, seconds: float,
            rate: float | None = None) -> dict[str, Any]:
    env = {**os.environ, "BENCH_THREADS": str(load.threads)}
    env.pop("BENCH_RATE", None)
    if rate:
        env["BENCH_RATE"] = f"{rate:.1f}"
    argv = ["wrk", f"-t{load.threads}", f"-c{load.connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
            "-H", f"Authorization: Bearer {key}", "-s", str(BENCH / "wrk_report.lua"), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = processes.run("wrk", argv, env=env, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}\n{done.stdout}")
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures:\n{done.stdout}\n{done.stderr}")
    figures = json.loads(line.removeprefix("BENCH_JSON "))
    figures["errors"] = sum(figures[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts",
                                                 "non_2xx"))
    figures["wrk_cpu_seconds"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
    return figures


def redis_server_pid() -> int | None:
    """Redis is the machine's service, not ours: found only to count the CPU it uses."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "redis-server":
                    return int(entry)
            except OSError:
                continue
    return None


def measure(processes: Processes, name: str, url: str, load: Load, key: str, watched: dict[str, Started | int],
            rate: float | None = None) -> dict[str, Any]:
    """A warm-up, then the measured run; with the CPU each watched process group used meanwhile."""
    if load.warmup:
        run_wrk(processes, url, load, key, load.warmup, rate)
    cpu_before = {label: _cpu_seconds(s) for label, s in watched.items()}
    machine_before, steal_before = _machine_cpu_seconds()
    figures = run_wrk(processes, url, load, key, load.duration, rate)
    machine_after, steal_after = _machine_cpu_seconds()
    machine_used = machine_after - machine_before
    cpu, ours = {}, figures["wrk_cpu_seconds"]
    for label, started in watched.items():
        after = _cpu_seconds(started)
        per_process = [after[pid] - cpu_before[label].get(pid, 0.0) for pid in sorted(after)]
        ours += sum(per_process)
        cpu[label] = [round(100 * used / figures["seconds"]) for used in per_process if used > 0.01]
    cpu["wrk"] = [round(100 * figures["wrk_cpu_seconds"] / figures["seconds"])]
    figures["cpu_percent"] = cpu
    # This machine may be shared: CPU that neither the servers under test nor wrk used
    # (in % of one core; the machine has os.cpu_count() cores) makes the figures noisier.
    figures["other_cpu_percent"] = max(0, round(100 * (machine_used - ours) / figures["seconds"]))
    figures["steal_cpu_percent"] = round(100 * (steal_after - steal_before) / figures["seconds"])
    figures["name"] = name
    status = "" if not figures["errors"] else f"   !! {figures['errors']} errors"
    paced = f" at {rate:,.0f}/s" if rate else ""
    cpu_text = ", ".join(f"{label} {'+'.join(map(str, v)) or '0'}%" for label, v in cpu.items())
    cpu_text += f", other {figures['other_cpu_percent']}%"
    if figures["steal_cpu_percent"]:
        cpu_text += f", stolen {figures['steal_cpu_percent']}%"
    print(f"  {name + paced:<34} {figures['rps']:>9,.0f} req/s   p50 {figures['p50_us'] / 1000:6.2f} ms   "
          f"p99 {figures['p99_us'] / 1000:6.2f} ms   cpu: {cpu_text}{status}", flush=True)
    return figures


def check_answer(url: str, key: str, expect_ratelimit: bool = False) -> None:
    """One request by hand first: the target must answer 200 with the upstream's body."""
    answer = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=5)
    if answer.status_code != 200 or answer.text != UPSTREAM_BODY:
        raise RuntimeError(f"{url} answered {answer.status_code}: {answer.text[:300]}")
    if expect_ratelimit and "ratelimit" not in answer.headers:
        raise RuntimeError(f"{url} answered without RateLimit headers: limits are not applied")


# --- the other benchmarks -----------------------------------------------------------------------

LIMITS_LINE = re.compile(r"^(?P<label>.+?)\s+(?P<rate>[\d,]+) decisions/s\s+(?P<us>[\d.]+) µs each(?P<rest>.*)$")


def run_limits_bench(processes: Processes, redis_url: str) -> dict[str, Any]:
    done = processes.run("limits", [sys.executable, str(BENCH / "limits.py"), redis_url], timeout=600)
    print("\n".join("  " + line for line in done.stdout.splitlines()), flush=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    out: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        match = LIMITS_LINE.match(line)
        if match:
            out[match["label"].strip()] = {"decisions_per_second": int(match["rate"].replace(",", "")),
                                           "us_each": float(match["us"]), "note": match["rest"].strip()}
    return out


def run_snapshot_bench(processes: Processes, sizes: list[int]) -> dict[str, Any]:
    done = processes.run("snapshot", [sys.executable, str(BENCH / "snapshot_bench.py"), *map(str, sizes)],
                         timeout=1200)
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            figures = json.loads(line.removeprefix("BENCH_JSON "))
            results[str(figures["credentials"])] = figures
        else:
            print("  " + line, flush=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        results["error"] = f"snapshot_bench.py exited with {done.returncode}"
    return results


# --- the run ----------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    model = ""
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for tool, argv in {"wrk": ["wrk", "-v"], "nginx": [nginx_binary(), "-v"]}.items():
        done = subprocess.run(argv, capture_output=True, text=True)
        versions[tool] = (done.stdout + done.stderr).strip().splitlines()[0]
    import httptools
    import uvicorn
    import uvloop

    # The gateway runs on its own server and upstream client (accord.gateway.server, .upstream):
    # httptools parses both sides, uvloop runs them; uvicorn serves the naive proxy.
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "httptools": httptools.__version__, "uvloop": uvloop.__version__, "uvicorn": uvicorn.__version__,
            **versions}


def set_priority(nice: int) -> int:
    """Run (and start every server) at `nice`; children inherit it. Returns the nice value in force."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        print(f"note: cannot set nice {nice} (not root); running at normal priority", file=sys.stderr)
    return os.getpriority(os.PRIO_PROCESS, 0)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    parser.add_argument("--duration", type=float, default=10, help="seconds measured per run (default 10)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up before each run (default 3)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
                        help="Redis for the 2-process gateway and the limiter bench; its accord:rl:* keys are "
                             "deleted before and after (default redis://127.0.0.1:6379/12)")
    parser.add_argument("--snapshot-sizes", default="10000,100000,1000000",
                        help="credential counts for the snapshot bench, comma-separated ('' to skip)")
    parser.add_argument("--skip-limits", action="store_true", help="skip the limiter micro benchmark")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 s runs, 1 s warm-up, snapshot at 10k only (figures not comparable)")
    parser.add_argument("--priority", type=int, default=-10,
                        help="nice value for this run and everything it starts (default -10, needs root): on a "
                             "shared machine, other work then takes less of the CPU from the servers under test; "
                             "0 to run at normal priority")
    parser.add_argument("--output", type=Path, default=BENCH / "results.json")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.snapshot_sizes = 2, 1, "10000"
    load = Load(args.threads, args.connections, args.duration, args.warmup)
    sizes = [int(n) for n in args.snapshot_sizes.split(",") if n.strip()]

    # Any way out (Ctrl+C, kill, an error) goes through `finally` and stops every process.
    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    priority = set_priority(args.priority)
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="accord-bench-"))
    processes = Processes(tmp, nice=priority)
    results: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                               "load": {"threads": load.threads, "connections": load.connections,
                                        "duration_s": load.duration, "warmup_s": load.warmup},
                               "nice": priority}
    print(f"Accord gateway benchmark — {results['machine']['cpus']} CPUs ({results['machine']['cpu_model']}), "
          f"wrk -t{load.threads} -c{load.connections} -d{load.duration:g}s after {load.warmup:g} s of warm-up, "
          f"nice {priority}; "
          f"work files in {tmp}", flush=True)
    try:
        results.update(run_proxies(processes, tmp, load, args.redis_url))
        if not args.skip_limits:
            print("\nPolicy decisions (bench/limits.py: two limits per decision)", flush=True)
            results["limits"] = run_limits_bench(processes, args.redis_url)
        if sizes:
            print("\nSnapshot build and credential lookup (bench/snapshot_bench.py)", flush=True)
            results["snapshot"] = run_snapshot_bench(processes, sizes)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        processes.stop_all()
        try:
            clean_redis(args.redis_url)
        except Exception as exc:  # noqa: BLE001 - Redis may be the thing that failed
            print(f"warning: could not clean Redis at {args.redis_url}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)

    results["elapsed_seconds"] = round(time.monotonic() - began, 1)
    summarize(results)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_summary(results)
    print(f"\nwrote {args.output} ({results['elapsed_seconds']:.0f} s in all)")
    return 0


def run_proxies(processes: Processes, tmp: Path, load: Load, redis_url: str) -> dict[str, Any]:
    upstream_port, nginx_port, naive_port, accord_port = (free_port() for _ in range(4))
    upstream = start_nginx(processes, tmp, "upstream",
                           NGINX_UPSTREAM.format(port=upstream_port, answer=UPSTREAM_BODY))
    wait_http(f"http://127.0.0.1:{upstream_port}/", started=upstream)
    upstream_url = f"http://127.0.0.1:{upstream_port}"

    database_file = tmp / "accord.db"
    database_url = f"sqlite+aiosqlite:///{database_file}"
    key = asyncio.run(prepare_program(database_url, upstream_url))
    out: dict[str, Any] = {"scenarios": {}}
    runs = out["scenarios"]

    print("\nFull load", flush=True)
    direct_url = upstream_url + REQUEST_PATH
    check_answer(direct_url, key)
    runs["direct"] = measure(processes, "direct (nginx upstream)", direct_url, load, key, {"upstream": upstream})

    proxy = start_nginx(processes, tmp, "proxy", NGINX_PROXY.format(port=nginx_port, upstream_port=upstream_port))
    nginx_url = f"http://127.0.0.1:{nginx_port}{REQUEST_PATH}"
    wait_http(nginx_url, started=proxy)
    check_answer(nginx_url, key)
    runs["nginx"] = measure(processes, "nginx proxy_pass", nginx_url, load, key, {"proxy": proxy, "upstream": upstream})
    processes.stop(proxy)

    naive = processes.start("naive", [str(VENV_BIN / "uvicorn"), "bench.naive_proxy:app", "--host", "127.0.0.1",
                                      "--port", str(naive_port), "--log-level", "warning", "--no-access-log",
                                      "--loop", "uvloop", "--http", "httptools"],
                            env={**os.environ, "NAIVE_UPSTREAM": upstream_url})
    naive_url = f"http://127.0.0.1:{naive_port}{REQUEST_PATH}"
    wait_http(naive_url, started=naive)
    check_answer(naive_url, key)
    runs["naive"] = measure(processes, "naive FastAPI + httpx", naive_url, load, key,
                            {"proxy": naive, "upstream": upstream})
    processes.stop(naive)

    gateway_env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    gateway_env["ACCORD_SECRET_KEY"] = SECRET_KEY
    accord_url = f"http://127.0.0.1:{accord_port}{REQUEST_PATH}"
    sent_before = usage_recorded(database_file)

    def start_gateway(name: str, *extra: str) -> Started:
        gateway = processes.start(name, [str(VENV_BIN / "accord"), "gateway", "--port", str(accord_port),
                                         "--database", database_url, *extra], env=gateway_env)
        wait_http(f"http://127.0.0.1:{accord_port}/healthz", started=gateway)
        check_answer(accord_url, key, expect_ratelimit=True)
        return gateway

    gateway = start_gateway("accord")
    runs["accord"] = measure(processes, "Accord, 1 process, memory limits", accord_url, load, key,
                             {"gateway": gateway, "upstream": upstream})
    out["half_load"] = half = half_load(processes, load, key, runs["accord"]["rps"] / 2, {
        "accord": (accord_url, {"gateway": gateway, "upstream": upstream}),
        "direct": (direct_url, {"upstream": upstream}),
        "nginx": (nginx_url, {"upstream": upstream}),
    }, lambda: start_nginx(processes, tmp, "proxy", NGINX_PROXY.format(port=nginx_port, upstream_port=upstream_port)))
    processes.stop(gateway)  # the final flush writes the last usage counts

    # The reference's own tail: nginx at half of *its* maximum (it is at a few % of it above). Any
    # server at half its capacity meets the load generator's bursts (wrk's 1 ms pacing, 2 shared
    # cores) with a queue; this shows how much of Accord's added p99 that alone makes on this machine.
    out["nginx_half_load"] = half_load(processes, load, key, runs["nginx"]["rps"] / 2, {
        "nginx": (nginx_url, {"upstream": upstream}),
        "direct": (direct_url, {"upstream": upstream}),
    }, lambda: start_nginx(processes, tmp, "proxy", NGINX_PROXY.format(port=nginx_port, upstream_port=upstream_port)),
        title="Half of nginx's own maximum")

    # The same gateway under uvicorn instead of its own server: the side-by-side reason for that server.
    gateway = start_gateway("accord-uvicorn", "--server", "uvicorn")
    runs["accord_uvicorn"] = measure(processes, "Accord, 1 process, under uvicorn", accord_url, load, key,
                                     {"gateway": gateway, "upstream": upstream})
    processes.stop(gateway)

    print("\nFull load, Accord in two processes (--workers 2), limits in Redis", flush=True)
    clean_redis(redis_url)
    gateway = start_gateway("accord-2proc", "--workers", "2", "--redis", redis_url)
    watched: dict[str, Started | int] = {"gateway": gateway, "upstream": upstream}
    redis_pid = redis_server_pid()
    if redis_pid is not None:
        watched["redis"] = redis_pid
    runs["accord_2proc"] = measure(processes, "Accord, 2 processes, Redis limits", accord_url, load, key, watched)
    processes.stop(gateway)
    clean_redis(redis_url)

    # Usage recording was on: every request that reached the gateway must have been counted.
    sent = sum(runs[k]["requests"] for k in ("accord", "accord_uvicorn", "accord_2proc")) + half["accord"]["requests"]
    out["usage_recorded"] = {"requests_recorded": usage_recorded(database_file) - sent_before,
                             "requests_measured": sent,
                             "note": "recorded also counts warm-up and check requests; must be >= measured"}
    processes.stop(upstream)
    return out


HALF_LOAD_ROUNDS = 3


def half_load(processes: Processes, load: Load, key: str, rate: float,
              targets: dict[str, tuple[str, dict[str, Started | int]]], start_proxy: Any,
              title: str = "Half of Accord's maximum") -> dict[str, Any]:
    """The targets (direct, nginx, maybe Accord) at the same fixed rate, interleaved over a few rounds.

    Interleaving spreads any outside disturbance over all of them; the added latency
    of a proxy is the median over the rounds of (proxy − direct) of each round.
    """
    print(f"\n{title}: paced at {rate:,.0f} requests/s, {HALF_LOAD_ROUNDS} interleaved rounds "
          f"(wrk + bench/wrk_report.lua)", flush=True)
    proxy = start_proxy()
    nginx_url, nginx_watched = targets["nginx"]
    targets = {**targets, "nginx": (nginx_url, {**nginx_watched, "proxy": proxy})}
    wait_http(nginx_url, started=proxy)
    rounds: list[dict[str, Any]] = []
    for number in range(1, HALF_LOAD_ROUNDS + 1):
        rounds.append({name: measure(processes, f"round {number}: {name}", url, load, key, watched, rate=rate)
                       for name, (url, watched) in targets.items()})
    processes.stop(proxy)
    half: dict[str, Any] = {"rate": round(rate, 1), "rounds": rounds}
    for name in targets:
        figures = [r[name] for r in rounds]
        half[name] = {"p50_us": statistics.median(f["p50_us"] for f in figures),
                      "p99_us": statistics.median(f["p99_us"] for f in figures),
                      "requests": sum(f["requests"] for f in figures), "errors": sum(f["errors"] for f in figures)}
    for name in (name for name in targets if name != "direct"):
        for cut in ("p50", "p99"):
            added = [(r[name][f"{cut}_us"] - r["direct"][f"{cut}_us"]) / 1000 for r in rounds]
            half[f"{name}_{cut}_added_ms_by_round"] = [round(a, 3) for a in added]
            half[f"{name}_{cut}_added_ms"] = round(statistics.median(added), 3)
    return half


def summarize(results: dict[str, Any]) -> None:
    """The headline figures, at the top level of results.json."""
    runs, half = results["scenarios"], results["half_load"]
    results.update({
        "direct_rps": runs["direct"]["rps"], "nginx_rps": runs["nginx"]["rps"], "naive_rps": runs["naive"]["rps"],
        "accord_rps": runs["accord"]["rps"], "accord_2proc_rps": runs["accord_2proc"]["rps"],
        "accord_uvicorn_rps": runs["accord_uvicorn"]["rps"],
        "accord_vs_nginx": ratio(runs["accord"]["rps"], runs["nginx"]["rps"]),
        "accord_vs_naive": ratio(runs["accord"]["rps"], runs["naive"]["rps"]),
        "accord_2proc_vs_nginx": ratio(runs["accord_2proc"]["rps"], runs["nginx"]["rps"]),
        "half_load_rps": half["rate"],
        "p50_added_ms": half["accord_p50_added_ms"], "p99_added_ms": half["accord_p99_added_ms"],
        "nginx_p50_added_ms": half["nginx_p50_added_ms"], "nginx_p99_added_ms": half["nginx_p99_added_ms"],
        "nginx_own_half_load_rps": results["nginx_half_load"]["rate"],
        "nginx_own_half_load_p99_added_ms": results["nginx_half_load"]["nginx_p99_added_ms"],
    })
    results["targets"] = {
        "accord >= 30% of nginx rps": results["accord_vs_nginx"] >= 0.30,
        "accord >= 10x naive rps": results["accord_vs_naive"] >= 10,
        "p99 added <= 2 ms at half load": results["p99_added_ms"] <= 2.0,
    }
    errors = {name: r["errors"] for name, r in runs.items() if r["errors"]}
    errors.update({f"half load {name}": half[name]["errors"] for name in ("accord", "direct", "nginx")
                   if half[name]["errors"]})
    own = results["nginx_half_load"]
    errors.update({f"nginx's own half load {name}": own[name]["errors"] for name in ("direct", "nginx")
                   if own[name]["errors"]})
    results["errors"] = errors


def print_summary(results: dict[str, Any]) -> None:
    runs, half, errors = results["scenarios"], results["half_load"], results["errors"]
    print("\n" + "=" * 78)
    print(f"{'':<36}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs nginx':>11}")
    for key, label in [("direct", "direct to upstream"), ("nginx", "nginx proxy_pass (reference)"),
                       ("naive", "naive FastAPI + httpx (floor)"), ("accord", "Accord, 1 process"),
                       ("accord_uvicorn", "Accord, 1 process, under uvicorn"),
                       ("accord_2proc", "Accord, 2 processes + Redis")]:
        r = runs[key]
        print(f"{label:<36}{r['rps']:>10,.0f}{r['p50_us'] / 1000:>10.2f}{r['p99_us'] / 1000:>10.2f}"
              f"{ratio(r['rps'], runs['nginx']['rps']):>10.0%}")
    print(f"\nAccord / nginx {results['accord_vs_nginx']:.0%}   Accord / naive {results['accord_vs_naive']:.1f}×   "
          f"Accord 2 processes / nginx {results['accord_2proc_vs_nginx']:.0%}")
    print(f"At {half['rate']:,.0f} req/s (half of Accord's max; medians of {len(half['rounds'])} rounds):")
    print(f"{'':<36}{'p50 ms':>10}{'p99 ms':>10}{'p50 added':>11}{'p99 added':>11}")
    for name, label in [("direct", "direct"), ("nginx", "nginx proxy_pass"), ("accord", "Accord, 1 process")]:
        added = ("", "") if name == "direct" else (f"{half[f'{name}_p50_added_ms']:+.2f}",
                                                   f"{half[f'{name}_p99_added_ms']:+.2f}")
        print(f"{label:<36}{half[name]['p50_us'] / 1000:>10.2f}{half[name]['p99_us'] / 1000:>10.2f}"
              f"{added[0]:>11}{added[1]:>11}")
    own = results["nginx_half_load"]
    print(f"nginx at half of its own max ({own['rate']:,.0f} req/s): p99 {own['nginx']['p99_us'] / 1000:.2f} ms, "
          f"added {own['nginx_p99_added_ms']:+.2f} (direct {own['direct']['p99_us'] / 1000:.2f}) — the tail any "
          f"server at half load gets here")
    usage = results["usage_recorded"]
    print(f"Usage recorded by the gateways: {usage['requests_recorded']:,} requests "
          f"(measured {usage['requests_measured']:,} + warm-ups)")
    for name, met in results["targets"].items():
        print(f"  target {name}: {'met' if met else 'MISSED'}")
    if errors:
        print(f"  !! runs with errors (figures suspect): {errors}")


if __name__ == "__main__":
    sys.exit(main())
