# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv with the CPU runtime only (ONNX Runtime, OpenVINO, onnx; no PyTorch) and runs the demo
#   make test   creates .venv with everything CPU-side (ROS 2 from PyPI, OpenVINO, training, eval) and runs the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Developers keep the released files beside the repository; users download them (pinned + sha256).
SHARED_OFFICIAL := $(wildcard ../shared/sage_official)
ifneq ($(SHARED_OFFICIAL),)
export SAGE_ROS_MIRROR ?= $(abspath $(SHARED_OFFICIAL))
endif
# The tests' small real data set (test/data_fetch.py) likewise, from the data sets' folder.
SHARED_DATASETS := $(wildcard ../shared/datasets)
ifneq ($(SHARED_DATASETS),)
export SAGE_ROS_DATA_MIRROR ?= $(abspath $(SHARED_DATASETS))
endif

.PHONY: demo demo-live test lint bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The demo builds the ONNX model from the checkpoint without PyTorch: a few hundred MB, not 5.9 GB.
$(VENV)/.demo-installed: $(BIN)/activate setup.py
	@echo ">>> installing the CPU runtime into $(VENV): numpy, OpenCV, ONNX Runtime, OpenVINO, onnx (no PyTorch)"
	$(BIN)/pip install --progress-bar on -e '.[openvino]'
	@echo ">>> runtime installed"
	touch $@

$(VENV)/.test-installed: $(BIN)/activate setup.py
	$(BIN)/pip install --quiet -e '.[all-cpu]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/sage-ros demo --out demo_out

demo-live: $(VENV)/.test-installed
	$(BIN)/sage-ros demo --out demo_out --live

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .

# The real upstream launch, launch_ros and message_filters (not on PyPI) when ../shared/ros_src is there,
# so that the launch file, a colcon build and the real synchroniser are tested (scripts/install_ros_src.sh).
ROS_SRC := $(wildcard ../shared/ros_src)
$(VENV)/.ros-src-installed: $(VENV)/.test-installed scripts/install_ros_src.sh
	bash scripts/install_ros_src.sh $(ROS_SRC) $(VENV)
	touch $@

test: $(VENV)/.test-installed $(if $(ROS_SRC),$(VENV)/.ros-src-installed)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest test -q -rs --durations=15

bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/backends.py

clean:
	rm -rf $(VENV) demo_out build *.egg-info
