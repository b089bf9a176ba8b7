#!/usr/bin/env bash
# Proof of the colcon route: build this package with `colcon build` (ament_cmake, CMakeLists.txt)
# in a scratch workspace against the venv's ROS 2 wheels, source the install space, and import
# easi3r_ros and easi3r_ros.msg from there.
#
# Environment: EASI3R_VENV (default <repo>/.venv, must be bootstrapped), EASI3R_COLCON_WS (workspace
# path; default a new temp dir, removed on success), EASI3R_JOBS.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${EASI3R_VENV:-$REPO/.venv}" && pwd)"
JOBS="${EASI3R_JOBS:-$(nproc 2>/dev/null || echo 2)}"
log() { printf '[colcon] %s\n' "$*"; }
die() { printf '[colcon] ERROR: %s\n' "$*" >&2; exit 1; }
[[ -x "$VENV/bin/colcon" ]] || die "$VENV/bin/colcon missing: run scripts/bootstrap.sh first"

WS="${EASI3R_COLCON_WS:-$(mktemp -d "${TMPDIR:-/tmp}/easi3r-colcon.XXXXXX")}"
mkdir -p "$WS/src/easi3r_ros"
# A copy of what the package build reads, not a symlink: the checkout may hold a venv and build
# trees that colcon would crawl.
for entry in package.xml CMakeLists.txt setup.py resource msg easi3r_ros launch config; do
    if [[ -e "$REPO/$entry" ]]; then cp -a "$REPO/$entry" "$WS/src/easi3r_ros/"; fi
done

# Only the venv's ROS: a sourced system ROS or an inherited wheel-bootstrap marker would mix in.
unset PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH _ROS_WHEELS_BOOTSTRAP_COMPLETE
export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"

log "colcon build in $WS"
cd "$WS"
if ! colcon --log-base "$WS/log" build --base-paths src --build-base build --install-base install \
        --parallel-workers 1 --event-handlers console_cohesion- summary+ \
        --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_FIND_VIRTUALENV=ONLY \
                     -DBUILD_TESTING=OFF -Wno-dev \
        > "$WS/build.log" 2>&1 < /dev/null; then
    tail -60 "$WS/build.log" >&2
    die "colcon build failed (workspace kept: $WS)"
fi
# What a ROS user does next: source the install space (colcon's setup scripts are not `set -u` clean).
set +u
# shellcheck disable=SC1091
source "$WS/install/setup.bash"
set -u
log "sourced install/setup.bash; checking imports from the install space"
(cd / && python - "$WS/install/easi3r_ros" <<'PY') || die "install-space check failed (workspace kept: $WS)"
import os, sys
prefix = os.path.realpath(sys.argv[1])
import easi3r_ros
import easi3r_ros.msg
from easi3r_ros.msg import FrameResult, WindowStats
from rclpy.serialization import deserialize_message, serialize_message
from ament_index_python.packages import get_package_prefix

def inside(path):
    return os.path.realpath(path).startswith(prefix + os.sep)

assert inside(easi3r_ros.__file__), f"easi3r_ros from {easi3r_ros.__file__}, not from {prefix}"
assert inside(easi3r_ros.msg.__file__), f"easi3r_ros.msg from {easi3r_ros.msg.__file__}"
assert os.path.realpath(get_package_prefix("easi3r_ros")) == prefix, get_package_prefix("easi3r_ros")
msg = WindowStats(window_id=3, n_frames=8, total_s=1.5)
assert deserialize_message(serialize_message(msg), WindowStats) == msg
for exe in ("easi3r_node", "easi3r"):
    path = os.path.join(prefix, "lib", "easi3r_ros", exe)
    assert os.access(path, os.X_OK), f"{path} missing or not executable"
print(f"[colcon] ok: easi3r_ros and easi3r_ros.msg import from {prefix}; lib/easi3r_ros/{{easi3r,easi3r_node}} installed")
PY
if [[ -z "${EASI3R_COLCON_WS:-}" ]]; then rm -rf "$WS"; fi
