"""Where the model server's memory goes, beside KServe's, under 100-row load (issue 13).

Usage (from the repository root; about a minute)::

    .venv/bin/python bench/serving_memory.py [--seconds 10] [--log-store postgresql|sqlite]

The serving benchmark's model, registry and online store (``bench/serving/run.py``), one
kubeloop server (token, validation, metrics, prediction log on) and KServe's sklearn server,
each loaded by wrk with 100-row requests at 8 connections. While wrk runs, every process of
each server's tree is sampled; the peaks are reported as

- **RSS**, what ``bench-serving`` sums over the tree (pages of a shared library mapped by two
  processes count twice), **PSS** (shared pages split between the processes that map them) and
  **USS** (pages only this process holds: what killing it would free);
- for the kubeloop server process, its resident memory by owner: each package's compiled
  libraries (file-backed mappings under ``site-packages/<package>``), the interpreter and the
  system's libraries, and anonymous memory (Python objects, arrays, allocator arenas);
- an **import replay**: the top-level packages the warm server had imported (asked of the
  server itself with SIGUSR1 through a wrapper), imported again by a fresh interpreter, numpy,
  pyarrow, pandas, scipy and scikit-learn first, then the rest in the server's own order, with
  the resident memory each one adds. What the replay does not
  explain is the server's run-time data: the models, the batcher's and the spool's buffers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.postgres import ADMIN_URL, fresh_database  # noqa: E402
from bench.serving import payloads  # noqa: E402
from bench.serving.run import (  # noqa: E402
    RESULTS,
    TOKEN,
    WORK,
    Server,
    ensure_kserve,
    ensure_wrk,
    kserve_server,
    kubeloop_server,
    log,
    prepare_models,
    wrk,
)

# Runs `python -m serving` unchanged, and on SIGUSR1 writes the names in sys.modules (in
# import order) to the file named by the first argument.
WRAPPER = """
import json, runpy, signal, sys
out = sys.argv.pop(1)
def dump(*_):
    with open(out, "w") as fh:
        json.dump(list(sys.modules), fh)
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["serving"]
runpy.run_module("serving", run_name="__main__", alter_sys=True)
"""

# A fresh interpreter imports the given top-level packages in order and prints what each adds.
REPLAY = """
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
names = json.load(open(sys.argv[1]))
steps = [("interpreter", rss())]
for name in names:
    before = rss()
    try:
        importlib.import_module(name)
    except Exception:
        continue
    steps.append((name, rss() - before))
print(json.dumps(steps))
"""


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def rollup(pid: int) -> dict[str, float]:
    """RSS, PSS and USS of one process, in MB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"rss": fields["Rss"], "pss": fields["Pss"], "uss": uss}


def process_name(pid: int) -> str:
    """What a process of kubeloop's tree is, from its command line."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    if "resource_tracker" in argv:
        return "multiprocessing resource tracker"
    if "multiprocessing" in argv:
        return "log shipper (spawned)"
    return "server"


_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")
_PACKAGE = re.compile(r"site-packages/([A-Za-z0-9_]+?)(?:\.libs)?/")


def by_owner(pid: int) -> dict[str, float]:
    """The resident MB of one process's mappings, grouped by who owns them."""
    owners: dict[str, float] = defaultdict(float)
    owner = "anonymous"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        header = _MAPPING.match(line)
        if header:
            path = header.group(1)
            package = _PACKAGE.search(path)
            if package:
                owner = f"{package.group(1)} (compiled code)"
            elif path.startswith("/"):
                owner = "interpreter and system libraries"
            else:
                owner = "anonymous: Python objects, arrays, arenas"
        elif line.startswith("Rss:"):
            owners[owner] += int(line.split()[1]) / 1024
    return dict(owners)


def peaks(pids_of: dict[str, int], samples: dict[str, dict[int, dict[str, float]]]) -> None:
    """Take one sample of every process of every tree, keeping each figure's peak."""
    for name, root in pids_of.items():
        for pid in tree(root):
            try:
                figures = rollup(pid)
            except OSError:
                continue
            kept = samples[name].setdefault(pid, {"rss": 0.0, "pss": 0.0, "uss": 0.0})
            for key, value in figures.items():
                kept[key] = max(kept[key], value)


# Imported first in the replay when the server has them: the array and table libraries that
# nearly everything else builds on, so that each later package shows its own cost.
FOUNDATION = ("numpy", "pyarrow", "pandas", "scipy", "sklearn")


