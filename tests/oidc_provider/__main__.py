"""python -m tests.oidc_provider CLIENT_ID CLIENT_SECRET REDIRECT_URI: migrate, register the
client, serve on a free loopback port and print that port on one line."""

from __future__ import annotations

import os
import sys


def main() -> None:
    # Django and the provider's models are imported only once the settings module (and,
    # below, the issuer that carries the bound port) are in the environment.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oidc_provider.settings")
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    # Bound before the settings are read: the issuer they name carries the port.
    server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    port = server.server_address[1]
    os.environ["OIDC_PROVIDER_ISSUER"] = f"http://127.0.0.1:{port}/o"
    import django

    django.setup()
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import Application

    client_id, client_secret, redirect_uri = sys.argv[1:4]
    call_command("migrate", verbosity=0)
    Application.objects.create(
        name="keyward",
        client_id=client_id,
        client_secret=client_secret,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=redirect_uri,
        skip_authorization=True,
        algorithm=Application.RS256_ALGORITHM,
    )
    server.set_app(get_wsgi_application())
    print(port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
