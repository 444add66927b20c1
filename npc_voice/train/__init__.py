"""npc-voice train."""
