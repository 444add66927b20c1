"""npc-voice audio."""
