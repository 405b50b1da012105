# anyseg_ros developer tasks. `make` alone lists them; docs/installation.md explains setup.
SHELL := /bin/bash
# pipefail: a command piped through PIPFILTER still fails the target when it fails.
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
# torch goes in first, on its own: these pins lie on this machine's disk (pip reads them
# from there). On a CUDA machine, pick the index of your CUDA version, e.g.
#   make setup TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu126"
TORCH ?= torch==2.14.1 torchvision==0.29.1
TORCH_PIP_ARGS ?=
# Extras of setup.py always installed; `cv` and `ros` are added when there is no sourced
# ROS 2 (a ROS install brings its own OpenCV and rclpy, see docs/installation.md).
EXTRAS ?= test,data,deploy
PIPFLAGS ?= -q
PYTEST_ARGS ?=

# Everything started from here discovers ROS 2 peers on loopback only.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST

VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
# pip -q still prints one warning per package for every configured local index folder
# that lacks it (hundreds of lines on this machine); drop those, keep everything else.
PIPFILTER := 2>&1 | { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" || true; }
# How the venv gets rclpy, decided once when it is created: "system" or "wheels".
ROS_MODE := $(VENV)/.anyseg-ros-mode
# Interface packages without a wheel (tf2_msgs, event_camera_msgs), generated into a
# `wheels` venv.
INTERFACE_SOURCES := scripts/build_interfaces.py $(sort $(shell find interfaces -type f -not -name "*.md"))
# The install stamp's name carries a checksum of what decides the install: editing
# setup.py, setup.cfg, the interface sources or the variables above re-runs it, and
# nothing else does.
SETUP_SUM := $(shell { cat setup.py setup.cfg $(INTERFACE_SOURCES); echo '$(TORCH)|$(TORCH_PIP_ARGS)|$(EXTRAS)'; } | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.anyseg-installed-$(SETUP_SUM)

.PHONY: help setup test demo demo-checkpoint bench results wheel clean distclean

help:
	@echo "make setup      create $(VENV) (torch, then pip install -e .[$(EXTRAS),...]); no-op when up to date"
	@echo "make test       setup, then pytest over test/"
	@echo "make demo       setup, then replay a synthetic drive with sensor outages into anyseg_node; results in demo_output/"
	@echo "make demo-checkpoint  setup, then train the node's default checkpoint (teacher + student, about an hour on a CPU)"
	@echo "make bench      setup, then run every benchmarks/*.py"
	@echo "make results    setup, then run the synthetic experiment of docs/results.md (hours on a CPU; resumable; RESULTS_JOBS=2 rows at a time)"
	@echo "make wheel      build dist/anyseg_ros-*.whl"
	@echo "make clean      remove build artefacts and caches (keeps $(VENV))"
	@echo "make distclean  clean, and remove $(VENV), .hypothesis/ and demo_output/"
	@echo "Variables: VENV=$(VENV) PYTHON=$(PYTHON) TORCH='$(TORCH)' TORCH_PIP_ARGS= EXTRAS=$(EXTRAS) PIPFLAGS=$(PIPFLAGS) PYTEST_ARGS="

setup: $(STAMP)

# A PYTHON that imports rclpy means a sourced ROS 2: the venv sees it through
# --system-site-packages. Otherwise the venv gets the ROS 2 wheels from PyPI.
$(ROS_MODE):
	@if $(PYTHON) -c 'import rclpy' >/dev/null 2>&1; then \
	  echo "==> $(PYTHON) imports rclpy (sourced ROS 2): creating $(VENV) with --system-site-packages"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV) && echo system > $@; \
	else \
	  echo "==> $(PYTHON) has no rclpy: creating $(VENV); it gets the ROS 2 wheels from PyPI"; \
	  $(PYTHON) -m venv $(VENV) && echo wheels > $@; \
	fi

# setuptools >= 70.1 builds wheels by itself, so the `wheel` package stays out: with it
# installed, pip 23 runs the legacy `setup.py develop` for `pip install -e .` (this project
# has no pyproject.toml), and setuptools >= 80 rejects setup.cfg's [develop] script_dir
# there ("command 'develop' has no such option 'script_dir'"). --use-pep517 makes sure.
$(STAMP): $(ROS_MODE)
	@echo "==> $(VENV): installing build tools and $(TORCH)"
	@$(PIP) install $(PIPFLAGS) 'setuptools>=70.1' $(PIPFILTER)
	$(if $(strip $(TORCH)),@$(PIP) install $(PIPFLAGS) $(TORCH_PIP_ARGS) $(TORCH) $(PIPFILTER))
	@extras='$(EXTRAS)'; \
	if [ "$$(cat $(ROS_MODE))" = wheels ]; then extras="$$extras,cv,ros"; fi; \
	echo "==> $(VENV): pip install -e .[$$extras]"; \
	$(PIP) install $(PIPFLAGS) --use-pep517 -e ".[$$extras]" $(PIPFILTER)
	@# The events extra (evt3, the fast EVT 3.0 decoder) has wheels for glibc >= 2.34 only:
	@# tried on its own, so that a machine without one still sets up (numpy decodes EVT 3.0).
	@$(PIP) install $(PIPFLAGS) 'evt3>=0.4' $(PIPFILTER) || \
	  echo "note: the evt3 package does not install here (no wheel for this platform): EVT 3.0 event packets decode with numpy"
	@# No wheel provides tf2_msgs or event_camera_msgs: generate them from interfaces/ with the
	@# rosidl wheels (about 40 s; a no-op when built and unchanged). A sourced ROS 2 has them
	@# (rosdep installs both from package.xml).
	@if [ "$$(cat $(ROS_MODE))" = wheels ]; then \
	  echo "==> $(VENV): scripts/build_interfaces.py (tf2_msgs, event_camera_msgs)"; \
	  $(VPY) scripts/build_interfaces.py --pip-args="$(PIPFLAGS)" $(PIPFILTER); \
	fi
	@if [ "$$(cat $(ROS_MODE))" = system ] && ! $(VPY) -c 'import cv2' >/dev/null 2>&1; then \
	  echo "error: the sourced ROS 2 has no OpenCV for Python (ros-core and ros-base leave it out):" \
	       "sudo apt install python3-opencv, or rosdep install --from-paths . -y --ignore-src;" \
	       "not pip's opencv-python, whose numpy 2 breaks ROS's message modules" >&2; \
	  exit 1; \
	fi
	@if [ "$$(cat $(ROS_MODE))" = system ] && ! $(VPY) -c 'import tf2_msgs.msg' >/dev/null 2>&1; then \
	  echo "error: the sourced ROS 2 has no tf2_msgs (the type of /tf and /tf_static):" \
	       "sudo apt install ros-$$ROS_DISTRO-tf2-msgs, or rosdep install --from-paths . -y --ignore-src" >&2; \
	  exit 1; \
	fi
	@if [ "$$(cat $(ROS_MODE))" = system ] && ! $(VPY) -c 'import event_camera_msgs.msg' >/dev/null 2>&1; then \
	  echo "error: the sourced ROS 2 has no event_camera_msgs (what event-camera drivers publish):" \
	       "sudo apt install ros-$$ROS_DISTRO-event-camera-msgs, or rosdep install --from-paths . -y --ignore-src" >&2; \
	  exit 1; \
	fi
	@rm -f $(VENV)/.anyseg-installed-*
	@touch $@
	@echo "==> $(VENV) is ready"

test: setup
	$(VPY) -m pytest $(PYTEST_ARGS)

# A synthetic drive with a LiDAR and a camera outage, replayed into anyseg_node (about two
# minutes on a 2-core CPU); writes demo_output/{summary.md,montage.png,timeline.png}.
demo: setup
	$(VPY) -m anyseg_ros.tools.demo --out demo_output

# The node's default checkpoint, with the recipe docs/results.md picked for it (cross-sensor
# row xs_norm: row sup_init with the LiDAR's intensity normalised per sweep): the synthetic
# teacher (3000 steps, as the experiment's), then a student started from its weights and
# trained with anymodal dropout and L_sup only (config/train_synthetic_*.yaml; two to three
# hours on a 2-core CPU, resumable), then an fp16 copy inside the package. DEMO_RUNS keeps
# the training runs. The shipped file is the fp16 copy of that row's own checkpoint (its
# command and teacher: docs/results/cross_sensor/tables.md).
DEMO_RUNS ?= runs/demo-checkpoint
demo-checkpoint: setup
	@for stage in teacher student; do \
	  resume=; [ -f $(DEMO_RUNS)/$$stage/last.train.safetensors ] && resume=--resume; \
	  echo "==> $$stage $$resume"; \
	  $(VPY) -m anyseg_core.train --config config/train_synthetic_$$stage.yaml \
	    --set out_dir=$(DEMO_RUNS)/$$stage \
	    --set teacher.checkpoint=$(DEMO_RUNS)/teacher/final.safetensors \
	    $$([ $$stage = teacher ] && echo --set optim.steps=3000 --set optim.warmup_steps=200) \
	    $$([ $$stage = student ] && echo --set model.init=teacher --set loss.lambda_mad=0 \
	       --set loss.alpha_umd=0 --set loss.beta_cmd=0 --set data.lidar_intensity=p95) \
	    $$resume || exit 1; \
	done
	$(VPY) -m anyseg_core.export $(DEMO_RUNS)/student/final.safetensors anyseg_ros/checkpoints/demo.safetensors --dtype float16

# Rows trained at a time, one OpenMP thread each on a 2-core CPU (docs/results.md).
RESULTS_JOBS ?= 2
results: setup
	$(VPY) scripts/synthetic_experiment.py --jobs $(RESULTS_JOBS)

bench: setup
	@found=0; \
	for f in benchmarks/*.py; do \
	  [ -e "$$f" ] || continue; \
	  case "$${f##*/}" in _*) continue ;; esac; \
	  found=1; echo "==> $$f"; \
	  $(VPY) "$$f" || exit 1; \
	done; \
	[ $$found = 1 ] || echo "no benchmarks/*.py yet"

# Builds from a clean build/ so that a module deleted from the tree cannot linger in it.
wheel: setup
	@rm -rf build
	@$(PIP) wheel $(PIPFLAGS) --no-deps --no-build-isolation --use-pep517 -w dist . $(PIPFILTER)
	@ls -1 dist/*.whl

clean:
	rm -rf build dist *.egg-info .pytest_cache
	find anyseg_core anyseg_ros test benchmarks launch -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true

distclean: clean
	rm -rf $(VENV) .hypothesis demo_output
