"""Django settings: embedded defaults (SQLite) unless the environment says otherwise."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("HOSTING_DATA_DIR", BASE_DIR / "var"))

# A development key is generated per checkout; production sets HOSTING_SECRET_KEY.
SECRET_KEY = os.environ.get("HOSTING_SECRET_KEY", "dev-only-" + str(BASE_DIR))
DEBUG = os.environ.get("HOSTING_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("HOSTING_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "hosting.core",
    "hosting.customers",
    "hosting.plans",
    "hosting.nodes",
    "hosting.environments",
    "hosting.ipam",
    "hosting.operations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hosting.urls"
WSGI_APPLICATION = "hosting.wsgi.application"

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

# SQLite by default; DATABASE_URL=postgres://user:pass@host:5432/name for production.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": DATA_DIR / "hosting.sqlite3"}}
if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
    from urllib.parse import urlsplit
    _url = urlsplit(os.environ["DATABASE_URL"])
    DATABASES["default"] = {"ENGINE": "django.db.backends.postgresql",
                            "NAME": _url.path.lstrip("/"), "USER": _url.username or "",
                            "PASSWORD": _url.password or "", "HOST": _url.hostname or "",
                            "PORT": str(_url.port or "")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
