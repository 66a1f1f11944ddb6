"""The PDP side by side with direct OPA, in one run, on this machine: `make bench`.

Direct OPA is driven over its REST API by vegeta; the PDP's Decide by ghz. Both get the same
request mix (the allow / deny / require_approval examples; OPA gets exactly the input the PDP
would send it, with the same ?provenance=true&metrics=true), first closed-loop at a fixed
concurrency (peak), then open-loop at fixed rates. CPU seconds per decision come from /proc for
each process (the PDP's figure is the PDP plus its OPA sidecar) and, in brackets, from rusage for
the load generator: on two cores the generator competes for the same CPU, and ghz costs more per
call than vegeta. Peak RSS from VmHWM. `--quick` runs only the two peaks.

Figures on a shared 2-core machine are noisy: read ratios, not absolutes. Results: a table on
stdout, JSON and a latency-vs-load PNG under bench/results/.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from pdp import keys
from pdp.context import Caller, build_input
from pdp.sidecar import OpaSidecar, free_port
from pdp.v1 import decision_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("BENCH_BIN") or ROOT / ".bin")  # the Go tools (opa, ghz, vegeta, grpcurl)
RESULTS = ROOT / "bench" / "results"
MIX = ["allow-crm-lookup.json", "deny-tool-not-granted.json", "require-approval-high-risk.json"]
QUERY = "/v1/data/pdp/decision?provenance=true&metrics=true"
TICK = os.sysconf("SC_CLK_TCK")
BATCH = 10  # requests per DecideBatch call: e.g. the parallel tool calls of one model turn
BATCHED = f"pdp DecideBatch x{BATCH}"
NO_COALESCE = "pdp (no coalescing)"
UNCOALESCED = {"PDP_OPA_COALESCE": "false"}


@dataclasses.dataclass
class Point:
    target: str
    mode: str
    concurrency: int
    rate: float  # asked for; 0 = as fast as it goes
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    count: int
    cpu_ms_per_decision: dict[str, float]
    peak_rss_mb: dict[str, float]


def requests_mix() -> list[pb.DecideRequest]:
    out = []
    for name in MIX:
        req = json_format.Parse((ROOT / "examples" / name).read_text(), pb.DecideRequest())
        req.request_id = ""  # every call a new decision (a repeated request id is answered from the log)
        out.append(req)
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Measured:
    """CPU and RSS of named processes around one load run."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {n: cpu_s(p) for n, p in pids.items()}

    def done(self, count: int) -> tuple[dict[str, float], dict[str, float]]:
        cpu = {n: (cpu_s(p) - self.start[n]) * 1000 / max(count, 1) for n, p in self.pids.items()}
        return cpu, {n: rss_mb(p) for n, p in self.pids.items()}


