"""Text normalization: written English -> words espeak reads the way a person would.

Order matters: abbreviations and symbols first, then money/times/percentages/ordinals/
years (which need their context), then any number left, then whitespace.
"""

from __future__ import annotations

import re
import unicodedata

from npc_voice.frontend import numbers as num

_QUOTES = str.maketrans({"‘": "'", "’": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "«": '"', "»": '"'})
_DASHES = re.compile(r"\s*[—–]\s*|\s+-{1,2}\s+")  # em/en dash or spaced hyphen: a clause pause
_ELLIPSIS = re.compile(r"\.{3,}|…")

# (pattern, replacement); patterns match whole words, case-sensitive where it matters.
_ABBREVIATIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"\bDr\.(?=\s+[A-Z])", "Doctor"),
        (r"\bDr\.", "Drive"),
        (r"\bSt\.(?=\s+[A-Z])", "Saint"),
        (r"\bSt\.", "Street"),
        (r"\bMrs\.", "Missus"),
        (r"\bMr\.", "Mister"),
        (r"\bMs\.", "Miz"),
        (r"\bCapt\.", "Captain"),
        (r"\bSgt\.", "Sergeant"),
        (r"\bLt\.", "Lieutenant"),
        (r"\bCol\.", "Colonel"),
        (r"\bGen\.", "General"),
        (r"\bProf\.", "Professor"),
        (r"\bMt\.", "Mount"),
        (r"\bJr\.", "Junior"),
        (r"\bSr\.", "Senior"),
        (r"\bNo\.(?=\s*\d)", "number"),
        (r"\bvs\.?(?=\s)", "versus"),
        (r"\betc\.(?=\s*$)", "et cetera."),
        (r"\betc\.", "et cetera"),
        (r"\be\.g\.(?=\s)", "for example,"),
        (r"\bi\.e\.(?=\s)", "that is,"),
        (r"\bapprox\.", "approximately"),
    )
)

_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
               "€": ("euro", "euros", "cent", "cents")}
_NUM = r"\d{1,3}(?:,\d{3})+|\d+"
_MONEY = re.compile(r"(-?)([$£€])\s?(" + _NUM + r")(?:\.(\d{1,2}))?(?:\s?(thousand|million|billion)\b)?")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})(?:\s?([AaPp])\.?\s?[Mm]\b\.?)?")
_HOUR_AMPM = re.compile(r"\b(\d{1,2})\s?([AaPp])\.?\s?[Mm](?:\.(?=\s*[a-z])|\b\.?)")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_PERCENT = re.compile(r"(-?(?:" + _NUM + r")(?:\.\d+)?)\s?%")
_YEAR_CONTEXT = re.compile(
    r"\b(in|since|by|from|until|till|year|circa|around|before|after|of|summer|winter|spring|autumn)\s+(1[1-9]\d\d|20\d\d)\b",
    re.IGNORECASE,
)
_YEAR_SUFFIX = re.compile(r"\b(\d{3,4})\s?(AD|BC|BCE|CE)\b")
_DECADE = re.compile(r"\b(1[1-9]|20)(\d)0s\b")
_NUMBER = re.compile(r"(?<![\w.])(-?)(" + _NUM + r")(\.\d+)?(?![\d])")
_SYMBOLS = {"&": " and ", "+": " plus ", "@": " at ", "%": " percent ", "°": " degrees ", "=": " equals "}
_HASH_NUMBER = re.compile(r"#\s?(\d)")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,?!;:…])")


def _money(m: re.Match[str]) -> str:
    neg, sym, whole, frac, scale = m.groups()
    one, many, sub_one, sub_many = _CURRENCIES[sym]
    amount = int(whole.replace(",", ""))
    if scale:  # "$1.5 million" -> "one point five million dollars"
        return f"{'minus ' if neg else ''}{num.number(whole + ('.' + frac if frac else ''))} {scale} {many}"
    words = f"{num.cardinal(amount)} {one if amount == 1 else many}"
    cents = int(frac.ljust(2, "0")) if frac else 0
    if cents and amount:
        words += f" and {num.cardinal(cents)} {sub_one if cents == 1 else sub_many}"
    elif cents:
        words = f"{num.cardinal(cents)} {sub_one if cents == 1 else sub_many}"
    return ("minus " if neg else "") + words