def replay(modules: list[str]) -> list[tuple[str, float]]:
    """The import replay of the server's top-level, non-standard-library packages: the
    foundation first, then the rest in the server's own order."""
    import subprocess

    tops: list[str] = [name for name in FOUNDATION if name in modules]
    for name in modules:
        top = name.split(".")[0]
        if top not in tops and top not in sys.stdlib_module_names and not top.startswith("_"):
            tops.append(top)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(tops, fh)
    out = subprocess.run(
        [sys.executable, "-c", REPLAY, fh.name],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    ).stdout
    os.unlink(fh.name)
    return [(name, mb) for name, mb in json.loads(out)]


def report(
    samples: dict[str, dict[int, dict[str, float]]],
    names: dict[str, dict[int, str]],
    owners: dict[str, float],
    imports: list[tuple[str, float]],
    args: argparse.Namespace,
) -> str:
    lines = [
        f"# Serving memory, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"100-row requests, 8 connections, {args.seconds:.0f} s of wrk per server; log store "
        f"{args.log_store}; load average {os.getloadavg()[0]:.1f}. Peaks in MB.",
        "",
        "| server | process | RSS | PSS | USS |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for server, by_pid in samples.items():
        total = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
        for pid, figures in by_pid.items():
            lines.append(
                f"| {server} | {names[server].get(pid, '?')} | {figures['rss']:.0f} | "
                f"{figures['pss']:.0f} | {figures['uss']:.0f} |"
            )
            for key in total:
                total[key] += figures[key]
        lines.append(
            f"| {server} | **tree** | **{total['rss']:.0f}** | **{total['pss']:.0f}** | "
            f"**{total['uss']:.0f}** |"
        )
    lines += ["", "kubeloop server process, resident memory by owner:", ""]
    lines += ["| owner | MB |", "| --- | ---: |"]
    for owner, mb in sorted(owners.items(), key=lambda kv: -kv[1]):
        if mb >= 1:
            lines.append(f"| {owner} | {mb:.0f} |")
    lines += ["", "Import replay (fresh interpreter; foundation first, then the server's order):"]
    lines += ["", "| package | MB added |", "| --- | ---: |"]
    total = 0.0
    for name, mb in imports:
        total += mb
        if mb >= 2:
            lines.append(f"| {name} | {mb:.0f} |")
    lines.append(f"| **all imports** | **{total:.0f}** |")
    return "\n".join(lines) + "\n"


def load_and_sample(
    binary: str,
    name: str,
    server: Server,
    seconds: float,
    samples: dict[str, dict[int, dict[str, float]]],
) -> float:
    """wrk with 100-row requests at 8 connections while every 0.2 s each process of the
    server's tree is sampled; returns wrk's requests/s."""
    form = "kubeloop" if name == "kubeloop" else "kserve"
    body = RESULTS / f"payload-memory-{form}-100.json"
    body.write_bytes(payloads.BUILDERS[form](payloads.rows(100)))
    assert server.process is not None
    root, done = server.process.pid, threading.Event()

    def sample() -> None:
        while not done.is_set():
            peaks({name: root}, samples)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    token = TOKEN if name == "kubeloop" else ""
    try:
        return wrk(
            binary, server.url(payloads.PATHS[form]), 8, seconds, "post.lua", [str(body), token]
        )[0]
    finally:
        done.set()
        sampler.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per server")
    parser.add_argument("--log-store", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    binary = ensure_wrk()
    kserve_python = ensure_kserve()
    log("preparing the model, the registry and the online store")
    prepared = prepare_models()
    log_url = (
        f"sqlite:///{WORK / 'memory-predictions.db'}"
        if args.log_store == "sqlite"
        else fresh_database("kubeloop_bench_memory", ADMIN_URL)
    )
    modules_file = WORK / "server-modules.json"
    kubeloop = kubeloop_server("kubeloop", prepared, HERE.parent, log_url)
    kubeloop.command = [sys.executable, "-c", WRAPPER, str(modules_file)]
    servers: dict[str, Server] = {
        "kubeloop": kubeloop,
        "kserve": kserve_server(kserve_python, prepared),
    }
    samples: dict[str, dict[int, dict[str, float]]] = {name: {} for name in servers}
    names: dict[str, dict[int, str]] = {name: {} for name in servers}
    owners: dict[str, float] = {}
    with ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
        for name, server in servers.items():
            rps = load_and_sample(binary, name, server, args.seconds, samples)
            log(f"{name}: {rps:,.0f} req/s under the sampler")
            for pid in samples[name]:
                names[name][pid] = process_name(pid) if name == "kubeloop" else "server"
        owners = by_owner(kubeloop.process.pid)  # type: ignore[union-attr]
        os.kill(kubeloop.process.pid, signal.SIGUSR1)  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while not modules_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    imports = replay(json.loads(modules_file.read_text()))
    text = report(samples, names, owners, imports, args)
    out = RESULTS / f"serving-memory-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md"
    out.write_text(text)
    print(text)
    log(f"written to {out}")


if __name__ == "__main__":
    main()
