from django.urls import path

from console import views

app_name = "console"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.sign_in, name="login"),
    path("logout/", views.sign_out, name="logout"),
    path("tenants/", views.tenant_list, name="tenants"),
    path("tenants/<str:slug>/status/", views.tenant_status, name="tenant-status"),
]
