"""npc-voice frontend."""
