"""Who a recorded pid is: a process's identity (start time and command line) and the boot it
belongs to, so a pid reused after a crash or a reboot is never mistaken for ours. Read from /proc
(`ps` where there is no /proc). Standard library only."""

from __future__ import annotations

import subprocess
from pathlib import Path


def process_identity(pid: int) -> str | None:
    """'<start time> <command line>' of a live process; None when there is none (or a zombie)."""
    proc = Path("/proc") / str(pid)
    if Path("/proc/self").is_dir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" or not cmdline:
            return None
        argv = cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        return f"{fields[19]} {argv}"
    out = subprocess.run(
        ["ps", "-o", "lstart=,args=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or None


def boot_id() -> str:
    """Identifier of the current boot ('' where unknown): pids recorded before it mean nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
