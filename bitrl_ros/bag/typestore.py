"""The rosbags typestore for bitrl bags: ROS 2 Kilted's standard types plus bitrl_msgs, read from the .msg files.

The bag library stays ROS-free: it never imports the generated bitrl_msgs Python classes, only the message
definitions, so bags can be written and read on machines without a ROS install.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
import sys

from rosbags.typesys import get_types_from_msg, get_typestore, Stores

from bitrl_ros.errors import BagError

BITRL_TYPES = ("Observation", "SerializedState", "EncodedState", "Action", "TrainingStats")


def msg_dir() -> Path:
    """bitrl_msgs/msg of the source tree, else the installed share/bitrl_msgs/msg."""
    candidates = [Path(__file__).resolve().parents[2] / "bitrl_msgs" / "msg",
                  Path(sys.prefix) / "share" / "bitrl_msgs" / "msg"]
    for c in candidates:
        if (c / "Observation.msg").is_file():
            return c
    raise BagError("bitrl_msgs message definitions not found (looked in "
                   + ", ".join(str(c) for c in candidates) + ")")


@lru_cache(maxsize=1)
def make_typestore():
    """Kilted typestore with bitrl_msgs/msg/* registered (cached: building it parses every .msg file)."""
    store = get_typestore(Stores.ROS2_KILTED)
    d = msg_dir()
    types = {}
    for name in BITRL_TYPES:
        path = d / f"{name}.msg"
        types.update(get_types_from_msg(path.read_text(), f"bitrl_msgs/msg/{name}"))
    store.register(types)
    return store


def register_from_definitions(store, connections) -> list[str]:
    """Register the types a bag carries definitions for but the store lacks (foreign custom messages).
    Returns the message types that are still unknown.
    """
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import get_types_from_idl

    unknown = []
    for conn in connections:
        if conn.msgtype in store.types:
            continue
        fmt, text = conn.msgdef.format, conn.msgdef.data
        try:
            if fmt == MessageDefinitionFormat.MSG and text:
                store.register(get_types_from_msg(text, conn.msgtype))
            elif fmt == MessageDefinitionFormat.IDL and text:
                store.register(get_types_from_idl(text))
            else:
                unknown.append(conn.msgtype)
        except Exception:  # noqa: BLE001 - a definition rosbags cannot parse is an unknown type to us
            unknown.append(conn.msgtype)
    return unknown
