"""The ``bad-input`` scenario."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from experiments.bad_peers import BadCase, Target, cases_for, describe_answer, protocol_family
from experiments.bad_peers import target_of as endpoint_target
from experiments.context import RunContext
from experiments.fault_profiles import fault_profile
from experiments.harness import ServerProcess
from experiments.jobs import ClientGroup

__all__ = ["BAD_INPUT", "BadInput"]

#: Samples must reach the normal client within this long after a case for it to count as
#: unaffected (at the fault rate several arrive in that time).
UNAFFECTED_SLACK_S = 0.5
_READ_LIMIT = 1 << 16


async def _answer(target: Target, payload: bytes, timeout_s: float) -> str:
    """Send ``payload`` on a fresh socket and describe what came back."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.host, target.port), timeout_s
    )
    data = b""
    ending = "left open"
    try:
        writer.write(payload)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.drain(), timeout_s)
        async with asyncio.timeout(timeout_s):
            while len(data) < _READ_LIMIT:
                chunk = await reader.read(_READ_LIMIT)
                if not chunk:
                    ending = "closed"
                    break
                data += chunk
    except TimeoutError:
        ending = f"left open after {timeout_s:g} s"
    except ConnectionResetError:
        ending = "reset"
    finally:
        writer.close()
    return describe_answer(data, ending)


async def _server_alive(server: ServerProcess, timeout_s: float) -> bool:
    if not server.running:
        return False
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(server.host, server.port), timeout_s
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _idle_burst(target: Target, count: int, hold_s: float) -> str:
    """Open ``count`` connections that send nothing, hold them, close them."""
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    refused = 0
    for _ in range(count):
        try:
            opened.append(
                await asyncio.wait_for(asyncio.open_connection(target.host, target.port), hold_s)
            )
        except (OSError, TimeoutError):
            refused += 1
    # Hold them: an idle peer must not cost the server more than its socket.
    await asyncio.sleep(hold_s)
    closed_by_server = sum(1 for reader, _ in opened if reader.at_eof() or reader.exception())
    for _, writer in opened:
        writer.close()
    return (
        f"{len(opened)} opened ({refused} refused), held {hold_s:g} s, "
        f"{closed_by_server} closed by the server meanwhile"
    )


def _unaffected(client: dict[str, Any], start_ns: int, end_ns: int) -> bool:
    until = end_ns + int(UNAFFECTED_SLACK_S * 1e9)
    dropped = any(
        e["type"] == "disconnected" and start_ns <= e["at_ns"] <= until for e in client["events"]
    )
    received = any(start_ns <= s[0] <= until for s in client["samples"])
    return received and not dropped


class BadInput:
    """Hostile peers on raw sockets while a normal client reads.

    The cases come from one table keyed by the transport's protocol family (derived from its
    registry entry): garbage bytes for everyone, then per family malformed requests, queries,
    frames or hellos and a 2 MiB message (the limit is 1 MiB), and a burst of idle
    connections. After each case: did the server survive (process alive, accepts a connect),
    and was the normal client unaffected (a sample within the case's window plus 0.5 s, no
    disconnect then, nothing lost over the run). Each bad peer's answer is recorded: status
    line, WebSocket close code, error line, reset, or left open.
    """

    name = "bad-input"
    kind = "fault"
    #: Timer-bound figures (seconds): every transport runs it at once, on its own processes.
    concurrent = True

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]:
        fp = fault_profile(ctx.profile.name)
        timeout = fp.bad_answer_timeout_s
        windows: list[tuple[str, str, bool, int, int]] = []
        async with ctx.server(fp.rate_hz) as server:
            target = endpoint_target(ctx.transport, server.host, server.port)
            job = ctx.job(server.port, (ClientGroup(1),), keep_samples=True, keep_latencies=False)
            async with ctx.clients(job) as worker:
                await worker.wait_ready()
                cases: list[BadCase | None] = [*cases_for(ctx.transport), None]
                for case in cases:
                    name = "idle burst" if case is None else case.name
                    ctx.note(name)
                    start = time.monotonic_ns()
                    try:
                        if case is None:
                            answer = await _idle_burst(target, fp.idle_burst, timeout / 2)
                        else:
                            answer = await _answer(target, case.build(target), timeout)
                    except (OSError, TimeoutError) as exc:
                        answer = f"could not connect: {exc!r}"
                    end = time.monotonic_ns()
                    alive = await _server_alive(server, timeout)
                    windows.append((name, answer, alive, start, end))
                # Let the last window's slack pass with the client still reading.
                await asyncio.sleep(UNAFFECTED_SLACK_S)
                result = await worker.stop()
        client = result["clients"][0]
        lost = client["counts"]["lost"]
        answers: list[dict[str, Any]] = [
            {
                "case": name,
                "answer": answer,
                "server_survived": alive,
                "others_unaffected": lost == 0 and _unaffected(client, start, end),
            }
            for name, answer, alive, start, end in windows
        ]
        survived = sum(bool(a["server_survived"]) for a in answers)
        unaffected = sum(bool(a["others_unaffected"]) for a in answers)
        problems = [
            f"{a['case']}: " + ("server died" if not a["server_survived"] else "others affected")
            for a in answers
            if not (a["server_survived"] and a["others_unaffected"])
        ]
        metrics = {
            "cases": len(answers),
            "server_survived": survived,
            "others_unaffected": unaffected,
            "lost": lost,
            "duplicated": client["counts"]["duplicated"],
            "delivery_ok": not problems,
            "delivery_problems": "; ".join(problems),
        }
        params = {
            "family": protocol_family(ctx.transport),
            "rate_hz": fp.rate_hz,
            "idle_burst": fp.idle_burst,
            "answer_timeout_s": timeout,
        }
        record = ctx.record(params, metrics)
        record["answers"] = answers
        return [record]


BAD_INPUT = BadInput()
