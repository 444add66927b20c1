"""What the simulated characters say: short barks and multi-sentence conversation turns."""

from __future__ import annotations

BARKS: tuple[str, ...] = (
    "Halt! Who goes there?",
    "Move along, citizen.",
    "Fresh bread, still warm!",
    "Watch your step, stranger.",
    "Fine wares at fair prices!",
    "The gates close at sundown.",
    "Have you seen my cat?",
    "Stay out of trouble.",
    "Another day, another coin.",
    "Keep your hands where I can see them.",
    "Fish! Fresh fish!",
    "Mind the cart!",
    "I used to be an adventurer like you.",
    "Nice weather for it.",
    "Back so soon?",
    "Get out of my shop!",
)

CONVERSATIONS: tuple[str, ...] = (
    "Welcome, traveller. The road from the north has been dangerous lately. "
    "Bandits took two wagons last week, and the guard does nothing.",
    "You want the old mine? Follow the river east until the stone bridge. "
    "Then climb the hill, and mind the wolves after dark.",
    "I can sell you a sword, but not that one. That blade belonged to my father, "
    "and it stays on the wall. Look at these instead.",
    "The king is sick, they say. Nobody has seen him in a month. If you ask me, his advisor is behind it.",
    "Three silver for the room, one more for a hot meal. The stable is out back, and the horses are fed at dawn.",
    "Listen carefully, because I will only say this once. "
    "The key is under the third stone, left of the well. Tell no one.",
)


def llm_pieces(text: str, words_per_piece: int = 2) -> list[str]:
    """Split text into small pieces the way an LLM streams tokens (keeps the spaces)."""
    words = text.split(" ")
    pieces = []
    for i in range(0, len(words), words_per_piece):
        chunk = " ".join(words[i : i + words_per_piece])
        pieces.append(chunk if i + words_per_piece >= len(words) else chunk + " ")
    return pieces
