"""The message catalogue: portal/locales/<lang>.json, one key per text, bokmål and English.

Templates call `t("key", name=value)`; a missing key shows the key itself (and a unit test
checks both catalogues have the same keys).
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

LOCALES = Path(__file__).resolve().parent / "locales"
LANGUAGES = ("nb", "en")
DEFAULT = "nb"
ZONE = ZoneInfo("Europe/Oslo")


@cache
def catalogue(lang: str) -> dict[str, str]:
    return dict(json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8")))


def pick(lang: str | None) -> str:
    return lang if lang in LANGUAGES else DEFAULT


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = pick(lang)
        self.texts = catalogue(self.lang)

    def __call__(self, key: str, **values: Any) -> str:
        text = self.texts.get(key, key)
        return text.format(**values) if values else text

    def opt(self, key: str, fallback: str) -> str:
        """The text for `key`, or `fallback` (a value from the API we have no text for)."""
        return self.texts.get(key, fallback)

    def until(self, value: dt.datetime | str | None) -> str:
        """The last day of a period that ends (exclusively) at `value`: an end at midnight
        is shown as the day before, the way people write "to and including"."""
        if not value:
            return ""
        return self.when(_minus_a_moment(value), with_time=False)

    def when(self, value: dt.datetime | str | None, with_time: bool = True) -> str:
        """A time in Norway's zone, written the language's way."""
        if not value:  # None, "", or a field the API left out
            return ""
        if isinstance(value, str):
            try:
                moment = parse_time(value)
            except ValueError:
                return value
        elif isinstance(value, dt.datetime):
            moment = value
        else:
            return ""
        local = moment.astimezone(ZONE)
        if self.lang == "nb":
            return local.strftime("%d.%m.%Y kl. %H:%M" if with_time else "%d.%m.%Y")
        return local.strftime("%d %b %Y, %H:%M" if with_time else "%d %b %Y")


def _minus_a_moment(value: dt.datetime | str) -> dt.datetime | str:
    if isinstance(value, str):
        try:
            value = parse_time(value)
        except ValueError:
            return value
    return value - dt.timedelta(seconds=1)


def parse_time(value: str) -> dt.datetime:
    """An RFC 3339 time as the REST edge writes it (Z, up to nanoseconds)."""
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
