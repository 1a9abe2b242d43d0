"""The admin API's JSON parser: the same strict JSON as the hot path's views."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from api.inputs import MalformedBody, strict_json


class StrictJSONParser(JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            return strict_json(stream.read())
        except MalformedBody:
            raise ParseError() from None
