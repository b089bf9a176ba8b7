"""Python packaging for pip installs (venv route). A colcon build uses CMakeLists.txt instead."""
import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "easi3r_ros"
HERE = Path(__file__).resolve().parent
# package.xml is the single source of the version (ROS tooling reads it from there).
VERSION = re.search(r"<version>([^<]+)</version>", (HERE / "package.xml").read_text()).group(1)


def _requirements():
    # Unpinned names only: requirements.txt keeps the exact pins for the reproducible venv, while
    # an install into an existing ROS 2 / CUDA environment should not be forced to replace them.
    names = []
    for line in (HERE / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-") and not line.startswith("pytest"):
            names.append(line.split("==")[0].split(">=")[0].strip())
    return names


def _data_files():
    # Same share/ layout as the CMake install, so ament_index finds the package in the venv prefix.
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    for folder in ("launch", "config"):
        found = sorted(p for p in glob(f"{folder}/**/*", recursive=True) if Path(p).is_file())
        for sub in sorted({str(Path(p).parent) for p in found}):
            files.append((f"share/{PACKAGE}/{sub}", [p for p in found if str(Path(p).parent) == sub]))
    return files


setup(
    name=PACKAGE,
    version=VERSION,
    description="Easi3R dynamic-object masks and camera poses for ROS 2",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # An explicit root makes setuptools' editable install a plain .pth entry for the checkout
    # (instead of an import hook that runs after the normal path search; see bootstrap.sh).
    package_dir={"": "."},
    # the shipped easi3r-tiny weights, model card and calibration (easi3r_ros.model.default)
    package_data={PACKAGE: ["weights/*/*"]},
    python_requires=">=3.11",
    install_requires=_requirements(),
    data_files=_data_files(),
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "easi3r = easi3r_ros.cli:main",
            "easi3r_node = easi3r_ros.ros.node:main",
        ],
    },
)
