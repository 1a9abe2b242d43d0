import os

from django.core.wsgi import get_wsgi_application

from ops import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")
tracing.setup()  # before the handler loads the middleware, which tracing adds to
application = get_wsgi_application()
