"""npc-voice: real-time streaming voices for game characters."""

__version__ = "0.1.0"
