#!/usr/bin/env python3
"""Hold N idle keep-alive connections, each having made one request, and
report the resident memory (VmRSS, summed) of the given processes.

    bench/conns.py --port 28080 --path /catalog/1 -n 10000 --pids 1234[,5678]

Used by bench/memory.sh. Loopback only; every step is bounded by --timeout.
"""

import argparse
import asyncio
import os
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def open_one(host, port, path, sem, held, errors):
    async with sem:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            )
            await writer.drain()
            status = await read_response(reader)
            if status != 200:
                errors.append(status)
            held.append(writer)
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors.append(repr(e))


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--pids", required=True, help="comma-separated PIDs to measure")
    p.add_argument("--parallel", type=int, default=256, help="connections opened at once")
    p.add_argument("--settle", type=float, default=2.0, help="seconds idle before measuring")
    p.add_argument("--hold", type=float, default=0.0, help="seconds held after measuring")
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args()
    pids = [int(x) for x in a.pids.split(",") if x]
    before = rss_kib(pids)
    held, errors = [], []
    sem = asyncio.Semaphore(a.parallel)
    t0 = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(
            *(open_one(a.host, a.port, a.path, sem, held, errors) for _ in range(a.n))
        ),
        a.timeout,
    )
    opened = time.monotonic() - t0
    await asyncio.sleep(a.settle)
    after = rss_kib(pids)
    fds = sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)
    per_conn = (after - before) * 1024 / max(len(held), 1)
    print(
        f"connections={len(held)} errors={len(errors)} open_s={opened:.1f} "
        f"rss_before_kib={before} rss_held_kib={after} "
        f"per_conn_bytes={per_conn:.0f} server_fds={fds}"
    )
    if errors:
        print(f"first errors: {errors[:3]}", file=sys.stderr)
    sys.stdout.flush()
    await asyncio.sleep(a.hold)
    for w in held:
        w.close()
    await asyncio.sleep(1.0)
    print(f"rss_after_close_kib={rss_kib(pids)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
