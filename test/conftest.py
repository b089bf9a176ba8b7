import sys
from pathlib import Path

# Tests import the package from this checkout (and fixtures helpers from this folder).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
