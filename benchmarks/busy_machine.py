"""The README's main job on a busy machine (issue 12): from a fresh copy of the project, `ctloop
setup` + `ctloop run` (what `make run` does after installing), three rounds, while a bounded CPU
burner keeps every core busy and a second fresh project starts `ctloop run` at the same moment.

Per run it prints the exit status, the wall time, the Prefect API server processes started in its
process tree (a command's run server, a `prefect server start`, or a temporary server Prefect
starts by itself; must be 1), and the processes of its tree still alive afterwards (must be 0).
Headline: `busy_machine: <k>/3 main runs succeeded, ...`.

    .venv/bin/python benchmarks/busy_machine.py [--rounds 3] [--burners 2] [--set tune.n_trials=2]

`--set` changes both projects' params.yaml (a quicker smoke run); the default is the README's main
job as it is. Nothing of the user's is touched: projects live in a temporary folder, with their
own PREFECT_HOME, and no PREFECT_API_URL is inherited.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness import CTLOOP, base_env, dotted, log, make_project, work_dir

SERVER_MARKS = (b"prefect.server.api.server:create_app", b"server\0start")
BURN_LIMIT_S = 4 * 3600.0  # a burner never outlives this, whatever happens to this script


def _burn(deadline: float) -> None:
    """Busy loop until `deadline` (monotonic): one core's worth of load."""
    x = 0
    while time.monotonic() < deadline:
        x = (x * 31 + 7) % 1_000_003


@contextlib.contextmanager
def cpu_burners(count: int) -> Iterator[None]:
    """`count` busy processes for the duration of the block (each bounded by BURN_LIMIT_S)."""
    deadline = time.monotonic() + BURN_LIMIT_S
    procs = [mp.Process(target=_burn, args=(deadline,), daemon=True) for _ in range(count)]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.join()


def _tree() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every live process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat[0] != "Z":
            out[int(entry.name)] = (int(stat[1]), cmdline)
    return out


def _descendants(root: int, tree: dict[int, tuple[int, bytes]]) -> set[int]:
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in tree.items() if ppid in frontier} - found
        found |= frontier
    return found


@dataclass
class Watched:
    """What a command's process tree did: every descendant seen (with its command line)."""

    label: str
    seen: dict[int, bytes] = field(default_factory=dict)
    returncode: int | None = None
    seconds: float = 0.0
    tail: str = ""

    @property
    def servers(self) -> list[int]:
        return sorted(p for p, cmd in self.seen.items() if any(m in cmd for m in SERVER_MARKS))

    def left(self) -> list[int]:
        """Processes of the tree still alive (the same pid running the same command line)."""
        tree = _tree()
        return sorted(p for p, cmd in self.seen.items() if p in tree and tree[p][1] == cmd)


def watch(label: str, argv: list[str], cwd: Path, env: dict[str, str]) -> Watched:
    """Run `argv`, scanning its descendants every 250 ms until it exits (a server lives for
    seconds at least; a tighter scan would itself load the machine)."""
    result = Watched(label)
    started = time.perf_counter()
    with subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
        reader.start()
        while proc.poll() is None:
            tree = _tree()
            for pid in _descendants(proc.pid, tree):
                result.seen.setdefault(pid, tree[pid][1])
            time.sleep(0.25)
        reader.join()
    result.returncode = proc.returncode
    result.seconds = time.perf_counter() - started
    result.tail = "".join(out[-15:])
    return result


def fresh_project(base: Path, name: str, changes: dict[str, object]) -> tuple[Path, Path]:
    params = make_project(base / name, changes)
    return params.parent, params


def one_round(base: Path, index: int, changes: dict[str, object]) -> list[Watched]:
    main_root, main_params = fresh_project(base, f"main-{index}", changes)
    other_root, other_params = fresh_project(base, f"other-{index}", changes)
    results: list[Watched] = []

    def start(label: str, root: Path, params: Path) -> None:
        env = base_env(PREFECT_HOME=str(root / ".prefect-home"))
        results.append(watch(label, [CTLOOP, "run", "--params", str(params)], root, env))

    threads = [
        threading.Thread(target=start, args=(f"main {index}", main_root, main_params)),
        threading.Thread(target=start, args=(f"second project {index}", other_root, other_params)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(2.0)  # a supervisor notices its last lease within 0.5 s
    return sorted(results, key=lambda r: not r.label.startswith("main"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", type=Path, default=None, help="keep the projects here")
    args = parser.parse_args()
    changes = dotted(args.set)
    base = work_dir(args.keep, "ctloop-busy-")
    what = f"{args.rounds} round(s), {args.burners} CPU burner(s), changes {changes}"
    print(f"# busy machine: {what}")
    print("| run | exit | wall s | Prefect servers started | processes left | load (1 min) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    ok = 0
    failures = []
    with cpu_burners(args.burners):
        for index in range(1, args.rounds + 1):
            log("busy", f"round {index}")
            for result in one_round(base, index, changes):
                left = result.left()
                good = result.returncode == 0 and len(result.servers) == 1 and not left
                load = os.getloadavg()[0]
                print(
                    f"| {result.label} | {result.returncode} | {result.seconds:.0f} | "
                    f"{len(result.servers)} | {len(left)} | {load:.1f} |",
                    flush=True,
                )
                if result.label.startswith("main"):
                    ok += good
                if not good:
                    failures.append(f"{result.label}: {result.tail}")
    for failure in failures:
        print(f"\n```\n{failure}\n```", file=sys.stderr)
    print(f"busy_machine: {ok}/{args.rounds} main runs succeeded with one server and none left")
    return 0 if ok == args.rounds and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
