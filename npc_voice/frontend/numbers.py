"""Numbers to English words: cardinals, ordinals, decimals, years, digit strings."""

from __future__ import annotations

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
_MAX_CARDINAL = 10**15  # beyond this, numbers are read digit by digit


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def cardinal(n: int) -> str:
    """123 -> "one hundred twenty three"; -4 -> "minus four"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n >= _MAX_CARDINAL:
        return digits(str(n))
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            words += _below_thousand(n // value) + [name]
            n %= value
    if n or not words:
        words += _below_thousand(n)
    return " ".join(words)


def ordinal(n: int) -> str:
    """22 -> "twenty second"."""
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def digits(s: str) -> str:
    """"007" -> "zero zero seven" (non-digits are skipped)."""
    return " ".join(_ONES[int(c)] for c in s if c.isdigit())


def decimal(int_part: str, frac_part: str) -> str:
    """("3", "14") -> "three point one four"."""
    whole = cardinal(int(int_part)) if int_part else "zero"
    return f"{whole} point {digits(frac_part)}" if frac_part else whole


def year(n: int) -> str:
    """1999 -> "nineteen ninety nine"; 2005 -> "two thousand five"; 1900 -> "nineteen hundred"."""
    if n < 1000 or n >= 10000 or 2000 <= n < 2010:
        return cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{cardinal(hi)} hundred"
    if lo < 10:
        return f"{cardinal(hi)} oh {cardinal(lo)}"
    return f"{cardinal(hi)} {cardinal(lo)}"


def number(text: str) -> str:
    """A plain number as written ("1,000", "3.5", "007", "-2") to words."""
    neg = text.startswith("-")
    body = text.lstrip("-").replace(",", "")
    if "." in body:
        int_part, frac_part = body.split(".", 1)
        words = decimal(int_part, frac_part)
    elif len(body) > 1 and body.startswith("0"):
        words = digits(body)
    elif len(body) > 15:
        words = digits(body)
    else:
        words = cardinal(int(body))
    return ("minus " + words) if neg else words
