"""Where a Decide's CPU goes inside the PDP: cProfile over in-process decisions against a real OPA.

    .venv/bin/python bench/hotpath.py [N]

Runs N decisions of the bench's request mix through the same Decider the server uses (real OPA
sidecar, real key, real durable log in a temp directory) and prints the top functions by own
time per decision. The gRPC framework's share is not in here: compare with bench/run.py's CPU.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from pdp import keys
from pdp.context import Caller
from pdp.decide import Decider
from pdp.opa import OpaClient
from pdp.recorder import open_recorder
from pdp.sidecar import OpaSidecar, free_port
from pdp.telemetry import Telemetry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BIN, ROOT, requests_mix


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with (
        tempfile.TemporaryDirectory(prefix="pdp-profile-") as tmp,
        OpaSidecar(opa_bin=str(BIN / "opa"), bundle=ROOT / "rego", addr=f"127.0.0.1:{free_port()}") as opa,
    ):
        work = Path(tmp)
        ring = keys.ensure(work / "keys")
        recorder = open_recorder(
            ring=ring,
            log_dir=work / "log",
            origin="bench/profile",
            ttl_s=300,
            mask=(),
            erase=(),
            checkpoint_every=1000,
            checkpoint_interval_s=1.0,
            segment_max_bytes=64 << 20,
        )
        telemetry = Telemetry(env={})
        decider = Decider(
            opa=OpaClient(opa.url, "pdp/decision", telemetry),
            recorder=recorder,
            decision_path="pdp/decision",
            opa_timeout_s=2,
            max_depth=16,
            telemetry=telemetry,
        )
        caller = Caller(authenticated=False, peer="ipv4:127.0.0.1:1")
        mix = requests_mix()
        for i in range(50):
            decider.decide(mix[i % 3], caller=caller, time_remaining_s=None)
        cpu = time.process_time()
        for i in range(n):
            decider.decide(mix[i % 3], caller=caller, time_remaining_s=None)
        cpu = (time.process_time() - cpu) / n
        prof = cProfile.Profile()
        prof.enable()
        for i in range(n):
            decider.decide(mix[i % 3], caller=caller, time_remaining_s=None)
        prof.disable()
        recorder.close()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"{n} decisions, {cpu * 1000:.3f} ms of PDP CPU each, unprofiled, one at a time (no gRPC)")
    print(f"profiled: {total / n * 1000:.3f} ms of PDP-side time each (incl. waiting on OPA and fsync)")
    stats.sort_stats(sys.argv[2] if len(sys.argv) > 2 else "tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
