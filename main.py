"""Charger firmware entry point: runs on the board at boot, and as `micropython main.py ...` on a PC."""
from firmware import app

app.run()
