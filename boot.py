"""Runs first at power-up on the board: make lib/ (micropython-lib installed by mip) importable."""
import sys

if "/lib" not in sys.path:
    sys.path.append("/lib")
