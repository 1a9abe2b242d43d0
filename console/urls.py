from console.views import audit, dashboard, keys, principals, signin, sso, tenants

app_name = "console"

# Each area's module lists its own pages.
urlpatterns = [
    *audit.urlpatterns,
    *dashboard.urlpatterns,
    *keys.urlpatterns,
    *principals.urlpatterns,
    *signin.urlpatterns,
    *sso.urlpatterns,
    *tenants.urlpatterns,
]
