# Entry points. Every target bootstraps the venv first (a fast no-op once it is up to date).
#   make demo    the main job: the sample clip through the ROS 2 node (random weights unless DEMO_ARGS has --checkpoint)
#   make test    the test suite
#   make colcon  proof that the package builds with colcon as in a ROS 2 workspace
#   make bench   benchmarks
#   make bench-quality  the ground-truth quality benchmark (easi3r eval bench; BENCH_QUALITY_ARGS, e.g. --quick)
#   make bench-geometry known intrinsics and metric scale from odometry (BENCH_GEOMETRY_ARGS, e.g. --quick)
#   make soak    30 minutes of a looping bag with parameter storms and checkpoint swaps, then SIGINT (SOAK_ARGS)
# Variables: VENV (or EASI3R_VENV), TORCH_INDEX_URL (see scripts/bootstrap.sh), PYTEST_ARGS.

VENV ?= $(or $(EASI3R_VENV),.venv)
export EASI3R_VENV := $(abspath $(VENV))
# Tests use real DDS: keep discovery on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
# Inherited from a parent venv python, this marker would stop the venv's own ROS library set-up.
unexport _ROS_WHEELS_BOOTSTRAP_COMPLETE
# A sourced system ROS 2 would mix its Python modules and libraries into the venv's.
ifdef ROS_DISTRO
$(warning ROS_DISTRO=$(ROS_DISTRO) is sourced: ignoring its environment for the venv targets)
unexport PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH LD_LIBRARY_PATH
endif

PY := $(EASI3R_VENV)/bin/python

.PHONY: venv test demo colcon bench bench-quality bench-geometry soak

venv:
	bash scripts/bootstrap.sh

test: venv
	$(PY) -m pytest test -q $(PYTEST_ARGS)

demo: venv
	$(EASI3R_VENV)/bin/easi3r demo $(DEMO_ARGS)

colcon: venv
	bash scripts/colcon_check.sh

bench: venv
	@test -f benchmarks/run.py || { echo "benchmarks/run.py does not exist yet" >&2; exit 2; }
	$(PY) benchmarks/run.py $(BENCH_ARGS)

bench-quality: venv
	$(EASI3R_VENV)/bin/easi3r eval bench $(BENCH_QUALITY_ARGS)

bench-geometry: venv
	$(PY) benchmarks/planner_geometry.py $(BENCH_GEOMETRY_ARGS)

soak: venv
	$(PY) benchmarks/soak.py $(SOAK_ARGS)
