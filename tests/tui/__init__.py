"""Tests of the terminal UI: flows driven with Textual's pilot, and snapshots."""
