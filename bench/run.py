"""make bench: specdyn against PyTorch on the same CPU, side by side.

Each workload in bench/ has NAME.ini for ./train --bench and NAME.py for
PyTorch. After one warm-up pair, specdyn and PyTorch run alternately for
--rounds rounds with the same thread count. Each run is a fresh process that
times its own steps after its own warm-up. Per workload it reports:
- steps/s of both sides (median over rounds);
- the ratio specdyn / PyTorch (median and range over rounds);
- the peak RSS of each side (largest over rounds, from wait4);
- specdyn's model FLOPs utilisation. That is model FLOPs per step (counted
  on the PyTorch model, 3 × forward multiply-adds × 2) × steps/s, over the
  GFLOP/s of a 2048³ sgemm measured in the same run.

The whole table is made twice: with the environment as set, and with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed for the child processes
(OpenBLAS then picks its kernels from the CPU). The trace overhead comes
from the second pass: specdyn runs each workload with the trace at a short
cadence and without it, and the cost per snapshot is scaled to the config's
cadence: overhead = snapshot seconds / (trace.every × step seconds).

Run as: /usr/bin/python3 bench/run.py [--rounds 5] [--threads 2]
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")

# name, timed steps of one round for each side, short trace cadence for the overhead measurement
WORKLOADS = [
    ("grok_tfmr", 30, 10),
    ("grok_mlp", 200, 20),
    ("mlp_fmnist", 500, 50),
    ("vgg_fmnist", 10, 5),
]
BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def run_measured(cmd, env):
    """Run cmd; return its last JSON line on stdout plus its peak RSS in MB (rss_mb) from wait4."""
    # stderr goes to a file, so a chatty child cannot block on a full pipe
    # while stdout is read. The child is reaped with wait4 for its rusage,
    # which communicate() would not return.
    with tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err_file)
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        err_file.seek(0)
        err = err_file.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit("bench: %s failed (exit %d):\n%s" % (" ".join(cmd), proc.returncode, err.decode()[-2000:]))
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if not lines:
        sys.exit("bench: %s printed no JSON line:\n%s" % (" ".join(cmd), err.decode()[-2000:]))
    result = json.loads(lines[-1])
    result["rss_mb"] = usage.ru_maxrss / 1024.0
    return result


def specdyn_cmd(name, steps, threads, trace_every=0):
    return ["./train", "--bench", str(steps), "bench/%s.ini" % name, "run.threads=%d" % threads,
            "trace.every=%d" % trace_every]


def torch_cmd(name, steps, threads):
    return ["/usr/bin/python3", "bench/%s.py" % name, "--steps", str(steps), "--threads", str(threads)]


def config_trace_every(name):
    text = open(os.path.join(BENCH, name + ".ini")).read()
    section = text[text.index("[trace]"):]
    return int(re.search(r"^every\s*=\s*(\d+)", section, re.M).group(1))


def measure(env, rounds, threads, names, sgemm_peak):
    peak = run_measured([sgemm_peak, str(threads)], env)["gflops"]
    rows = []
    for name, steps, _ in WORKLOADS:
        if names and name not in names:
            continue
        ours_cmd, theirs_cmd = specdyn_cmd(name, steps, threads), torch_cmd(name, steps, threads)
        run_measured(ours_cmd, env)
        run_measured(theirs_cmd, env)
        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(run_measured(ours_cmd, env))
            theirs.append(run_measured(theirs_cmd, env))
        ratios = [a["steps_per_second"] / b["steps_per_second"] for a, b in zip(ours, theirs)]
        ours_sps = statistics.median(r["steps_per_second"] for r in ours)
        flops = theirs[0]["flops_per_step"]
        rows.append({
            "workload": name,
            "specdyn_steps_per_s": ours_sps,
            "torch_steps_per_s": statistics.median(r["steps_per_second"] for r in theirs),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "specdyn_rss_mb": max(r["rss_mb"] for r in ours),
            "torch_rss_mb": max(r["rss_mb"] for r in theirs),
            "gflop_per_step": flops / 1e9,
            "specdyn_gflops": flops * ours_sps / 1e9,
            "mfu": flops * ours_sps / 1e9 / peak,
        })
        print("  %-11s specdyn %9.2f steps/s  PyTorch %9.2f steps/s  ratio %.2f" %
              (name, ours_sps, rows[-1]["torch_steps_per_s"], rows[-1]["ratio_median"]), flush=True)
    return peak, rows


def trace_overhead(env, rounds, threads, names):
    rows = []
    for name, steps, short_every in WORKLOADS:
        if names and name not in names:
            continue
        # A multiple of the short cadence, so every timed run has the same number of snapshots.
        n = max(steps, 4 * short_every) // short_every * short_every
        off, on = [], []
        run_measured(specdyn_cmd(name, n, threads, short_every), env)
        for _ in range(rounds):
            off.append(run_measured(specdyn_cmd(name, n, threads, 0), env)["seconds"])
            on.append(run_measured(specdyn_cmd(name, n, threads, short_every), env)["seconds"])
        t_off, t_on = statistics.median(off), statistics.median(on)
        per_snapshot = max(0.0, t_on - t_off) / (n // short_every)
        cadence = config_trace_every(name)
        step = t_off / n
        rows.append({"workload": name, "trace_every": cadence, "snapshot_ms": 1e3 * per_snapshot,
                     "step_ms": 1e3 * step, "overhead": per_snapshot / (cadence * step)})
        print("  %-11s snapshot %.1f ms, step %.2f ms, overhead at every=%d: %.2f %%" %
              (name, 1e3 * per_snapshot, 1e3 * step, cadence, 100 * rows[-1]["overhead"]), flush=True)
    return rows


def versions():
    def dpkg(package):
        try:
            return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                                  text=True).stdout.strip() or "?"
        except OSError:
            return "?"
    torch_version = subprocess.run(["/usr/bin/python3", "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True).stdout.strip()
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "cores": os.cpu_count(), "openblas": dpkg("libopenblas0-openmp"), "torch": torch_version,
            "gcc": dpkg("gcc"), "kernel": platform.release()}


def table(title, peak, rows):
    lines = ["### " + title, "", "Large sgemm (2048³): %.0f GFLOP/s." % peak, "",
             "| workload | specdyn steps/s | PyTorch steps/s | ratio (median) | ratio range | specdyn RSS MB | "
             "PyTorch RSS MB | GFLOP/step | specdyn GFLOP/s | MFU |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| %s | %.2f | %.2f | **%.2f×** | %.2f–%.2f | %.0f | %.0f | %.3f | %.1f | %.1f %% |" % (
            r["workload"], r["specdyn_steps_per_s"], r["torch_steps_per_s"], r["ratio_median"], r["ratio_min"],
            r["ratio_max"], r["specdyn_rss_mb"], r["torch_rss_mb"], r["gflop_per_step"], r["specdyn_gflops"],
            100 * r["mfu"]))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(BENCH, "RESULTS.md"))
    ap.add_argument("--sgemm-peak", default="build/sgemm_peak", help="the sgemm reference program")
    ap.add_argument("workloads", nargs="*", help="a subset of the workloads (default: all)")
    args = ap.parse_args()
    known = [w[0] for w in WORKLOADS]
    for name in args.workloads:
        if name not in known:
            sys.exit("bench: unknown workload '%s' (known: %s)" % (name, ", ".join(known)))
    start = time.time()
    info = versions()
    as_set = dict(os.environ)
    unset = {k: v for k, v in os.environ.items() if k not in BLAS_VARIABLES}
    blas_settings = ", ".join("%s=%s" % (k, os.environ[k]) for k in BLAS_VARIABLES if k in os.environ) or "neither set"
    print("environment as set (%s):" % blas_settings, flush=True)
    peak_set, rows_set = measure(as_set, args.rounds, args.threads, args.workloads, args.sgemm_peak)
    print("OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset:", flush=True)
    peak_unset, rows_unset = measure(unset, args.rounds, args.threads, args.workloads, args.sgemm_peak)
    print("trace overhead (unset):", flush=True)
    overhead = trace_overhead(unset, args.rounds, args.threads, args.workloads)

    lines = ["# Benchmark results", "",
             "Written by `make bench` (bench/run.py) on %s in %.0f s: %d threads on both sides, %d rounds "
             "alternating specdyn and PyTorch after a warm-up pair." % (
                 datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), time.time() - start, args.threads, args.rounds),
             "",
             "CPU: %s (%s cores), kernel %s; OpenBLAS %s (libopenblas0-openmp), PyTorch %s, gcc %s." % (
                 info["cpu"], info["cores"], info["kernel"], info["openblas"], info["torch"], info["gcc"]),
             "", "Ratio = specdyn steps/s ÷ PyTorch steps/s. MFU = specdyn's model GFLOP/s ÷ large-sgemm GFLOP/s, "
             "with model FLOPs counted on the PyTorch model. For grok_tfmr specdyn does less arithmetic than that "
             "count (its first block runs on the token table and its last block only at the last position), and "
             "so does vgg_fmnist (its winograd F(4×4, 3×3) layers need 4× fewer multiplications than direct "
             "convolution), so their GFLOP/s and MFU are nominal.",
             ""]
    lines += table("OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (headline)", peak_unset, rows_unset) + [""]
    lines += table("Environment as set (%s)" % blas_settings, peak_set, rows_set) + [""]
    lines += ["### Trace overhead (unset environment)", "",
              "| workload | trace.every | snapshot ms | step ms | overhead |", "|---|---:|---:|---:|---:|"]
    for r in overhead:
        lines.append("| %s | %d | %.1f | %.2f | %.2f %% |" % (r["workload"], r["trace_every"], r["snapshot_ms"],
                                                           r["step_ms"], 100 * r["overhead"]))
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    print("\n" + text)
    print("wrote " + os.path.relpath(args.out, ROOT))


if __name__ == "__main__":
    main()
