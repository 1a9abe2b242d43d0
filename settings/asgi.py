"""The ASGI entry point: the proxy (`/api/v1/proxy/...`) as a native async application,
everything else through Django's ASGI handler. Production serves the request/response API
with WSGI (settings.wsgi) and routes /api/v1/proxy/ to this application."""

import os
from typing import Any

from django.core.asgi import get_asgi_application

from ops import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")
tracing.setup()  # before the handler loads the middleware, which tracing adds to
django_application = get_asgi_application()

from api.proxy import PREFIX  # noqa: E402 - after Django is set up
from api.proxy import application as proxy_application  # noqa: E402

proxy = tracing.traced_asgi(proxy_application)


async def application(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan" or (
        scope["type"] == "http" and str(scope.get("path", "")).startswith(PREFIX)
    ):
        await proxy(scope, receive, send)
    else:
        await django_application(scope, receive, send)
