"""CLI wall time per call (`codi-queue enqueue`, `codi-queue hook`) against a bare `python3 -c pass`.

Every hook call is a new process, so this is what each tool call pays. Runs
are interleaved so background load affects all commands alike.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import Row, median, ms, tmpdir, wall_times  # noqa: E402


def _cli() -> str:
    exe = shutil.which("codi-queue", path=os.path.dirname(sys.executable))
    if exe is None:
        raise RuntimeError("codi-queue is not installed in this interpreter's environment")
    return exe


HOOK_PAYLOAD = {
    "session_id": "bench-session",
    "transcript_path": "/tmp/none.jsonl",
    "cwd": "/tmp",
    "hook_event_name": "PostToolUse",
    "permission_mode": "default",
    "tool_name": "Bash",
    "tool_input": {"command": "ls"},
    "tool_use_id": "toolu_bench",
    "tool_response": {"stdout": "a\nb\n", "stderr": "", "interrupted": False},
}


def _has_hook(env: dict[str, str]) -> bool:
    res = subprocess.run([_cli(), "hook", "--help"], capture_output=True, env=env, timeout=60)
    return res.returncode == 0


def run(quick: bool = False) -> list[Row]:
    runs = 15 if quick else 40
    home = tmpdir("startup")
    env = dict(os.environ, CODI_QUEUE_HOME=home)
    body = json.dumps({"tool_name": "Bash", "success": True, "duration_ms": 42})
    cmds: dict[str, tuple[list[str], bytes | None]] = {
        "bare": ([sys.executable, "-c", "pass"], None),
        # The design brief's import floors, measured here in the same run.
        "floor msgspec+json": ([sys.executable, "-c", "import msgspec, json"], None),
        "floor pq.queue+msgspec+argparse": (
            [sys.executable, "-c", "import msgspec, argparse; from codi_queue.queue.durable_queue import _queue_module; _queue_module()"],
            None,
        ),
        "floor pq.queue+json": (
            [sys.executable, "-c", "import json; from codi_queue.queue.durable_queue import _queue_module; _queue_module()"],
            None,
        ),
        # persist-queue's module as Python imports it, with everything it imports at the top.
        "floor pq.queue (plain)+json": ([sys.executable, "-c", "import json, persistqueue.queue"], None),
        "enqueue": ([_cli(), "enqueue", "tool_event", body], None),
    }
    if _has_hook(env):
        # Exactly the command `codi-queue install-hooks` writes into settings.json.
        from codi_queue.producers.install import command_line

        cmds["hook"] = (shlex.split(command_line("hook")), json.dumps(HOOK_PAYLOAD).encode())
    samples: dict[str, list[float]] = {k: [] for k in cmds}
    for n in range(runs):
        for name, (argv, stdin) in cmds.items():
            if name == "hook" and stdin is not None:
                # A PostToolUse that completes a pair (and so enqueues its tool_event): its
                # PreToolUse runs first, untimed, under the same fresh tool_use_id.
                tid = f"toolu_startup_{n}".encode()
                pre = json.dumps({**HOOK_PAYLOAD, "hook_event_name": "PreToolUse"}).encode()
                wall_times(argv, 1, env=env, stdin=pre.replace(b"toolu_bench", tid))
                stdin = stdin.replace(b"toolu_bench", tid)
            samples[name] += wall_times(argv, 1, env=env, stdin=stdin)
    bare = median(samples["bare"])
    rows = [Row("bare `python3 -c pass`", ms(bare), "", "1.00×", "")]
    for name in ("floor msgspec+json", "floor pq.queue+msgspec+argparse", "floor pq.queue+json",
                 "floor pq.queue (plain)+json"):
        m = median(samples[name])
        rows.append(Row(f"import floor: {name[6:]}", ms(m), f"bare {ms(bare)}", f"{m / bare:.2f}×", "reference"))
    for name in ("enqueue", "hook"):
        if name in samples:
            m = median(samples[name])
            rows.append(Row(f"`codi-queue {name}` wall time, median", ms(m), f"bare {ms(bare)}", f"{m / bare:.2f}×", "≤ 3×"))
    if "hook" in cmds:
        rows += _agent_wait(cmds["hook"][0], env, runs)
    return rows


def _agent_wait(argv: list[str], env: dict[str, str], runs: int) -> list[Row]:
    """What the agent waits for per tool call: a PreToolUse and a PostToolUse hook.

    Before (a hook without ``"async"``) the agent waits for each hook process to
    exit. Now (``"async": true``, what ``install-hooks`` writes) Claude Code
    starts the process, hands it the payload and goes on; emulated here by
    timing exactly that: spawn, write stdin, close (the processes are reaped
    outside the timing). Claude Code itself does not run on this machine.
    """
    import time

    pre = {**HOOK_PAYLOAD, "hook_event_name": "PreToolUse", "tool_response": None}
    payloads = [json.dumps(pre).encode(), json.dumps(HOOK_PAYLOAD).encode()]
    waited_sync: list[float] = []
    waited_async: list[float] = []
    for n in range(runs):
        t_sync = 0.0
        for data in payloads:  # each call its own tool_use_id, so pairs stay pairs
            data = data.replace(b"toolu_bench", f"toolu_bench_{n}".encode())
            t0 = time.perf_counter()
            subprocess.run(argv, input=data, capture_output=True, env=env, timeout=60, check=True)
            t_sync += time.perf_counter() - t0
        waited_sync.append(t_sync)
        procs = []
        t_total = 0.0
        for data in payloads:
            data = data.replace(b"toolu_bench", f"toolu_async_{n}".encode())
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=env)
            proc.stdin.write(data)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
            t_total += time.perf_counter() - t0
            procs.append(proc)
        waited_async.append(t_total)
        for proc in procs:
            proc.wait(timeout=60)
    before, after = median(waited_sync), median(waited_async)
    return [Row("agent wait per hooked tool call (Pre + Post), median", f"{ms(after)} (async: spawn and go on)",
                f"{ms(before)} (waiting for both hooks)", f"{after / before:.3f}×", "≈ 0 (async), measured")]


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run(quick="--quick" in sys.argv))
