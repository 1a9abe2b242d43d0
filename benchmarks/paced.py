"""An open-loop load generator: requests leave at evenly spaced instants (a fixed offered
rate), each on an idle keep-alive connection, and latency counts from the instant a request
was due, so a slow server cannot hide its queue by slowing the generator down
("coordinated omission"). hey's paced workers tick in step and send bursts; this does not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Paced:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    sent: int = 0


def _request(url: str, method: str, body: str, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    port = parts.port or 80
    lines = [f"{method} {parts.path or '/'} HTTP/1.1", f"Host: {parts.hostname}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    payload = body.encode()
    lines.append(f"Content-Length: {len(payload)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    return parts.hostname or "127.0.0.1", port, raw


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    if "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _paced(
    url: str, rate: float, seconds: float, method: str, body: str, headers: dict[str, str]
) -> Paced:
    host, port, raw = _request(url, method, body, headers)
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(64):
        idle.put_nowait(await asyncio.open_connection(host, port))
    loop = asyncio.get_running_loop()
    result = Paced()

    async def one(due: float) -> None:
        reader, writer = await idle.get()
        try:
            writer.write(raw)
            status = await _read_response(reader)
            result.latencies_ms.append((loop.time() - due) * 1000)
            result.errors += not 200 <= status < 300
            idle.put_nowait((reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            writer.close()
            idle.put_nowait(await asyncio.open_connection(host, port))

    start = loop.time() + 0.1
    tasks = []
    for i in range(int(rate * seconds)):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        tasks.append(asyncio.create_task(one(due)))
        result.sent += 1
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait()[1].close()
    return result


def paced(
    url: str,
    rate: float,
    seconds: float,
    method: str = "GET",
    body: str = "",
    headers: dict[str, str] | None = None,
) -> Paced:
    """Offer `rate` requests per second to `url` for `seconds`."""
    return asyncio.run(_paced(url, rate, seconds, method, body, headers or {}))
