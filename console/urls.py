from console.views import dashboard, signin, tenants

app_name = "console"

# Each area's module lists its own pages.
urlpatterns = [
    *dashboard.urlpatterns,
    *signin.urlpatterns,
    *tenants.urlpatterns,
]