@contextlib.contextmanager
def loadgen_cpu() -> Iterator[list[float]]:
    """CPU seconds of the load generator run inside the block (the children waited for there)."""
    used = [0.0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    yield used
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used[0] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def vegeta(opa: OpaSidecar, work: Path, *, seconds: float, concurrency: int, rate: float) -> dict[str, Any]:
    targets = work / "targets.jsonl"
    caller = Caller(authenticated=False, peer="ipv4:127.0.0.1:0")
    with targets.open("w") as f:
        for req in requests_mix():
            doc = build_input(req, caller=caller, request_time="2026-11-24T12:00:00Z", max_depth=16)
            body = json.dumps({"input": doc}, separators=(",", ":")).encode()
            f.write(
                json.dumps(
                    {
                        "method": "POST",
                        "url": opa.url + QUERY,
                        "body": base64.b64encode(body).decode(),
                        "header": {"Content-Type": ["application/json"]},
                    }
                )
                + "\n"
            )
    attack = [
        str(BIN / "vegeta"),
        "attack",
        "-format=json",
        f"-targets={targets}",
        f"-duration={seconds}s",
        f"-workers={concurrency}",
        f"-max-workers={concurrency}",
        f"-rate={int(rate)}/s" if rate else "-rate=0",
    ]
    with loadgen_cpu() as used:
        raw = subprocess.run(attack, capture_output=True, check=True).stdout
    report = json.loads(
        subprocess.run([str(BIN / "vegeta"), "report", "-type=json"], input=raw, capture_output=True, check=True).stdout
    )
    lat = report["latencies"]
    errors = sum(v for k, v in report["status_codes"].items() if k != "200")
    return {
        "count": report["requests"],
        "rps": report["throughput"],
        "p50": lat["50th"],
        "p90": lat["90th"],
        "p99": lat["99th"],
        "errors": errors,
        "loadgen_cpu_s": used[0],
    }


def ghz(
    addr: str, work: Path, *, seconds: float, concurrency: int, rate: float, explain: int, batch: int = 0
) -> dict[str, Any]:
    """Drives Decide (or DecideBatch with ``batch`` requests per call); rate and counts are in decisions."""
    data = work / "requests.json"
    msgs = []
    for req in requests_mix():
        req.explain = explain  # type: ignore[assignment]
        msgs.append(json_format.MessageToDict(req))
    if batch:
        msgs = [{"requests": [msgs[(j + k) % len(msgs)] for k in range(batch)]} for j in range(len(msgs))]
    data.write_text(json.dumps(msgs))
    import grpc_tools

    includes = f"{ROOT / 'protos'},{Path(grpc_tools.__file__).parent / '_proto'}"  # google/protobuf/*.proto
    cmd = [
        str(BIN / "ghz"),
        "--insecure",
        "--proto",
        str(ROOT / "protos/pdp/v1/decision.proto"),
        f"--import-paths={includes}",
        "--call",
        "pdp.v1.DecisionService/DecideBatch" if batch else "pdp.v1.DecisionService/Decide",
        f"--data-file={data}",
        f"--concurrency={concurrency}",
        f"--duration={seconds}s",
        "--format=json",
        "--duration-stop=wait",
        f"--connections={min(4, concurrency)}",
        addr,
    ]
    if rate:
        cmd.append(f"--rps={max(1, int(rate / max(batch, 1)))}")
    with loadgen_cpu() as used:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ghz failed: {done.stderr or done.stdout}")
    out = json.loads(done.stdout)
    dist = {d["percentage"]: d["latency"] for d in out.get("latencyDistribution") or []}
    errors = sum(v for k, v in (out.get("statusCodeDistribution") or {}).items() if k != "OK")
    return {
        "count": out["count"] * max(batch, 1),
        "rps": out["rps"] * max(batch, 1),
        "p50": dist.get(50, 0),
        "p90": dist.get(90, 0),
        "p99": dist.get(99, 0),
        "errors": errors,
        "loadgen_cpu_s": used[0],
    }


def start_opa(work: Path, *, unix: bool = False) -> OpaSidecar:
    opa = OpaSidecar(
        opa_bin=str(BIN / "opa"),
        bundle=ROOT / "rego",
        addr=f"unix://{work / 'opa.sock'}" if unix else f"127.0.0.1:{free_port()}",
        log_file=(work / "opa.log").open("ab"),
    )
    opa.start()
    return opa


def start_pdp(
    opa: OpaSidecar, work: Path, *, log_dir: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    keys.ensure(work / "keys")
    env = {
        **os.environ,
        "PDP_LISTEN": f"127.0.0.1:{port}",
        "PDP_OPA_URL": opa.url,
        "PDP_KEY_DIR": str(work / "keys"),
        "PDP_DECIDE_RATE": "0",  # the per-caller rate limit would cap the load generator, one caller
        "PDP_LOG_DIR": str(log_dir),
        "PDP_LOG_LEVEL": "WARNING",
        "PDP_OPA_TIMEOUT_MS": "2000",
        **(extra_env or {}),
    }
    for k in [k for k in env if k.startswith("OTEL_")]:
        env.pop(k)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdp", "serve"],
        env=env,
        cwd=ROOT,
        stdout=(work / "pdp.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    out = subprocess.run(
        [str(BIN / "grpcurl"), "-plaintext", "-max-time", "20", f"127.0.0.1:{port}", "list"],
        check=False,
        capture_output=True,
    )  # waits for the listener; reflection answers once serving
    deadline = time.monotonic() + 20
    while out.returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        out = subprocess.run(
            [str(BIN / "grpcurl"), "-plaintext", f"127.0.0.1:{port}", "list"], check=False, capture_output=True
        )
    if out.returncode != 0:
        raise RuntimeError(f"the PDP did not start: {(work / 'pdp.log').read_text()[-2000:]}")
    return proc, f"127.0.0.1:{port}"


def point(target: str, mode: str, concurrency: int, rate: float, r: dict[str, Any], m: Measured) -> Point:
    cpu, rss = m.done(r["count"])
    cpu["loadgen"] = r["loadgen_cpu_s"] * 1000 / max(r["count"], 1)
    return Point(
        target,
        mode,
        concurrency,
        rate,
        r["rps"],
        r["p50"] / 1e6,
        r["p90"] / 1e6,
        r["p99"] / 1e6,
        r["errors"],
        r["count"],
        cpu,
        rss,
    )


def bench_opa(args: argparse.Namespace, work: Path, rates: list[float], *, half: bool = True) -> list[Point]:
    opa = start_opa(work)
    try:
        assert opa.process is not None
        pids = {"opa": opa.process.pid}
        vegeta(opa, work, seconds=1, concurrency=args.concurrency, rate=0)  # warm-up
        m = Measured(pids)
        points = [
            point(
                "opa",
                "peak",
                args.concurrency,
                0,
                vegeta(opa, work, seconds=args.seconds, concurrency=args.concurrency, rate=0),
                m,
            )
        ]
        for rate in [*rates, points[0].rps / 2] if half else rates:
            m = Measured(pids)
            r = vegeta(opa, work, seconds=args.seconds, concurrency=args.concurrency, rate=rate)
            points.append(point("opa", "rate", args.concurrency, rate, r, m))
        return points
    finally:
        opa.stop()


def bench_pdp(
    args: argparse.Namespace,
    work: Path,
    name: str,
    *,
    explain: int,
    log_dir: Path,
    sweep: bool,
    rates: bool = True,
    unix: bool = False,
    batch: int = 0,
    extra_env: dict[str, str] | None = None,
    at_rates: tuple[float, ...] = (),
) -> list[Point]:
    """Peak, then open-loop points: at fractions of this peak (``sweep``, ``rates``) or at ``at_rates``."""
    opa = start_opa(work, unix=unix)
    proc, addr = start_pdp(opa, work, log_dir=log_dir, extra_env=extra_env)
    try:
        assert opa.process is not None
        pids = {"pdp": proc.pid, "opa": opa.process.pid}
        conc = args.concurrency if explain < 3 else 2
        ghz(addr, work, seconds=1, concurrency=conc, rate=0, explain=explain, batch=batch)  # warm-up
        m = Measured(pids)
        r = ghz(addr, work, seconds=args.seconds, concurrency=conc, rate=0, explain=explain, batch=batch)
        peak = point(name, "peak", conc, 0, r, m)
        points = [peak]
        fractions = (0.25, 0.5, 0.75) if sweep else (0.5,) if rates else ()
        for rate in at_rates or tuple(peak.rps * f for f in fractions):
            m = Measured(pids)
            r = ghz(
                addr,
                work,
                seconds=args.seconds,
                concurrency=max(conc, 8),
                rate=rate,
                explain=explain,
                batch=batch,
            )
            points.append(point(name, "rate", max(conc, 8), rate, r, m))
        return points
    finally:
        proc.terminate()
        proc.wait(20)
        opa.stop()


def table(points: list[Point]) -> str:
    head = (
        f"{'target':<22}{'mode':<6}{'asked':>8}{'rps':>9}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
        f"{'err':>5}{'cpu ms/dec (+load gen)':>26}{'peak RSS MB':>22}"
    )
    rows = [head, "-" * len(head)]
    for p in points:
        own = [f"{v:.2f}" for k, v in p.cpu_ms_per_decision.items() if k != "loadgen"]
        cpu = "+".join(own) + f" ({p.cpu_ms_per_decision.get('loadgen', 0):.2f})"
        rss = "+".join(f"{v:.0f}" for v in p.peak_rss_mb.values())
        asked = f"{p.rate:.0f}" if p.rate else "max"
        rows.append(
            f"{p.target:<22}{p.mode:<6}{asked:>8}{p.rps:>9.0f}{p.p50_ms:>8.2f}{p.p90_ms:>8.2f}"
            f"{p.p99_ms:>8.2f}{p.errors:>5}{cpu:>26}{rss:>22}"
        )
    return "\n".join(rows)


def nearest(points: list[Point], target: str, rate: float) -> Point:
    cands = [p for p in points if p.target == target and p.mode == "rate"]
    return min(cands, key=lambda p: abs(p.rate - rate))


def plot(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, target in enumerate(dict.fromkeys(p.target for p in points)):
        pts = sorted((p for p in points if p.target == target), key=lambda p: p.rps)
        color = plt.get_cmap("tab10")(i % 10)  # one color per configuration: p50 solid, p99 dashed
        ax.plot([p.rps for p in pts], [p.p50_ms for p in pts], marker="o", color=color, label=f"{target} p50")
        ax.plot(
            [p.rps for p in pts],
            [p.p99_ms for p in pts],
            marker="x",
            linestyle="--",
            color=color,
            label=f"{target} p99",
        )
    ax.set_xlabel("throughput (decisions/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("PDP Decide vs direct OPA REST, same policy and request mix")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def quick(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="pdp-bench-") as tmp:
        work = Path(tmp)
        pdp = bench_pdp(args, work, "pdp", explain=0, log_dir=work / "log", sweep=False, rates=False)
        pdp += bench_pdp(
            args, work, BATCHED, explain=0, log_dir=work / "log-batch", sweep=False, rates=False, batch=BATCH
        )
        pdp += bench_pdp(
            args, work, NO_COALESCE, explain=0, log_dir=work / "log-nc", sweep=False, rates=False, extra_env=UNCOALESCED
        )
        opa = bench_opa(args, work, [], half=False)
    print(table(opa + pdp))
    print(
        f"PDP/OPA throughput: Decide {pdp[0].rps / opa[0].rps:.2f}, DecideBatch {pdp[1].rps / opa[0].rps:.2f}, "
        f"Decide without coalescing {pdp[2].rps / opa[0].rps:.2f}"
    )
    return 0


GOALS = (  # issue 21: (figure, goal, True when at least the goal, False when at most)
    ("single Decide throughput / direct OPA", 0.50, True),
    (f"DecideBatch x{BATCH} decisions/s / direct OPA", 1.0, True),
    ("p50 at half the PDP's peak / OPA's p50 at that rate (*)", 2.0, False),
    ("p99 at half the PDP's peak / OPA's p99 at that rate (*)", 3.0, False),
)


def interleaved(args: argparse.Namespace, work: Path, rate: float, rounds: int = 3) -> list[tuple[Point, Point]]:
    """Direct OPA and the PDP at the same ``rate``, in alternating slices (OPA, PDP, OPA, PDP, ...).

    On a shared machine the load of others drifts over minutes; slices side by side see the same
    drift, so the ratio of each pair is fairer than that of two runs minutes apart.
    """
    direct = start_opa(work)
    sidecar = start_opa(work)
    proc, addr = start_pdp(sidecar, work, log_dir=work / "log-interleaved")
    pairs = []
    try:
        assert direct.process is not None and sidecar.process is not None
        conc = max(args.concurrency, 8)
        ghz(addr, work, seconds=1, concurrency=conc, rate=rate, explain=0)  # warm-up
        vegeta(direct, work, seconds=1, concurrency=conc, rate=rate)
        for _ in range(rounds):
            m = Measured({"opa": direct.process.pid})
            o = point(
                "opa (interleaved)",
                "rate",
                conc,
                rate,
                vegeta(direct, work, seconds=args.seconds, concurrency=conc, rate=rate),
                m,
            )
            m = Measured({"pdp": proc.pid, "opa": sidecar.process.pid})
            d = point(
                "pdp (interleaved)",
                "rate",
                conc,
                rate,
                ghz(addr, work, seconds=args.seconds, concurrency=conc, rate=rate, explain=0),
                m,
            )
            pairs.append((o, d))
    finally:
        proc.terminate()
        proc.wait(20)
        sidecar.stop()
        direct.stop()
    return pairs


def goals(points: list[Point], pdp: Point, batched: Point, pairs: list[tuple[Point, Point]]) -> str:
    """The issue's goal table from this run, each figure against its goal, and the CPU that sets them."""
    opa = points[0]
    measured = (
        pdp.rps / opa.rps,
        batched.rps / opa.rps,
        statistics.median(d.p50_ms / o.p50_ms for o, d in pairs),
        statistics.median(d.p99_ms / o.p99_ms for o, d in pairs),
    )
    rows = [f"{'figure':<56}{'measured':>10}{'goal':>9}  met", "-" * 80]
    for (name, goal, at_least), value in zip(GOALS, measured, strict=True):
        met = value >= goal if at_least else value <= goal
        rows.append(
            f"{name:<56}{value:>9.2f}x{('>= ' if at_least else '<= ') + f'{goal:.2f}':>9}  {'yes' if met else 'NO'}"
        )
    own = pdp.cpu_ms_per_decision
    rows.append(
        "CPU ms per decision at peak (all on the same 2 cores): direct OPA "
        f"{opa.cpu_ms_per_decision['opa']:.2f} + vegeta {opa.cpu_ms_per_decision['loadgen']:.2f}; "
        f"PDP {own['pdp']:.2f} + its OPA {own['opa']:.2f} + ghz {own['loadgen']:.2f}"
    )
    direct = opa.cpu_ms_per_decision["opa"] + opa.cpu_ms_per_decision["loadgen"]
    rows.append(
        "on a CPU-bound box the throughput ratio is about the inverse of the CPU per decision "
        f"(load generators included): {direct / sum(own.values()):.2f}"
    )
    rows.append(
        f"(*) median of {len(pairs)} pairs of slices at {pairs[0][0].rate:.0f}/s, OPA and PDP alternating: "
        + ", ".join(f"p50 {d.p50_ms:.1f}/{o.p50_ms:.1f} p99 {d.p99_ms:.1f}/{o.p99_ms:.1f} ms" for o, d in pairs)
    )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", "5")))
    ap.add_argument("--concurrency", type=int, default=int(os.environ.get("BENCH_CONCURRENCY", "16")))
    ap.add_argument(
        "--quick",
        action="store_true",
        help="only the two peaks and the PDP/OPA ratio: for measuring one change at a time",
    )
    args = ap.parse_args()
    if args.quick:
        return quick(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="pdp-bench-") as tmp,
        tempfile.TemporaryDirectory(prefix="pdp-bench-", dir="/dev/shm") as shm,
    ):
        work = Path(tmp)
        points = bench_pdp(args, work, "pdp", explain=0, log_dir=work / "log", sweep=True)
        pdp_peak = points[0].rps
        points += bench_pdp(args, work, BATCHED, explain=0, log_dir=work / "log-batch", sweep=False, batch=BATCH)
        points += bench_pdp(
            args,
            work,
            NO_COALESCE,
            explain=0,
            log_dir=work / "log-nc",
            sweep=False,
            extra_env=UNCOALESCED,
            at_rates=(pdp_peak / 2,),  # the same rate as the PDP's half-peak point
        )
        points += bench_pdp(args, work, "pdp (log on tmpfs)", explain=0, log_dir=Path(shm) / "log", sweep=False)
        points += bench_pdp(
            args, work, "pdp (OPA on unix sock)", explain=0, log_dir=work / "log-unix", sweep=False, unix=True
        )
        points += bench_pdp(args, work, "pdp explain=notes", explain=1, log_dir=work / "log-notes", sweep=False)
        points += bench_pdp(args, work, "pdp explain=full", explain=3, log_dir=work / "log-full", sweep=False)
        opa_points = bench_opa(args, work, [pdp_peak * f for f in (0.25, 0.5, 0.75)])
        points = opa_points + points
        pairs = interleaved(args, work, pdp_peak / 2)
        points += [p for pair in pairs for p in pair]
    opa_peak = points[0].rps
    at = pdp_peak / 2
    o, d = nearest(points, "opa", at), nearest(points, "pdp", at)
    dur = next(p for p in points if p.target == "pdp (log on tmpfs)" and p.mode == "peak")
    batched = next(p for p in points if p.target == BATCHED and p.mode == "peak")
    pdp_point = next(p for p in points if p.target == "pdp")
    pdp_cpu = pdp_point.cpu_ms_per_decision["pdp"] + pdp_point.cpu_ms_per_decision["opa"]
    pdp_rss = pdp_point.peak_rss_mb["pdp"] + pdp_point.peak_rss_mb["opa"]
    summary = {
        "throughput_ratio_pdp_over_opa": pdp_peak / opa_peak,
        "cpu_per_decision_ratio_pdp_with_its_opa_over_opa": pdp_cpu / points[0].cpu_ms_per_decision["opa"],
        "peak_rss_ratio_pdp_with_its_opa_over_opa": pdp_rss / points[0].peak_rss_mb["opa"],
        "latency_ratio_at_half_pdp_peak": {"p50": d.p50_ms / o.p50_ms, "p99": d.p99_ms / o.p99_ms},
        "latency_ratio_at_half_pdp_peak_interleaved_median": {
            "p50": statistics.median(b.p50_ms / a.p50_ms for a, b in pairs),
            "p99": statistics.median(b.p99_ms / a.p99_ms for a, b in pairs),
        },
        "throughput_ratio_pdp_batched_over_opa": batched.rps / opa_peak,
        "added_latency_at_half_pdp_peak_ms": {"rate": at, "p50": d.p50_ms - o.p50_ms, "p99": d.p99_ms - o.p99_ms},
        "durable_log_vs_tmpfs_throughput": pdp_peak / dur.rps,
        "cpu_ms_per_decision": {"opa_direct": points[0].cpu_ms_per_decision, "pdp": pdp_point.cpu_ms_per_decision},
    }
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "uname": " ".join(os.uname())}
    (RESULTS / f"bench-{stamp}.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "seconds": args.seconds,
                "concurrency": args.concurrency,
                "summary": summary,
                "points": [dataclasses.asdict(p) for p in points],
            },
            indent=2,
        )
    )
    plot(points, RESULTS / f"latency-vs-load-{stamp}.png")
    print(table(points))
    print()
    print(
        f"PDP/OPA throughput: {summary['throughput_ratio_pdp_over_opa']:.2f}  "
        f"(PDP {pdp_peak:.0f}/s, OPA {opa_peak:.0f}/s at concurrency {args.concurrency})"
    )
    print(f"with DecideBatch of {BATCH}: {batched.rps:.0f} decisions/s, {batched.rps / opa_peak:.2f}x direct OPA")
    print(
        f"added latency at {at:.0f}/s (half the PDP's peak): p50 +{d.p50_ms - o.p50_ms:.2f} ms, "
        f"p99 +{d.p99_ms - o.p99_ms:.2f} ms (x{d.p50_ms / o.p50_ms:.1f} and x{d.p99_ms / o.p99_ms:.1f})"
    )
    cpu_ratio = summary["cpu_per_decision_ratio_pdp_with_its_opa_over_opa"]
    rss_ratio = summary["peak_rss_ratio_pdp_with_its_opa_over_opa"]
    print(f"PDP (with its OPA) / direct OPA: CPU per decision x{cpu_ratio:.1f}, peak RSS x{rss_ratio:.1f}")
    print(
        f"durable log (fsync per group commit) vs log on tmpfs: {summary['durable_log_vs_tmpfs_throughput']:.2f}x "
        "the throughput"
    )
    uncoalesced = next(p for p in points if p.target == NO_COALESCE and p.mode == "peak")
    u_half = nearest(points, NO_COALESCE, at)
    print(
        f"coalescing (PDP_OPA_COALESCE): peak {pdp_peak:.0f} vs {uncoalesced.rps:.0f}/s without "
        f"({pdp_peak / uncoalesced.rps:.2f}x); at half peak p99 {d.p99_ms:.2f} vs {u_half.p99_ms:.2f} ms without"
    )
    print()
    print(goals(points, pdp_point, batched, pairs))
    print(f"results: {RESULTS}/bench-{stamp}.json, latency-vs-load-{stamp}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
