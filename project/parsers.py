"""The API's JSON parser: DRF's, with a limit on nesting.

Its own module because DRF reads DEFAULT_PARSER_CLASSES when rest_framework.views is imported:
the parser must not import that module itself.
"""

import codecs
import re
from itertools import accumulate

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.settings import api_settings
from rest_framework.utils import json

# A JSON string literal (the unrolled form, which the regex engine runs fastest).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _bracket_depth(text: str) -> int:
    # bytes.translate deletes at memory speed; UTF-8 never reuses these four bytes elsewhere.
    brackets = text.encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether `text` nests arrays and objects deeper than `limit`, found without recursing
    (exact for valid JSON; for anything else the parser's own error decides)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    # Counting brackets inside strings too can only overstate the depth: exact when it passes.
    if _bracket_depth(text) <= limit:
        return False
    return _bracket_depth(_JSON_STRING.sub("", text)) > limit


class DepthLimitedJSONParser(JSONParser):
    """DRF's JSONParser with a nesting limit (API_MAX_JSON_DEPTH).

    Python's json module recurses once per level, so a body of 100,000 `[` raises RecursionError
    (a 500) instead of a ValueError; anything nested deeper than the limit is a 400 before the
    parser sees it. Every API body nests a few levels; the limit only refuses abuse.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})  # text codecs only, as DRF's parser
        try:
            text = codecs.getreader(encoding)(stream).read()
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}")
        limit = settings.API_MAX_JSON_DEPTH
        if json_depth_exceeds(text, limit):
            raise ParseError(f"JSON parse error - nested deeper than {limit} levels.")
        try:
            parse_constant = json.strict_constant if api_settings.STRICT_JSON else None
            return json.loads(text, parse_constant=parse_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}")
