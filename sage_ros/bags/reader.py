"""Open a ROS 2 bag for reading, whatever state it is in, and say what could not be read."""

from __future__ import annotations

import logging
import sqlite3
import struct
import tempfile
from collections.abc import Collection, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2 import Reader

from sage_ros.bags import mcap_scan

log = logging.getLogger(__name__)


class BagReadError(RuntimeError):
    """The bag cannot be read at all (missing, not a bag, nothing recoverable)."""


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes  # CDR-serialised message


@dataclass(frozen=True)
class BagProblem:
    kind: str  # "open" (fell back to scanning), "read" (stopped early), "damaged" (records skipped)
    detail: str


class BagSource:
    """A readable bag: topics with their types and counts, messages in time order, problems met.

    Reading errors never escape `messages()`: they end the iteration and land in `problems`, so
    whatever was read before stays usable.
    """

    def __init__(self, path: Path, storage: str, recovered: bool) -> None:
        self.path = path
        self.storage = storage  # "mcap" | "sqlite3"
        self.recovered = recovered  # True when read by the fallback scanner
        self.topics: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.problems: list[BagProblem] = []

    def message_count(self, topics: Collection[str]) -> int:
        return sum(self.counts.get(t, 0) for t in topics)

    def messages(self, topics: Collection[str]) -> Iterator[BagMessage]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file handles (safe to call twice)."""


class _RosbagsSource(BagSource):
    def __init__(self, path: Path, reader: Reader) -> None:
        files = _storage_files(path)
        storage = "sqlite3" if files and files[0].suffix == ".db3" else "mcap"
        super().__init__(path, storage, recovered=False)
        self._reader = reader
        for conn in reader.connections:
            self.topics[conn.topic] = conn.msgtype
            self.counts[conn.topic] = self.counts.get(conn.topic, 0) + conn.msgcount

    def messages(self, topics: Collection[str]) -> Iterator[BagMessage]:
        conns = [c for c in self._reader.connections if c.topic in set(topics)]
        if not conns:
            return
        try:
            for conn, t, raw in self._reader.messages(connections=conns):
                yield BagMessage(conn.topic, conn.msgtype, t, bytes(raw))
        except Exception as exc:  # noqa: BLE001 - storage back ends raise many types on damaged files
            self.problems.append(BagProblem("read", f"reading stopped early: {type(exc).__name__}: {exc}"))
            log.warning("%s: reading stopped early (%s); continuing with what was read", self.path, exc)

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()


class _McapScanSource(BagSource):
    def __init__(self, path: Path, files: list[Path]) -> None:
        super().__init__(path, "mcap", recovered=True)
        self._files = files
        # First pass: topics and counts (the data is in the page cache for the second pass).
        for msg in self._scan(report=False):
            self.topics[msg.topic] = msg.msgtype
            self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1

    def _scan(self, report: bool) -> Iterator[BagMessage]:
        for file in self._files:
            result = mcap_scan.ScanResult()
            try:
                for channel, t, raw in mcap_scan.scan(file, result):
                    yield BagMessage(channel.topic, channel.msgtype, t, raw)
            except (mcap_scan.McapScanError, OSError) as exc:
                result.complete, result.stop_reason = False, str(exc)
            if report and result.bad_chunks:
                detail = f"{file.name}: {result.bad_chunks} damaged chunk(s) skipped"
                self.problems.append(BagProblem("damaged", detail))
            if report and not result.complete:
                self.problems.append(BagProblem("read", f"{file.name}: {result.stop_reason}"))

    def messages(self, topics: Collection[str]) -> Iterator[BagMessage]:
        wanted = set(topics)
        # Unindexed order is file order; recorders write in arrival order, so sort within the scan.
        msgs = [m for m in self._scan(report=True) if m.topic in wanted]
        msgs.sort(key=lambda m: m.log_time_ns)
        yield from msgs


class _SqliteScanSource(BagSource):
    """Reads what SQLite can still reach in a damaged .db3, in row (= write = time) order.

    A file cut short keeps a header that announces more pages than exist, and SQLite then refuses
    even the schema. Reading a temporary copy whose header states the real page count lets it reach
    every table page that survived.
    """

    def __init__(self, path: Path, files: list[Path]) -> None:
        super().__init__(path, "sqlite3", recovered=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="sage_ros_db3_")
        self._files = [self._readable_copy(f, Path(self._tmp.name)) for f in files]
        for file in self._files:
            try:
                with closing(self._connect(file)) as db:
                    for name, typ in db.execute("SELECT name, type FROM topics"):
                        self.topics[name] = typ
                        self.counts.setdefault(name, 0)
                    # Counting rows may hit a lost page; counts are for progress display only.
                    for name, count in db.execute(
                        "SELECT t.name, COUNT(m.id) FROM topics t JOIN messages m "
                        "ON m.topic_id = t.id GROUP BY t.id"
                    ):
                        self.counts[name] = count
            except sqlite3.DatabaseError as exc:
                # Reported by messages() when it meets the same damage; here it only costs the counts.
                log.debug("%s: counting messages failed (%s)", file, exc)

    @staticmethod
    def _readable_copy(file: Path, folder: Path) -> Path:
        data = bytearray(file.read_bytes())
        if len(data) < 100 or not data.startswith(b"SQLite format 3\x00"):
            return file
        page_size = struct.unpack(">H", data[16:18])[0]
        page_size = 65536 if page_size == 1 else page_size
        pages = len(data) // page_size
        if pages == 0 or struct.unpack(">I", data[28:32])[0] == pages:
            return file
        copy = folder / file.name
        del data[pages * page_size :]
        data[28:32] = struct.pack(">I", pages)
        copy.write_bytes(bytes(data))
        return copy

    @staticmethod
    def _connect(file: Path) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{file}?mode=ro", uri=True)

    def messages(self, topics: Collection[str]) -> Iterator[BagMessage]:
        wanted = sorted(set(topics))
        if not wanted:
            return
        marks = ",".join("?" * len(wanted))
        for file in self._files:
            try:
                with closing(self._connect(file)) as db:
                    rows = db.execute(
                        f"SELECT t.name, t.type, m.timestamp, m.data FROM messages m JOIN topics t "
                        f"ON m.topic_id = t.id WHERE t.name IN ({marks})",
                        wanted,
                    )
                    for name, typ, t, data in rows:
                        yield BagMessage(name, typ, int(t), bytes(data))
            except sqlite3.DatabaseError as exc:
                self.problems.append(BagProblem("read", f"{file.name}: reading stopped early ({exc})"))

    def close(self) -> None:
        self._tmp.cleanup()


def _storage_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(path.glob("*.mcap")) + sorted(path.glob("*.db3"))


def open_bag(path: str | Path) -> BagSource:
    """Open a bag folder, or one .mcap / .db3 file, falling back to a scan when rosbags refuses it."""
    path = Path(path)
    if not path.exists():
        raise BagReadError(f"bag {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
        return _RosbagsSource(path, reader)
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for unreadable bags
        reason = f"{type(exc).__name__}: {exc}"
    files = _storage_files(path)
    mcaps = [f for f in files if f.suffix == ".mcap"]
    dbs = [f for f in files if f.suffix == ".db3"]
    if not mcaps and not dbs:
        raise BagReadError(f"{path}: not a readable bag ({reason}) and no .mcap or .db3 file to recover from")
    log.warning(
        "%s: rosbags could not open it (%s); scanning the storage file record by record", path, reason
    )
    source: BagSource = _McapScanSource(path, mcaps) if mcaps else _SqliteScanSource(path, dbs)
    source.problems.insert(
        0, BagProblem("open", f"rosbags could not open the bag ({reason}); recovered by scanning")
    )
    if not source.topics:
        raise BagReadError(f"{path}: not a readable bag ({reason}); scanning recovered no messages")
    return source
