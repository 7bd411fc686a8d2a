"""Run many short ``lra_bench.train`` commands in one process start: ``python -m tests.forked_runs < runs.json``.

Each run is a real training process, forked from this one after torch, Lightning and Hydra are imported (the
imports are most of a tiny run's start-up time), so it can be killed by a real signal without taking the others
with it. Input: a JSON list of ``{"argv": [...], "env": {...}, "log": path}``, run one after another; output: a
JSON list of their exit codes (negative: killed by that signal), as ``subprocess`` reports them.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def run_forked(argv: list[str], env: dict[str, str], log: str) -> int:
    pid = os.fork()
    if pid == 0:  # the child: one run of the command, its output in ``log``
        code = 1
        try:
            os.environ.update(env)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.argv = ["lra_bench.train", *argv]
            from lra_bench.train import main

            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main() -> None:
    import lra_bench.train  # noqa: F401  (imported once, before any fork)

    runs = json.load(sys.stdin)
    print(json.dumps([run_forked(r["argv"], r.get("env", {}), r["log"]) for r in runs]))


if __name__ == "__main__":
    main()
