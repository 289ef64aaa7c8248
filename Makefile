# bitrl_ros: the two commands a user needs are `make run` and `make test`; both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bitrl-setup-stamp

# DDS discovery never leaves this machine; logs stay in the build tree.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 42
export ROS_LOG_DIR := $(CURDIR)/build/ros_log
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

RUN_ARGS ?= --config config/agent.yaml --steps 10000

.PHONY: setup run test test-fast train clean bench-sb3

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt setup.py package.xml requirements-build.txt scripts/build_msgs.sh $(wildcard bitrl_msgs/CMakeLists.txt bitrl_msgs/package.xml bitrl_msgs/msg/*.msg bitrl_msgs/srv/*.srv) $(wildcard bitrl_ros/backbone/engines/native/*.cpp bitrl_ros/backbone/engines/native/*.h)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	VENV=$(VENV) bash scripts/build_msgs.sh
	@mkdir -p build/ros_log
	@touch $(STAMP)
	@echo "set-up complete: $(VENV)"

run: setup
	$(VENV)/bin/bitrl run $(RUN_ARGS)

test: setup
	@mkdir -p build/ros_log
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench-sb3: setup
	$(PY) bench/ppo_vs_sb3.py

clean:
	rm -rf build runs .pytest_cache

# Native ternary kernels, C++ self-test (every ISA this CPU runs must match the scalar path bit for bit).
# test-arm: the same test cross-compiled for ARMv8.0 (Raspberry Pi 4, Cortex-A72: NEON without dot product) and
# run under qemu-aarch64 with a Cortex-A72 CPU model, so an instruction the Pi 4 lacks would fault.
# Needs the Debian/Ubuntu packages g++-aarch64-linux-gnu and qemu-user.
NK_DIR := bitrl_ros/backbone/engines/native
NK_SRC := $(sort $(wildcard $(NK_DIR)/kernels*.cpp)) $(NK_DIR)/tests/test_kernels.cpp
AARCH64_CXX ?= aarch64-linux-gnu-g++
QEMU_AARCH64 ?= qemu-aarch64

.PHONY: test-arm test-native-cpp

test-native-cpp:
	@mkdir -p build/native
	g++ -O2 -std=c++17 -Wall -Wextra $(NK_SRC) -o build/native/test_kernels
	build/native/test_kernels

test-arm:
	@mkdir -p build/native
	$(AARCH64_CXX) -O2 -static -march=armv8-a -std=c++17 -Wall -Wextra $(NK_SRC) -o build/native/test_kernels_arm
	$(QEMU_AARCH64) -cpu cortex-a72 build/native/test_kernels_arm

# The robot user's path for real: the upstream ROS 2 launch stack (vendored in ../shared/vendor/ros2-launch, on no
# registry these machines reach) installed into the venv, a colcon workspace of both packages built against it, and
# the tests that run `ros2 launch` on it. Without this target those tests skip; here a skip is a failure.
ROS2_LAUNCH_VENDOR ?= $(firstword $(wildcard $(abspath ../shared/vendor/ros2-launch) /work/shared/vendor/ros2-launch) \
	$(abspath ../shared/vendor/ros2-launch))
COLCON_WS := build/colcon_ws
VENV_ABS := $(abspath $(VENV))

.PHONY: launch-setup test-launch
launch-setup: setup
	@test -x $(ROS2_LAUNCH_VENDOR)/install.sh || { echo "launch-setup: no ROS 2 launch stack at" \
		"$(ROS2_LAUNCH_VENDOR) (set ROS2_LAUNCH_VENDOR)" >&2; exit 1; }
	bash $(ROS2_LAUNCH_VENDOR)/install.sh $(VENV)
	CMAKE_PREFIX_PATH=$(VENV_ABS) AMENT_PREFIX_PATH=$(VENV_ABS) PATH=$(VENV_ABS)/bin:$$PATH \
		bash docker/build_workspace.sh $(COLCON_WS) --python $(VENV_ABS)/bin/python --symlink-install

test-launch: launch-setup
	@mkdir -p build/ros_log
	BITRL_COLCON_WS=$(abspath $(COLCON_WS)) BITRL_REQUIRE_LAUNCH=1 $(PY) -m pytest -q test/test_launch.py

# Optional: Ray for the sweeps' --ray (bench/ray_sweep.py); test-sweep runs the Ray path on two tiny cells (CI).
.PHONY: sweep-setup test-sweep
sweep-setup: setup
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-sweep.txt

test-sweep: sweep-setup
	@mkdir -p build/ros_log
	BITRL_REQUIRE_RAY=1 $(PY) -m pytest -q test/test_sweep_ray.py

# Optional: llama-cpp-python (built from source, no llava) + gguf for bench/native_vs_llamacpp.py. Not part of setup.
.PHONY: bench-setup
bench-setup: setup
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" MAKEFLAGS=-j2 CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(PY) -m pip install --disable-pip-version-check --no-binary llama-cpp-python -r requirements-bench.txt
