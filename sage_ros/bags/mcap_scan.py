"""Record-by-record MCAP reading for files `rosbags` refuses: no footer, truncated, damaged chunk.

A recorder killed mid-run leaves an MCAP without its summary and footer; `rosbags` (rightly) needs
them to open the file. This scanner walks the data section from the start, keeps every complete
schema, channel and message record, checks chunk CRCs, and stops at the first incomplete record,
reporting where. It follows the MCAP specification (https://mcap.dev/spec) and reads only what a
ROS 2 bag needs.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END = 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F


class McapScanError(RuntimeError):
    """The file is not MCAP at all, or a record is malformed beyond skipping."""


@dataclass
class ScanResult:
    """What a scan found besides the messages: where and why it stopped early, if it did."""

    complete: bool = True
    stop_reason: str = ""
    bad_chunks: int = 0


@dataclass(frozen=True)
class Channel:
    id: int
    topic: str
    msgtype: str


def _string(buf: memoryview, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise McapScanError("string runs past its record")
    return bytes(buf[pos + 4 : end]).decode("utf-8", errors="replace"), end


def _decompress(data: memoryview, compression: str, size: int) -> bytes:
    if compression == "":
        return bytes(data)
    if compression == "zstd":
        try:
            from compression import zstd  # Python >= 3.14
        except ImportError:
            from backports import zstd  # what rosbags depends on before 3.14
        return zstd.decompress(bytes(data))
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(bytes(data))
    raise McapScanError(f"unsupported chunk compression {compression!r}")


def _records(buf: memoryview) -> Iterator[tuple[int, memoryview]]:
    pos = 0
    while pos + 9 <= len(buf):
        op = buf[pos]
        (length,) = struct.unpack_from("<Q", buf, pos + 1)
        if pos + 9 + length > len(buf):
            raise McapScanError("record runs past the end of its chunk")
        yield op, buf[pos + 9 : pos + 9 + length]
        pos += 9 + length


def scan(path: str | Path, result: ScanResult) -> Iterator[tuple[Channel, int, bytes]]:
    """Yield (channel, log_time_ns, cdr_bytes) for every complete message, in file order.

    Schemas and channels are picked up as they appear. `result` tells afterwards whether the file
    ended cleanly (data-end or footer record) or where the scan had to stop.
    """
    schemas: dict[int, str] = {}
    channels: dict[int, Channel] = {}

    def handle(op: int, body: memoryview) -> tuple[Channel, int, bytes] | None:
        if op == _OP_SCHEMA:
            (sid,) = struct.unpack_from("<H", body, 0)
            name, _ = _string(body, 2)
            schemas[sid] = name
        elif op == _OP_CHANNEL:
            cid, sid = struct.unpack_from("<HH", body, 0)
            topic, _ = _string(body, 4)
            channels[cid] = Channel(cid, topic, schemas.get(sid, ""))
        elif op == _OP_MESSAGE:
            cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", body, 0)
            channel = channels.get(cid)
            if channel is not None:
                return channel, log_time, bytes(body[22:])
        return None

    with Path(path).open("rb") as handle_file:
        if handle_file.read(8) != MAGIC:
            raise McapScanError(f"{path}: not an MCAP file (bad magic bytes)")
        offset = 8
        while True:
            head = handle_file.read(9)
            if not head:
                result.complete = False
                result.stop_reason = f"file ends at byte {offset} without a footer (recording cut short?)"
                return
            if len(head) < 9:
                result.complete = False
                result.stop_reason = f"truncated record header at byte {offset}"
                return
            op = head[0]
            (length,) = struct.unpack_from("<Q", head, 1)
            body = handle_file.read(length) if length < (1 << 40) else b""
            if len(body) < length:
                result.complete = False
                result.stop_reason = (
                    f"truncated record (op 0x{op:02x}) at byte {offset}: {len(body)} of {length} bytes"
                )
                return
            offset += 9 + length
            view = memoryview(body)
            if op in (_OP_DATA_END, _OP_FOOTER):
                return
            if op != _OP_CHUNK:
                item = handle(op, view)
                if item is not None:
                    yield item
                continue
            try:
                _start, _end, size, crc = struct.unpack_from("<QQQI", view, 0)
                compression, pos = _string(view, 28)
                (clen,) = struct.unpack_from("<Q", view, pos)
                data = _decompress(view[pos + 8 : pos + 8 + clen], compression, size)
                if crc and zlib.crc32(data) != crc:
                    raise McapScanError("chunk CRC mismatch")
                items = [handle(o, b) for o, b in _records(memoryview(data))]
            except Exception as exc:  # noqa: BLE001 - decompressors raise their own types on damage
                result.bad_chunks += 1
                result.stop_reason = f"damaged chunk at byte {offset - 9 - length} skipped ({exc})"
                continue
            for item in items:
                if item is not None:
                    yield item
