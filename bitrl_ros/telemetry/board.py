"""Which board we run on (Raspberry Pi 4, Pi 5, x86), from the device tree or DMI, and a rough power model per
board for the CPU-utilisation estimate used when nothing measures power.

The model numbers are ROUGH ASSUMPTIONS (typical published figures for the bare board, no peripherals), good for
orders of magnitude only; that is why the estimate is always labelled `estimated` and never mixed with
measured power.
"""
from __future__ import annotations

from dataclasses import dataclass
import os

from bitrl_ros.telemetry._files import read_text, under

BOARDS = ("pi4", "pi5", "x86", "unknown")


@dataclass(frozen=True)
class PowerModel:
    idle_w: float  # whole board at idle
    max_w: float   # whole board with every core busy

    def watts(self, utilisation: float) -> float:
        """Linear in system CPU utilisation (0..1)."""
        u = min(max(utilisation, 0.0), 1.0)
        return self.idle_w + (self.max_w - self.idle_w) * u


# Rough assumptions, see the module docstring.
POWER_MODELS = {
    "pi4": PowerModel(idle_w=2.7, max_w=6.4),
    "pi5": PowerModel(idle_w=2.7, max_w=7.0),
    "x86": PowerModel(idle_w=8.0, max_w=35.0),     # a generic laptop
    "unknown": PowerModel(idle_w=8.0, max_w=35.0),
}


@dataclass(frozen=True)
class Board:
    kind: str        # one of BOARDS
    model: str       # human-readable, e.g. "Raspberry Pi 4 Model B Rev 1.4"
    power_model: PowerModel

    @property
    def is_pi(self) -> bool:
        return self.kind in ("pi4", "pi5")


def detect_board(root: str | os.PathLike = "/", override: str = "auto") -> Board:
    """The board from <root>/proc/device-tree/model (Pi) or <root>/sys/class/dmi/id (x86); `override`
    ("pi4" | "pi5" | "x86") skips detection. Never raises: an unreadable tree gives kind "unknown".
    """
    model, _ = read_text(under(root, "/proc/device-tree/model"))
    if model is None:
        model, _ = read_text(under(root, "/sys/firmware/devicetree/base/model"))
    if override != "auto":
        if override not in BOARDS:
            raise ValueError(f"board must be auto | {' | '.join(BOARDS)}, got {override!r}")
        return Board(override, model or override, POWER_MODELS[override])
    if model:
        if "Raspberry Pi 5" in model:
            return Board("pi5", model, POWER_MODELS["pi5"])
        if "Raspberry Pi 4" in model or "Raspberry Pi Compute Module 4" in model:
            return Board("pi4", model, POWER_MODELS["pi4"])
        return Board("unknown", model, POWER_MODELS["unknown"])
    dmi = under(root, "/sys/class/dmi/id")
    vendor, _ = read_text(dmi / "sys_vendor")
    product, _ = read_text(dmi / "product_name")
    if vendor is not None or product is not None:
        name = " ".join(x for x in (vendor, product) if x)
        return Board("x86", name or "x86", POWER_MODELS["x86"])
    import platform
    if root in ("/", b"/") and platform.machine() in ("x86_64", "AMD64", "i686"):
        return Board("x86", f"x86 ({platform.machine()}, no DMI)", POWER_MODELS["x86"])
    return Board("unknown", "unknown", POWER_MODELS["unknown"])


def cpu_model(root: str | os.PathLike = "/") -> str:
    """The CPU's marketing name (for benchmark records): /proc/cpuinfo's 'model name', else platform.processor()."""
    import platform

    text, _ = read_text(under(root, "/proc/cpuinfo"))
    for line in (text or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