def _ampm(letter: str | None) -> str:
    return "" if not letter else (" ay em" if letter.lower() == "a" else " pee em")


def _time(m: re.Match[str]) -> str:
    hour, minute, ap = int(m.group(1)), int(m.group(2)), m.group(3)
    if hour > 24 or minute > 59:
        return m.group(0).replace(":", " ")  # not a time: "99:99" reads as two numbers
    if minute == 0:
        words = f"{num.cardinal(hour)} o'clock" if not ap else num.cardinal(hour)
    elif minute < 10:
        words = f"{num.cardinal(hour)} oh {num.cardinal(minute)}"
    else:
        words = f"{num.cardinal(hour)} {num.cardinal(minute)}"
    return words + _ampm(ap)


def _hour_ampm(m: re.Match[str]) -> str:
    return num.cardinal(int(m.group(1))) + _ampm(m.group(2))


def _decade(m: re.Match[str]) -> str:
    words = num.year(int(m.group(1) + m.group(2) + "0"))  # "nineteen ninety" -> "nineteen nineties"
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _number(m: re.Match[str]) -> str:
    neg, whole, frac = m.groups()
    return num.number(neg + whole + (frac or ""))


def _clean_chars(text: str) -> str:
    """Drop control/format characters and letters of scripts espeak's en-us voice cannot read."""
    out: list[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\t\n\r\f\v" or cat == "Zs":
            out.append(" ")
        elif cat[0] == "C":
            continue  # control, format (zero-width), private use, unassigned
        elif cat[0] == "L" and ord(ch) > 0x24F and "LATIN" not in unicodedata.name(ch, ""):
            out.append(" ")  # non-Latin script: espeak en-us would only say "Chinese letter"
        elif cat in ("So", "Sk", "Cs") and ch not in _SYMBOLS:
            out.append(" ")  # emoji and other pictographs
        else:
            out.append(ch)
    return "".join(out)


def normalize(text: str) -> str:
    """Written text -> speakable words (numbers, money, times, ordinals, years,
    percentages, abbreviations and symbols expanded), punctuation kept, whitespace
    collapsed, control characters removed."""
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    text = _clean_chars(text)
    text = _ELLIPSIS.sub("…", text)
    text = _DASHES.sub(", ", text)
    for pattern, repl in _ABBREVIATIONS:
        text = pattern.sub(repl, text)
    text = _MONEY.sub(_money, text)
    text = re.sub(r"\b(" + _NUM + r")\s?(gp|gc)\b", lambda m: m.group(1) + " gold", text)
    text = _TIME.sub(_time, text)
    text = _HOUR_AMPM.sub(_hour_ampm, text)
    text = _PERCENT.sub(lambda m: num.number(m.group(1)) + " percent", text)
    text = _ORDINAL.sub(lambda m: num.ordinal(int(m.group(1))), text)
    text = _YEAR_CONTEXT.sub(lambda m: f"{m.group(1)} {num.year(int(m.group(2)))}", text)
    text = _YEAR_SUFFIX.sub(lambda m: f"{num.year(int(m.group(1)))} {' '.join(m.group(2))}", text)
    text = _DECADE.sub(_decade, text)
    text = _HASH_NUMBER.sub(r"number \1", text)
    text = _NUMBER.sub(_number, text)
    text = re.sub(r"\d", lambda m: " " + num.digits(m.group(0)) + " ", text)  # digits left inside words
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    text = text.replace("#", " ")
    text = _SPACES.sub(" ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)
