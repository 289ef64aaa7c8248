from glob import glob
import os
import sys

from setuptools import Extension
from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

# --- native engine extension (optional: the package installs and runs on the torch engine without it) ---------
NATIVE_DIR = os.path.join("bitrl_ros", "backbone", "engines", "native")
NATIVE_STATUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), NATIVE_DIR, "_native_build_status.txt")


def _native_status(text):
    try:
        with open(NATIVE_STATUS, "w") as f:
            f.write(text + "\n")
    except OSError:
        pass


def native_extensions():
    """The `_native` pybind11 extension from every .cpp in NATIVE_DIR (tests/ excluded), or none without pybind11."""
    try:
        import pybind11
    except ImportError:
        msg = "pybind11 is not installed, the native engine is not built (pip install pybind11, then reinstall)"
        print("WARNING: " + msg, file=sys.stderr)
        _native_status(msg)
        return []
    sources = sorted(glob(os.path.join(NATIVE_DIR, "*.cpp")))
    if not sources:
        return []
    return [Extension(
        "bitrl_ros.backbone.engines.native._native",
        sources=sources,
        depends=sorted(glob(os.path.join(NATIVE_DIR, "*.h"))),
        include_dirs=[pybind11.get_include(), NATIVE_DIR],
        language="c++",
        # Baseline ISA only: the SIMD kernels use function target attributes and dispatch at run time.
        extra_compile_args=["-O3", "-std=c++17", "-fvisibility=hidden", "-pthread", "-g0"],
        extra_link_args=["-pthread"],
    )]


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: a failed native build is a warning, recorded for the engine."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # no compiler, etc.
            self._failed(e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
            _native_status("ok")
        except Exception as e:
            self._failed(e)

    def _failed(self, e):
        if getattr(self, "_native_failed", False):  # a follow-up error (e.g. nothing to copy): keep the first
            return
        self._native_failed = True
        msg = f"the native engine failed to build ({type(e).__name__}: {e}); using the torch engine"
        print("WARNING: " + msg, file=sys.stderr)
        _native_status(msg)


package_name = "bitrl_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["bitrl_ros", "bitrl_ros.*"]),
    package_data={"bitrl_ros.serialize": ["field_scales.json"]},  # the fitted scales of the `scaled` numbers
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/config", sorted(glob("config/*.yaml"))),
        ("share/" + package_name + "/launch", sorted(glob("launch/*.launch.py"))),
        *[("share/" + package_name + "/" + d, sorted(f for f in glob(d + "/*") if os.path.isfile(f)))
          for d in sorted(glob("models/*")) if os.path.isdir(d)],
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    ext_modules=native_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    maintainer="bitrl_ros developers",
    maintainer_email="bitrl-ros@example.org",
    description="Reinforcement learning on a frozen 1.58-bit (ternary) language-model backbone for ROS 2 robots.",
    license="Apache-2.0",
    python_requires=">=3.10",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "bitrl = bitrl_ros.cli:main",
            "state_serializer = bitrl_ros.nodes.state_serializer:main",
            "ternary_encoder = bitrl_ros.nodes.ternary_encoder:main",
            "diagnostics_monitor = bitrl_ros.nodes.diagnostics_monitor:main",
            "policy_value = bitrl_ros.nodes.policy_value:main",
            "sim_bridge = bitrl_ros.nodes.sim_bridge:main",
            "bag_recorder = bitrl_ros.nodes.bag_recorder:main",
            "bag_replay = bitrl_ros.nodes.bag_replay:main",
            "agent = bitrl_ros.nodes.agent:main",
        ],
    },
)
