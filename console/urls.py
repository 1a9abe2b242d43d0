from console.views import dashboard, keys, signin, tenants

app_name = "console"

# Each area's module lists its own pages.
urlpatterns = [
    *dashboard.urlpatterns,
    *keys.urlpatterns,
    *signin.urlpatterns,
    *tenants.urlpatterns,
]
