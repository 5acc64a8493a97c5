"""Write ROS 2 bags (MCAP or sqlite3) with `rosbags`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer

from sage_ros.bags.messages import IMAGE_TYPE, TYPESTORE, serialize

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagWriter:
    """A bag folder being written; topics are added on first use. Use as a context manager.

    `write(topic, log_time_ns, msg)` serialises a rosbags message; `write_raw` copies CDR bytes
    read from another bag unchanged (inputs carried into an output bag stay bit-identical).
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise ValueError(f"unknown bag storage {storage!r}; choose one of {', '.join(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists already; remove it or choose another output")
        self.storage = storage
        # Metadata version 8 is what Jazzy's rosbag2 writes; later releases read it too.
        self._writer = Writer(self.path, version=8, storage_plugin=STORAGES[storage])
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def _connection(self, topic: str, msgtype: str) -> Any:
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            self._connections[topic] = conn
            self.counts[topic] = 0
        elif conn.msgtype != msgtype:
            raise ValueError(f"topic {topic} already holds {conn.msgtype}, cannot add {msgtype}")
        return conn

    def write(self, topic: str, log_time_ns: int, msg: Any, msgtype: str = IMAGE_TYPE) -> None:
        self.write_raw(topic, log_time_ns, serialize(msg, msgtype), msgtype)

    def write_raw(self, topic: str, log_time_ns: int, raw: bytes | memoryview, msgtype: str) -> None:
        self._writer.write(self._connection(topic, msgtype), int(log_time_ns), raw)
        self.counts[topic] += 1
