import sys
from pathlib import Path

# tests import their helpers (helpers.py, golden/) as top-level modules
sys.path.insert(0, str(Path(__file__).parent))
