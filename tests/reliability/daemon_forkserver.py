"""Fork server for the daemon crash tests: pays the daemon's import cost once.

Importing the daemon (numpy, scipy, aiohttp, pydantic, the analysis) takes seconds, more on a
loaded box; fifty cold starts would take minutes. This process imports it once, then forks a
child per ``spawn`` that runs exactly what ``python -m gateway run --config FILE`` runs
(:func:`gateway.cli.main`), with its output to a log file. The test kills the child by pid;
``wait`` reaps it and reports its exit code (negative: the signal that ended it).

Protocol on stdin/stdout, one line each: ``spawn CONFIG LOG`` -> ``PID``;
``wait PID`` -> ``EXITCODE``.
"""

from __future__ import annotations

import os
import sys
import traceback

import gateway.daemon  # noqa: F401  (the import cost, paid before any fork)
from gateway import cli


def _child(config: str, log_path: str) -> None:
    code = 70
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        code = cli.main(["run", "--config", config])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    for line in sys.stdin:
        command, *args = line.split()
        if command == "spawn":
            pid = os.fork()
            if pid == 0:
                _child(*args)
            print(pid, flush=True)
        elif command == "wait":
            _, status = os.waitpid(int(args[0]), 0)
            print(os.waitstatus_to_exitcode(status), flush=True)
        else:
            print(f"unknown command {command!r}", flush=True)


if __name__ == "__main__":
    main()
