#!/usr/bin/python3
"""The coordinator's share of a real job's wall time (what scheduling and merging cost).

A head-ablation sweep on a GPT-2-small-shaped checkpoint (12 layers, 12 heads, d_model 768,
random weights: the work is the same as GPT-2 small's), run twice in one go:
  baseline  `lensgrid search --in-process` (one process, all cores)
  sharded   a real lensgrid-coordinator and 2 real lensgrid-workers on loopback
            (1 matmul thread each), submitted with `lensgrid search --coordinator`.
It prints both wall times side by side, the coordinator's CPU time (from /proc) as a share of
the sharded job's wall time, and where the workers' time went (running shards, sending results,
waiting on the coordinator), from their logs.

usage: coordinator_share.py BUILD_DIR [--prompts N] [--heads-per-shard K]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--heads-per-shard", type=int, default=9)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    lensgrid = f"{build}/client/lensgrid"
    sys.path.insert(0, f"{build}/client/python")
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "cluster"))
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "worker"))
    from cluster_harness import SHARD_DONE_RE, CoordinatorProcess, wait_for
    from lensgrid.v1 import coordinator_pb2 as cpb
    from worker_harness import WorkerProcess

    tmp = tempfile.TemporaryDirectory()
    model = os.path.join(tmp.name, "gpt2-small-shaped")
    subprocess.run([lensgrid, "init", "--out", model, "--layers", "12", "--heads", "12",
                    "--d-model", "768", "--n-ctx", "1024", "--seed", "0"], check=True,
                   capture_output=True)
    search = [lensgrid, "search", "--model", model, "--dataset", "ioi", "--method",
              "ablate-heads", "--n-prompts", str(args.prompts)]

    t0 = time.monotonic()
    subprocess.run([*search, "--in-process"], check=True, capture_output=True)
    in_process_s = time.monotonic() - t0

    with CoordinatorProcess(f"{build}/service/lensgrid-coordinator",
                            os.path.join(tmp.name, "state")) as c:
        workers = [WorkerProcess(f"{build}/worker/lensgrid-worker", model, "--coordinator",
                                 c.address, "--threads", "1", "--name", f"w{i}")
                   for i in range(2)]
        try:
            stub = c.stub()
            wait_for(lambda: len(stub.ListWorkers(cpb.ListWorkersRequest()).workers) == 2, 60,
                     "2 workers")
            cpu0 = cpu_seconds(c.proc.pid)
            t0 = time.monotonic()
            proc = subprocess.run([*search, "--coordinator", c.address,
                                   "--components-per-shard", str(args.heads_per_shard)],
                                  capture_output=True, text=True)
            sharded_s = time.monotonic() - t0
            cpu = cpu_seconds(c.proc.pid) - cpu0
            if proc.returncode != 0:
                sys.exit(proc.stderr)
            job = stub.ListJobs(cpb.ListJobsRequest()).jobs[0]
            events = list(stub.WatchJob(cpb.WatchJobRequest(job_id=job.job_id), timeout=30))
            job_s = (events[-1].unix_ms - events[0].unix_ms) / 1000  # submitted -> succeeded
            run_ms = send_ms = shards = 0
            for w in workers:
                for line in w.log_lines():
                    m = SHARD_DONE_RE.search(line)
                    if m:
                        shards += 1
                        run_ms += int(m.group(4))
                        send_ms += int(m.group(5))
        finally:
            for w in workers:
                w.stop()

    worker_s = 2 * job_s
    print(f"job: ablate-heads (zero), {args.prompts} IOI prompts, 144 heads, GPT-2-small shape; "
          f"{shards} shards of {args.heads_per_shard} heads")
    print(f"{'':34s}{'wall s':>10s}")
    print(f"{'in-process (baseline, 2 threads)':34s}{in_process_s:10.2f}")
    print(f"{'coordinator + 2 workers (1 each)':34s}{sharded_s:10.2f}   "
          f"({in_process_s / sharded_s:.2f}x the baseline)")
    print(f"job on the coordinator (submitted -> succeeded): {job_s:.2f} s; the CLI's own "
          f"{sharded_s - job_s:.2f} s go to reading the config and tokenizer, hashing the "
          f"weights and building the dataset")
    print(f"coordinator CPU time: {cpu * 1000:.0f} ms = {100 * cpu / job_s:.2f}% of the "
          f"job's wall time")
    print(f"worker time ({worker_s:.1f} s on 2 workers): running shards "
          f"{100 * run_ms / 1000 / worker_s:.1f}%, sending results "
          f"{100 * send_ms / 1000 / worker_s:.2f}%, the rest (leasing, waiting for the other "
          f"worker's last shard) {100 * (1 - (run_ms + send_ms) / 1000 / worker_s):.1f}%")


if __name__ == "__main__":
    main()
