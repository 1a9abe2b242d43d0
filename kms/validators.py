"""The shapes of a provider key's fields, checked the same way by the API's serializers
and the console's forms."""

from __future__ import annotations

import re

from django.core.validators import RegexValidator

LABEL = RegexValidator(
    re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ._:/-]{0,98}[A-Za-z0-9])?\Z", re.ASCII),
    "Use 1-100 ASCII letters, digits, spaces and . _ : / -, "
    "starting and ending with a letter or digit.",
    "invalid_label",
)

BASE_URL_PATTERN = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]+(?:/[!\"$->@-~]*)?\Z", re.ASCII)
BASE_URL_MESSAGE = (
    "The base_url must be an http(s) URL with a host, and no credentials, query or fragment."
)
# A plain field check; whether the egress policy allows the address is decided when the
# URL is used (kms.egress).
BASE_URL = RegexValidator(BASE_URL_PATTERN, BASE_URL_MESSAGE, "forbidden_base_url")

ROTATION_PERIOD_DAYS = (1, 3650)

# An admin credential's settings: ids, names and URLs, named in lower case.
SETTING_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z", re.ASCII)
SETTING_VALUE_PATTERN = re.compile(r"^[ -~]{1,500}\Z", re.ASCII)
SETTING_VALUE = RegexValidator(
    SETTING_VALUE_PATTERN, "Use 1-500 printable ASCII characters.", "invalid_setting"
)
