"""npc-voice server."""
