#!/usr/bin/env bash
# Turn a fresh Debian/Ubuntu machine into a working virtual environment for easi3r_ros:
# core Python deps, ROS 2 Kilted from PyPI wheels, this package's msg/ interfaces (and
# tf2_msgs where missing) built into the venv, and the package installed in editable mode, laid out as
# colcon lays out a ROS 2 package (lib/easi3r_ros/<executables>, share/easi3r_ros/{launch,config}) so that
# `ros2 run` / `ros2 launch` find it, with AMENT_PREFIX_PATH defaulting to the venv (no sourcing).
#
# Idempotent: every step is keyed on a hash of its inputs (stamps in $VENV/.easi3r/), so a
# second run only checks and exits.
#
# Environment:
#   EASI3R_VENV      venv path (default: <repo>/.venv)
#   PYTHON           interpreter that creates the venv (default: python3; 3.11 or 3.12)
#   TORCH_INDEX_URL  pip index for torch (default: the CPU-only PyTorch index). For CUDA use e.g.
#                    https://download.pytorch.org/whl/cu128; set it empty to take torch from
#                    pip's normal index. An existing torch of the pinned version is kept.
#   EASI3R_JOBS      parallel compile jobs (default: number of cores)
#   EASI3R_NO_APT=1  never call apt-get; only report missing system packages
#   EASI3R_FORCE=1   redo every step regardless of stamps
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EASI3R_VENV:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_INDEX_URL="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
JOBS="${EASI3R_JOBS:-$(nproc 2>/dev/null || echo 2)}"
STAMPS="$VENV/.easi3r"
T0=$SECONDS

