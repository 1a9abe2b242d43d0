"""A small OpenID provider (django-oauth-toolkit) for the console's single sign-on tests,
run in a process of its own by `tests.console.oidc.oidc_provider`."""
