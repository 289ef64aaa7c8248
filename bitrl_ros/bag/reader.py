"""Reading rosbag2 bags (MCAP or sqlite3) written by the bitrl recorder or by other tools.

Every failure surfaces as BagError naming the file and what is wrong (missing metadata.yaml, a truncated or
corrupt storage file, a message type without a definition); rosbags' own exceptions never escape.

One open Bag reads any number of topics in one pass (`messages(topics)`, timestamp order); `iter_records`
turns one bitrl topic into records (see records.py), `read_actions` / `read_encoded` key them by (episode, step).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from bitrl_ros.bag.records import ActionRecord, EncodedRecord, topic_matches
from bitrl_ros.errors import BagError

STORAGE_SUFFIXES = (".mcap", ".db3")


def storage_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES) if path.is_dir() else []


def _explain(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.rstrip(".")


class Bag:
    """An open bag: `topics`, `messages(topics)` (decoded) and `raw_messages(topics)` (CDR bytes)."""

    def __init__(self, path: str | Path, typestore=None):
        from rosbags.rosbag2 import Reader

        from bitrl_ros.bag.typestore import make_typestore, register_from_definitions

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path}: does not exist")
        if self.path.is_dir() and not (self.path / "metadata.yaml").exists():
            files = storage_files(self.path)
            hint = (f" (storage file {files[0].name} is there: the recorder did not close it; run "
                    f"`bitrl bag reindex {self.path}`)") if files else " and no .mcap/.db3 storage file"
            raise BagError(f"bag {self.path}: missing metadata.yaml{hint}")
        if self.path.is_file() and self.path.suffix not in STORAGE_SUFFIXES:
            raise BagError(f"bag {self.path}: not a rosbag2 directory or .mcap/.db3 file")
        self.typestore = typestore or make_typestore()
        try:
            self.reader = Reader(self.path)
            self.reader.open()
        except Exception as exc:  # noqa: BLE001 - ReaderError, sqlite/apsw errors, struct errors, ...
            raise BagError(f"bag {self.path}: cannot open ({self._storage_name()}): {_explain(exc)}; the "
                           f"storage file is truncated or corrupt (a bag whose recorder crashed can be "
                           f"repaired with `bitrl bag reindex`)") from None
        self.unknown_types = register_from_definitions(self.typestore, self.reader.connections)

    def _storage_name(self) -> str:
        if self.path.is_file():
            return self.path.name
        files = storage_files(self.path)
        return ", ".join(f.name for f in files) or "no storage file"

    @property
    def connections(self):
        return self.reader.connections

    @property
    def topics(self) -> dict[str, tuple[str, int]]:
        """Map of topic -> (message type, message count)."""
        out: dict[str, tuple[str, int]] = {}
        for c in self.reader.connections:
            t, n = out.get(c.topic, (c.msgtype, 0))
            out[c.topic] = (t, n + c.msgcount)
        return out

    @property
    def message_count(self) -> int:
        return self.reader.message_count

    def select(self, topics: Iterable[str] | None):
        if topics is None:
            return list(self.reader.connections)
        topics = list(topics)
        conns = [c for c in self.reader.connections if any(topic_matches(c.topic, t) for t in topics)]
        return conns

    def require(self, topic: str, what: str) -> None:
        """Raise BagError naming the bag's topics unless the bag has `topic` (of message type `what`)."""
        if not self.select([topic]):
            raise BagError(f"bag {self.path}: no topic {topic!r} ({what}); topics: "
                           f"{', '.join(self.topics) or 'none'}")

    def raw_messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[object, int, bytes]]:
        """(connection, bag timestamp ns, CDR bytes) in timestamp order."""
        conns = self.select(topics)
        if not conns:
            return
        try:
            for conn, t_ns, raw in self.reader.messages(connections=conns):
                yield conn, t_ns, raw
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise BagError(f"bag {self.path}: corrupt data in {self._storage_name()}: {_explain(exc)}") from None

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, object]]:
        """(topic, bag timestamp ns, decoded message) in timestamp order."""
        conns = self.select(topics)
        for c in conns:
            if c.msgtype not in self.typestore.types:
                raise BagError(f"bag {self.path}: unknown message type {c.msgtype!r} on topic {c.topic} (no "
                               f"definition in the bag and not a ROS 2 Kilted or bitrl_msgs type)")
        for conn, t_ns, raw in self.raw_messages(topics):
            try:
                msg = self.typestore.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # noqa: BLE001
                raise BagError(f"bag {self.path}: cannot decode a {conn.msgtype} message on {conn.topic} at "
                               f"t={t_ns} ns: {_explain(exc)}") from None
            yield conn.topic, t_ns, msg

    def records(self, topic: str, record):
        """record.from_msg of every message on a bitrl topic (record: a records.py class); BagError without it."""
        self.require(topic, record.MSGTYPE)
        for _, t_ns, m in self.messages([topic]):
            yield record.from_msg(t_ns, m)

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_bag(path: str | Path, typestore=None) -> Bag:
    """Open a bag directory (metadata.yaml + storage) or a bare .mcap/.db3 file; raises BagError."""
    return Bag(path, typestore)


def iter_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, object]]:
    """(topic, t_ns, msg) of the given topics (all when None), timestamp order."""
    with open_bag(path) as bag:
        yield from bag.messages(topics)


def iter_records(path: str | Path, topic: str, record) -> Iterator:
    """Records (ObsRecord, ActionRecord, EncodedRecord) of one bitrl topic of the bag at path."""
    with open_bag(path) as bag:
        yield from bag.records(topic, record)


def iter_actions(path: str | Path, topic: str = "action") -> Iterator[ActionRecord]:
    return iter_records(path, topic, ActionRecord)


def read_actions(path: str | Path, topic: str = "action") -> dict[tuple[int, int], ActionRecord]:
    """Actions keyed by (episode, step); a step acted on twice keeps the last action."""
    return {(a.episode, a.step): a for a in iter_actions(path, topic)}


def read_encoded(path: str | Path, topic: str = "encoded_state") -> dict[tuple[int, int], EncodedRecord]:
    """Read the EncodedState records, keyed by (episode, step)."""
    return {(r.episode, r.step): r for r in iter_records(path, topic, EncodedRecord)}
