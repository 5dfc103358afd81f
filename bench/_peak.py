"""Run ``python -m seawall_pgbackup.cli.run ...`` and record this process's own resource usage.

bench.py starts seawall through this wrapper instead of ``python -m seawall_pgbackup.cli.run``
(runpy.run_module with alter_sys=True is what ``-m`` does), because the rusage that
wait4() returns for a process merges its waited-for children: its ru_maxrss would be
max(Python, pg_dump).  At exit we write RUSAGE_SELF (the Python process alone: peak RSS,
CPU), its VmHWM (exact peak RSS, see below) and RUSAGE_CHILDREN (pg_dump, pg_dumpall, psql)
as JSON to $BENCH_RUSAGE_FILE.
"""

import atexit
import json
import os
import resource
import runpy
import sys


def _dump() -> None:
    path = os.environ.get("BENCH_RUSAGE_FILE")
    if not path:
        return
    doc = {}
    for name, who in (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN)):
        ru = resource.getrusage(who)
        doc[name] = {"utime": ru.ru_utime, "stime": ru.ru_stime, "maxrss_kb": ru.ru_maxrss}
    # ru_maxrss is inflated by exec: Linux carries the spawning process's peak over (vfork + exec),
    # so the exact peak of this process's own memory is VmHWM.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    doc["self"]["vmhwm_kb"] = int(line.split()[1])
    except OSError:
        pass
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(doc, handle)


atexit.register(_dump)
sys.argv[0] = "seawall_pgbackup"
runpy.run_module("seawall_pgbackup.cli.run", run_name="__main__", alter_sys=True)
