"""npc-voice engine."""
