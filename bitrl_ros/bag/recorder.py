"""BagRecorder: serialized (CDR) messages -> a rosbag2 bag (MCAP or sqlite3), plus `reindex` for crashed bags.

Memory stays bounded: messages go straight to the storage writer (MCAP keeps at most one chunk, ~1 MiB, in
memory; sqlite3 inserts rows). Every `flush_interval_s` the open MCAP chunk is written out and the file flushed
(sqlite3: the transaction is committed), so a recorder killed with SIGKILL loses at most that much.

Crash story: rosbag2 (and rosbags) write metadata.yaml, and MCAP its summary and footer, only at close. A
killed recorder leaves the storage file without them; `reindex(path)` (`bitrl bag reindex PATH`) cuts the file
after its last complete record, closes it with a footer and rebuilds metadata.yaml from the storage file's
own schemas, channels and messages. Until then `open_bag` refuses the bag with a BagError that says so.
"""
from __future__ import annotations

from io import StringIO
from pathlib import Path
import sqlite3
import struct
import time

from bitrl_ros.errors import BagError

STORAGES = ("mcap", "sqlite3")
MCAP_MAGIC = b"\x89MCAP0\r\n"


def make_qos(history: str = "keep_last", depth: int = 10, reliability: str = "reliable",
             durability: str = "volatile"):
    """A rosbags Qos (what the metadata's offered_qos_profiles hold) from plain names."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory[history.upper()], int(depth), QosReliability[reliability.upper()],
               QosDurability[durability.upper()], zero, zero, QosLiveliness.AUTOMATIC, zero, False)


class BagRecorder:
    """Write raw CDR messages of declared topics into a new bag directory `path`."""

    def __init__(self, path: str | Path, storage: str = "mcap", typestore=None, flush_interval_s: float = 1.0):
        from rosbags.rosbag2 import StoragePlugin, Writer

        from bitrl_ros.bag.typestore import make_typestore

        if storage not in STORAGES:
            raise BagError(f"bag {path}: storage {storage!r} (allowed: {' | '.join(STORAGES)})")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {self.path}: exists already (the recorder never overwrites a bag)")
        self.storage = storage
        self.typestore = typestore or make_typestore()
        self.flush_interval_s = float(flush_interval_s)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(self.path, version=9, storage_plugin=plugin)
        try:
            self.writer.open()
        except Exception as exc:  # noqa: BLE001
            raise BagError(f"bag {self.path}: cannot create: {exc}") from None
        if storage == "sqlite3":
            # rosbags opens the database bound to this thread; a node writes from its executor's thread.
            st = self.writer.storage
            st.conn.commit()
            st.conn.close()
            st.conn = sqlite3.connect(f"file:{st.path}", uri=True, check_same_thread=False)
            st.cursor = st.conn.cursor()
        self.connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self._dirty = False
        self.closed = False

    def add_topic(self, topic: str, msgtype: str, qos=None) -> None:
        """Declare a topic (type definition and QoS go into the storage file and metadata.yaml)."""
        if topic in self.connections:
            return
        if msgtype not in self.typestore.types:
            raise BagError(f"bag {self.path}: unknown message type {msgtype!r} for topic {topic}")
        qos = qos if qos is not None else make_qos()
        qos = make_qos(**qos) if isinstance(qos, dict) else qos
        self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.typestore,
                                                             offered_qos_profiles=[qos])
        self.counts[topic] = 0
        self._dirty = True

    def write(self, topic: str, t_ns: int, data: bytes | memoryview) -> None:
        """Append one serialized message (bag timestamp t_ns, ns)."""
        self.writer.write(self.connections[topic], int(t_ns), data)
        self.counts[topic] += 1
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def write_message(self, topic: str, t_ns: int, msg) -> None:
        """Serialize a rosbags message object and write it (tests, foreign bags, benchmarks)."""
        self.write(topic, t_ns, self.typestore.serialize_cdr(msg, self.connections[topic].msgtype))

    def flush(self) -> None:
        """Put everything written so far into the file (what a SIGKILL cannot take away)."""
        self._last_flush = time.monotonic()
        if not self._dirty or self.closed:
            return
        storage = self.writer.storage
        if self.storage == "mcap":
            if storage.chunk.msgs:  # schemas/channels travel in the first chunk that has messages
                storage.close_chunk()
            storage.bio.flush()
        else:
            storage.conn.commit()
        self._dirty = False

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        """Finish the storage file (MCAP summary, footer) and write metadata.yaml."""
        if self.closed:
            return
        self.closed = True
        self.writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _find_storage(path: Path) -> Path:
    from bitrl_ros.bag.reader import storage_files

    if not path.is_dir():
        raise BagError(f"bag {path}: not a bag directory")
    files = storage_files(path)
    if len(files) != 1:
        raise BagError(f"bag {path}: expected one .mcap or .db3 storage file, found "
                       f"{', '.join(f.name for f in files) or 'none'}")
    return files[0]


def _repair_mcap(file: Path) -> bool:
    """Cut an unfinished MCAP after its last complete record and close it with DataEnd + Footer.
    Returns False when the file was already finished.
    """
    with file.open("rb") as f:
        data = f.read()
    if len(data) >= 8 + 37 and data[-8:] == MCAP_MAGIC and data[-37:-28] == b"\x02\x14" + b"\x00" * 7:
        return False
    if data[:8] != MCAP_MAGIC:
        raise BagError(f"bag storage {file}: not an MCAP file (bad magic)")
    pos = 8
    end = pos
    while pos + 9 <= len(data):
        op = data[pos]
        (size,) = struct.unpack_from("<Q", data, pos + 1)
        if op in (0x02, 0x0F) or pos + 9 + size > len(data):
            break  # a footer / data end without the rest, or a record cut by the crash
        pos += 9 + size
        end = pos
    body = data[:end]
    data_end = bytes([0x0F]) + struct.pack("<Q", 4) + struct.pack("<I", 0)
    footer = bytes([0x02]) + struct.pack("<Q", 20) + struct.pack("<QQI", 0, 0, 0)
    tmp = file.with_suffix(".mcap.tmp")
    tmp.write_bytes(body + data_end + footer + MCAP_MAGIC)
    tmp.replace(file)
    return True


def _repair_sqlite(file: Path) -> None:
    # A normal (not immutable) connection rolls back the transaction the crash interrupted (hot journal).
    conn = sqlite3.connect(str(file))
    try:
        conn.execute("SELECT count(*) FROM messages").fetchone()
        conn.commit()
    except sqlite3.DatabaseError as exc:
        raise BagError(f"bag storage {file}: corrupt sqlite3 database: {exc}") from None
    finally:
        conn.close()


def reindex(path: str | Path) -> dict:
    """Make a bag whose recorder died readable again: repair the storage file, rebuild metadata.yaml.
    Returns {"storage": file name, "messages": n, "topics": {topic: count}, "repaired": bool}.
    """
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.metadata import dump_qos_v9
    from ruamel.yaml import YAML

    from bitrl_ros.bag.typestore import make_typestore, register_from_definitions

    path = Path(path)
    file = _find_storage(path)
    repaired = _repair_mcap(file) if file.suffix == ".mcap" else (_repair_sqlite(file) or True)
    try:
        with Reader(file) as reader:
            conns = list(reader.connections)
            counts: dict[int, int] = {c.id: 0 for c in conns}
            t_min, t_max = 2**63 - 1, 0
            for conn, t_ns, _ in reader.messages():
                counts[conn.id] += 1
                t_min, t_max = min(t_min, t_ns), max(t_max, t_ns)
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise BagError(f"bag storage {file}: cannot be reindexed: {exc}") from None
    store = make_typestore()
    register_from_definitions(store, conns)
    total = sum(counts.values())
    if not total:
        t_min = 0
    duration = max(0, t_max - t_min)
    topics = []
    for c in conns:
        digest = c.digest or (store.hash_rihs01(c.msgtype) if c.msgtype in store.types else "")
        topics.append({"topic_metadata": {"name": c.topic, "type": c.msgtype,
                                          "serialization_format": c.ext.serialization_format,
                                          "offered_qos_profiles": dump_qos_v9(c.ext.offered_qos_profiles),
                                          "type_description_hash": digest},
                       "message_count": counts[c.id]})
    info = {"version": 9, "storage_identifier": "mcap" if file.suffix == ".mcap" else "sqlite3",
            "relative_file_paths": [file.name], "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": t_min}, "message_count": total,
            "topics_with_message_count": topics, "compression_format": "", "compression_mode": "",
            "files": [{"path": file.name, "starting_time": {"nanoseconds_since_epoch": t_min},
                       "duration": {"nanoseconds": duration}, "message_count": total}],
            "custom_data": {"reindexed": "bitrl"}, "ros_distro": "rosbags"}
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    out = StringIO()
    yaml.dump({"rosbag2_bagfile_information": info}, out)
    tmp = path / "metadata.yaml.tmp"
    tmp.write_text(out.getvalue(), "utf8")
    tmp.replace(path / "metadata.yaml")
    return {"storage": file.name, "messages": total, "repaired": bool(repaired),
            "topics": {c.topic: counts[c.id] for c in conns}}
