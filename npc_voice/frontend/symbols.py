"""The phoneme symbol inventory's ids and classes, and the IPA -> viseme table.

``PHONEME_SYMBOLS`` (with Piper's pad ``_``, begin ``^`` and end ``$`` markers) lives in
npc_voice.contracts: the model's symbol ids index it too, and the model never imports the
frontend. It is re-exported here.
"""

from __future__ import annotations

from npc_voice.contracts import BOS, EOS, PAD, PHONEME_SYMBOLS

__all__ = ["BOS", "EOS", "IPA_VISEME", "MODIFIERS", "PAD", "PHONEME_SYMBOLS", "PUNCTUATION", "SYMBOL_ID",
           "VISEMES", "viseme_sequence"]

SYMBOL_ID: dict[str, int] = {s: i for i, s in enumerate(PHONEME_SYMBOLS)}

PUNCTUATION = frozenset("!'(),-.:;?\"")  # pauses/intonation; no word, viseme "sil"
MODIFIERS = frozenset("ˈˌːˑ˞ʲʰˤ\u0327\u0303\u032a\u032f\u0329")  # belong to the phoneme before (or after, stress)

# The Oculus/OpenXR 15-viseme set, in its usual order.
VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")

_VISEME_GROUPS: dict[str, str] = {
    "PP": "pbmɓʙɱ",
    "FF": "fvɸβʋⱱ",
    "TH": "θð",
    "DD": "tdɖɗʈɾɺɽʔʡ",
    "kk": "kgɡɠɢqxɣχħʕʁʀʜʢhɦɧçcɟʄ",
    "CH": "ʃʒɕʑʂʐ",
    "SS": "sz",
    "nn": "nlɫɬɮɭɲɳɴŋʎʟɰ",
    "RR": "rɹɻɚ",
    "aa": "aɐɑɒæʌɶ",
    "E": "eɛɜɞəɘεœø",
    "ih": "iɪɨᵻjyʏ",
    "oh": "oɔɵ",
    "ou": "uʊʉɯɤwʍɥ",
}
IPA_VISEME: dict[str, str] = {ch: vis for vis, chars in _VISEME_GROUPS.items() for ch in chars}


def viseme_sequence(symbols: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Per-symbol visemes: phonemes from the table; stress/length marks take the
    phoneme's viseme (stress the following phoneme's, the rest the previous one's);
    spaces and punctuation are "sil"."""
    out: list[str] = []
    for i, sym in enumerate(symbols):
        if sym in IPA_VISEME:
            out.append(IPA_VISEME[sym])
        elif sym in ("ˈ", "ˌ"):
            nxt = next((s for s in symbols[i + 1 :] if s not in MODIFIERS), " ")
            out.append(IPA_VISEME.get(nxt, "sil"))
        elif sym in MODIFIERS:
            out.append(out[-1] if out else "sil")
        else:
            out.append("sil")  # space, punctuation, digits, markers
    return tuple(out)
