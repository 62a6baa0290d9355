"""The version of the firmware in this tree (an over-the-air bundle carries its own)."""
VERSION = "dev"
