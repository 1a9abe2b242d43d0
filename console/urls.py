from console.views import audit, dashboard, keys, principals, rotations, signin, sso, tenants

app_name = "console"

# Each area's module lists its own pages.
urlpatterns = [
    *audit.urlpatterns,
    *dashboard.urlpatterns,
    *keys.urlpatterns,
    *principals.urlpatterns,
    *rotations.urlpatterns,
    *signin.urlpatterns,
    *sso.urlpatterns,
    *tenants.urlpatterns,
]
