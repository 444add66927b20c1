"""npc-voice loadtest."""