log()  { printf '[bootstrap %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
warn() { printf '[bootstrap] WARNING: %s\n' "$*" >&2; }
die()  { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; printf "[bootstrap] ERROR: command failed (exit %s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2' ERR

hash_of() {  # hash_of <text> <file>...: sha256 over the text and the files' names and contents
    local text="$1"; shift
    { printf '%s\n' "$text"; for f in "$@"; do printf '%s\n' "${f#"$REPO"/}"; cat "$f"; done; } \
        | sha256sum | cut -d' ' -f1
}
stamp_ok()  { [[ -z "${EASI3R_FORCE:-}" && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s\n' "$2" > "$STAMPS/$1"; }

# --- 0. a clean environment ------------------------------------------------------------------
# A sourced ROS 2 install (PYTHONPATH, AMENT_PREFIX_PATH, ...) would shadow the venv's wheels,
# and an inherited bootstrap marker with another LD_LIBRARY_PATH breaks rclpy in child processes.
if [[ -n "${ROS_DISTRO:-}" || -n "${AMENT_PREFIX_PATH:-}" ]]; then
    warn "a ROS 2 environment is sourced (ROS_DISTRO=${ROS_DISTRO:-}); ignoring it for the venv route"
    unset LD_LIBRARY_PATH   # its /opt/ros/*/lib would compete with the wheels' libraries
fi
unset PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH PYTHONHOME \
      _ROS_WHEELS_BOOTSTRAP_COMPLETE VIRTUAL_ENV

# --- 1. system prerequisites -----------------------------------------------------------------
# An existing venv keeps its interpreter; otherwise $PYTHON creates it.
if [[ -x "$VENV/bin/python" ]]; then
    base_py="$VENV/bin/python"
else
    command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH; install Python 3.11 or 3.12 (or set PYTHON=...)"
    base_py="$PYTHON"
fi
PYVER="$("$base_py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
    || die "$base_py does not run (a broken venv? remove $VENV and re-run)"
case "$PYVER" in
    3.11|3.12) ;;
    3.1[3-9]) warn "Python $PYVER is untested (the pinned stack is validated on 3.11/3.12)" ;;
    *) die "Python $PYVER found; 3.11 or 3.12 is required (setup.py). Set PYTHON=python3.11 or similar." ;;
esac

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null && command -v c++ >/dev/null || missing+=(g++)
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=("python$PYVER-venv")
fi
# The generated interfaces compile C extensions against Python.h.
"$base_py" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || missing+=("python$PYVER-dev")
if ((${#missing[@]})); then
    if [[ -z "${EASI3R_NO_APT:-}" ]] && command -v apt-get >/dev/null && { [[ $EUID -eq 0 ]] || sudo -n true 2>/dev/null; }; then
        sudo_cmd=(); [[ $EUID -eq 0 ]] || sudo_cmd=(sudo -n)
        log "installing missing system packages: ${missing[*]}"
        "${sudo_cmd[@]}" apt-get update -qq
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        die "missing system packages: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]})"
    fi
fi
cmake_ver="$(cmake --version | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)"
[[ "$(printf '%s\n' 3.16 "$cmake_ver" | sort -V | head -1)" == 3.16 ]] || die "CMake >= 3.16 needed, found $cmake_ver"

# --- 2. the venv -----------------------------------------------------------------------------
if [[ -x "$VENV/bin/python" ]]; then
    log "venv $VENV (Python $PYVER)"
else
    [[ -e "$VENV" ]] && die "$VENV exists but is not a venv; move it away or set EASI3R_VENV"
    log "creating venv $VENV with $("$PYTHON" -c 'import sys; print(sys.executable)') ($PYVER)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
export AMENT_PREFIX_PATH="$VENV"

# --- 3. Python packages: core pins + ROS 2 Kilted wheels -------------------------------------
TORCH_PIN="$(grep -E '^torch==' "$REPO/requirements.txt" | head -1 | cut -d= -f3 | tr -d ' ')"
key="$(hash_of "py=$PYVER torch_index=$TORCH_INDEX_URL" "$REPO/requirements.txt" "$REPO/requirements-ros.txt")"
if stamp_ok pip "$key"; then
    log "python packages up to date"
else
    # torch first and alone, from the chosen index: otherwise pip's normal index would pull the
    # multi-GB CUDA build on Linux. A torch of the pinned version (CPU or CUDA) is left as it is.
    have_torch="$("$PY" -c 'from importlib.metadata import version
try: print(version("torch").split("+")[0])
except Exception: print("")' 2>/dev/null || true)"
    if [[ -n "$TORCH_PIN" && "$have_torch" != "$TORCH_PIN" && -n "$TORCH_INDEX_URL" ]]; then
        if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10)' \
                "$TORCH_INDEX_URL" 2>/dev/null; then
            log "installing torch==$TORCH_PIN from $TORCH_INDEX_URL"
            "${PIP[@]}" install --progress-bar off "torch==$TORCH_PIN" --index-url "$TORCH_INDEX_URL"
        else
            warn "cannot reach $TORCH_INDEX_URL; torch comes from pip's configured index instead"
        fi
    fi
    log "installing requirements.txt + requirements-ros.txt"
    "${PIP[@]}" install --progress-bar off -r "$REPO/requirements.txt" -r "$REPO/requirements-ros.txt"
    # ros-<distro>-* meta-wheels pin the same unprefixed ros-* names: a second distro corrupts it.
    others="$("$PY" -c 'import importlib.metadata as m, re
names = {re.sub(r"[-_.]+", "-", d.metadata["Name"].lower()) for d in m.distributions()}
print(" ".join(sorted(n for n in names if re.match(r"ros-(jazzy|humble|iron|rolling|lyrical)-", n))))')"
    [[ -z "$others" ]] || die "non-Kilted ROS wheels in $VENV: $others (remove the venv and re-run)"
    stamp_set pip "$key"
fi

# --- 4. fix the wheels' exported include paths ------------------------------------------------
# The wheels' CMake exports name the build machine's Python/numpy include dirs
# (/opt/python/cpXY-cpXY/...); generated interfaces would not compile against them here.
py_inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_inc="$("$PY" -c 'import numpy; print(numpy.get_include())')"
mapfile -t stale < <(grep -l -E '/opt/python/cp3[0-9]+-cp3[0-9]+t?/' "$VENV"/share/*/cmake/*Export.cmake 2>/dev/null || true)
if ((${#stale[@]})); then
    log "rewriting stale include paths in ${#stale[@]} CMake export files"
    sed -i -E \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+t?/lib/python3\.[0-9]+t?/site-packages/numpy/_?core/include#${np_inc}#g" \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+t?/include/python3\.[0-9]+t?#${py_inc}#g" \
        "${stale[@]}"
    ! grep -q -E '/opt/python/cp3' "${stale[@]}" || die "unrewritten /opt/python paths remain in $VENV/share/*/cmake"
fi

# build_msgs <name> <source dir> <build dir> [cmake args...]: plain CMake build into the venv.
build_msgs() {
    local name="$1" src="$2" build="$3"; shift 3
    log "building $name interfaces (cmake, $JOBS jobs)"
    # A build tree configured from another checkout cannot be reused.
    if [[ -f "$build/CMakeCache.txt" ]] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$src" "$build/CMakeCache.txt"; then
        rm -rf "$build"
    fi
    cmake -S "$src" -B "$build" -Wno-dev --log-level=WARNING \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DPython3_EXECUTABLE="$PY" -DPython3_FIND_VIRTUALENV=ONLY \
        -DBUILD_TESTING=OFF "$@" >"$build.log" 2>&1 \
        || { tail -40 "$build.log" >&2; die "cmake configure of $name failed (log: $build.log)"; }
    cmake --build "$build" -j "$JOBS" >>"$build.log" 2>&1 \
        || { tail -40 "$build.log" >&2; die "build of $name failed (log: $build.log)"; }
    cmake --install "$build" >>"$build.log" 2>&1 \
        || { tail -40 "$build.log" >&2; die "install of $name failed (log: $build.log)"; }
}

# --- 5. tf2_msgs, only where no registry provided it -----------------------------------------
if "$PY" -c 'import tf2_msgs.msg' 2>/dev/null; then
    log "tf2_msgs importable"
else
    # TFMessage is all the node publishes (/tf, /tf_static); its definition matches the
    # upstream one, so the type hash matches a real ROS 2 graph.
    tmp="$(mktemp -d)"
    mkdir -p "$tmp/tf2_msgs/msg" "$STAMPS"
    echo 'geometry_msgs/TransformStamped[] transforms' > "$tmp/tf2_msgs/msg/TFMessage.msg"
    cat > "$tmp/tf2_msgs/package.xml" <<'XML'
<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.0.0</version>
  <description>Local build of tf2_msgs/TFMessage only (no registry ships tf2_msgs wheels).</description>
  <maintainer email="maintainer@example.com">easi3r_ros maintainers</maintainer>
  <license>BSD-3-Clause</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
XML
    cat > "$tmp/tf2_msgs/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(tf2_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
CMAKE
    build_msgs tf2_msgs "$tmp/tf2_msgs" "$tmp/build"
    cp "$tmp/build.log" "$STAMPS/tf2_msgs-build.log"
    rm -rf "$tmp"
    "$PY" -c 'import tf2_msgs.msg' || die "tf2_msgs built but does not import"
fi

# --- 6. this package's msg/ interfaces, lib/easi3r_ros and share/easi3r_ros ------------------
mapfile -t msg_files < <(find "$REPO/msg" -maxdepth 1 -name '*.msg' | sort)
((${#msg_files[@]})) || die "no msg/*.msg in $REPO"
# launch/ and config/ are installed to share/easi3r_ros, and the executables `ros2 run` and launch_ros
# look for to lib/easi3r_ros (as colcon does), by the same CMake run.
mapfile -t share_files < <(find "$REPO/launch" "$REPO/config" -type f -not -name '*.pyc' 2>/dev/null | sort)
key="$(hash_of "py=$PYVER venv=$VENV" "${msg_files[@]}" "${share_files[@]}" "$REPO/CMakeLists.txt" "$REPO/package.xml")"
if stamp_ok msgs "$key" && [[ -f "$SITE/easi3r_ros/msg/__init__.py" && -x "$VENV/lib/easi3r_ros/easi3r_node" ]]; then
    log "easi3r_ros interfaces up to date"
else
    mkdir -p "$STAMPS"
    build_msgs easi3r_ros "$REPO" "$STAMPS/build-easi3r_ros" -DEASI3R_INTERFACES_ONLY=ON
    [[ -f "$SITE/easi3r_ros/msg/__init__.py" ]] || die "generated module not found at $SITE/easi3r_ros/msg"
    # The generated top-level __init__.py is empty and would make site-packages/easi3r_ros a
    # regular package that hides the source tree. Without it, that folder is only a namespace
    # portion: the source package wins, and its pkgutil.extend_path adds msg/ from here.
    rm -f "$SITE/easi3r_ros/__init__.py" "$SITE"/easi3r_ros/__pycache__/__init__.*
    rm -rf "$SITE"/easi3r_ros-*.egg-info   # the pip-installed dist-info is the one distribution
    stamp_set msgs "$key"
fi

# --- 7. the Python package (editable) --------------------------------------------------------
key="$(hash_of "py=$PYVER repo=$REPO" "$REPO/setup.py" "$REPO/package.xml" "$REPO/requirements.txt")"
if stamp_ok pkg "$key" && [[ -x "$VENV/bin/easi3r" && -x "$VENV/bin/easi3r_node" ]]; then
    log "easi3r_ros package up to date"
else
    # setup.py's package_dir makes this a plain .pth entry for the checkout; step 8 checks that
    # the checkout, not the namespace portion left in site-packages by step 6, is what imports.
    log "installing easi3r_ros (editable) from $REPO"
    "${PIP[@]}" install --progress-bar off --no-deps --no-build-isolation -e "$REPO"
    stamp_set pkg "$key"
fi

# --- 7b. ament look-ups without sourcing anything ---------------------------------------------
# ament_index (ros2 run / launch, FindPackageShare) needs AMENT_PREFIX_PATH. This .pth line runs at every
# start of the venv's interpreter and sets it to the venv when it is unset or empty (an explicit value is
# kept). It sorts before ros_wheels_bootstrapper.pth, whose re-exec passes the variable on; child
# processes (the nodes ros2 launch starts) inherit it.
pth="$SITE/easi3r_ros_ament_prefix.pth"
pth_line='import os, sys; os.environ.get("AMENT_PREFIX_PATH") or os.environ.__setitem__("AMENT_PREFIX_PATH", sys.prefix)'
if [[ ! -f "$pth" || "$(cat "$pth")" != "$pth_line" ]]; then
    log "AMENT_PREFIX_PATH defaults to the venv ($pth)"
    printf '%s\n' "$pth_line" > "$pth"
fi

# --- 8. check from outside the checkout ------------------------------------------------------
(cd / && "$PY" - "$REPO" <<'PY') || die "environment check failed"
import os, sys
repo = sys.argv[1]
import rclpy, tf2_msgs.msg, easi3r_ros, easi3r_ros.msg  # noqa: E401,F401
from easi3r_ros.msg import FrameResult, WindowStats  # noqa: F401
src = os.path.dirname(os.path.realpath(easi3r_ros.__file__))
if src != os.path.realpath(os.path.join(repo, "easi3r_ros")):
    sys.exit(f"easi3r_ros imports from {src}, not from the checkout {repo}")
PY
for exe in easi3r easi3r_node; do
    [[ -x "$VENV/bin/$exe" ]] || die "console script $VENV/bin/$exe missing"
    [[ -x "$VENV/lib/easi3r_ros/$exe" ]] || die "$VENV/lib/easi3r_ros/$exe missing (ros2 run / launch need it)"
done
# As a user's shell would start it: nothing exported.
(cd / && env -u AMENT_PREFIX_PATH "$PY" -c 'import os, sys
from ament_index_python.packages import get_package_prefix, get_package_share_directory
assert os.path.realpath(get_package_prefix("easi3r_ros")) == os.path.realpath(sys.prefix), get_package_prefix("easi3r_ros")
assert os.path.isfile(os.path.join(get_package_share_directory("easi3r_ros"), "launch", "easi3r.launch.py"))') \
    || die "ament_index does not find easi3r_ros in $VENV without AMENT_PREFIX_PATH"
log "ready: $VENV (rclpy, tf2_msgs, easi3r_ros.msg, console scripts easi3r / easi3r_node, lib/ and share/easi3r_ros)"
