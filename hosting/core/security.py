"""Response headers and session lifetimes (issue 14).

``SecurityHeadersMiddleware`` adds a Content-Security-Policy to every answer: scripts
only from this host and never inline (templates keep no inline script or event
handler: static/js does it all), no framing, no plugins, forms only to this host.
The third-party pages we serve as they come (the Django admin, the API docs) may
also use inline styles, which they rely on; their scripts are still only ours.
A page with the web console (the VPS page) sets ``response.csp_style_nonce``: the
terminal (xterm.js) makes its own <style> elements, which our script tags with that
nonce, so only they are allowed besides the stylesheets from this host (style
attributes stay refused); and ``response.csp_connect``: the console's WebSocket origin.
Frame denial, the referrer policy, nosniff and HSTS (on TLS, see the production
settings) come from Django's own SecurityMiddleware and XFrameOptionsMiddleware.

``SessionExpiryMiddleware`` ends a session idle for SESSION_IDLE_SECONDS or older
than SESSION_ABSOLUTE_SECONDS, whatever it does meanwhile.
"""

import time

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse

POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
          "frame-ancestors 'none'; form-action 'self'")
# The Django admin and the API docs (Swagger UI, Redoc) set inline styles and Redoc runs a
# web worker from a blob; their scripts still come only from this host.
THIRD_PARTY_POLICY = POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'") \
    + "; worker-src 'self' blob:"
THIRD_PARTY_PREFIXES = ("/admin/", "/api/v1/docs/", "/api/v1/redoc/")


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = THIRD_PARTY_POLICY if request.path.startswith(THIRD_PARTY_PREFIXES) \
            else POLICY
        nonce = getattr(response, "csp_style_nonce", None)
        if nonce:
            policy = policy.replace("style-src 'self'", f"style-src 'self' 'nonce-{nonce}'")
        connect = getattr(response, "csp_connect", None)
        if connect:
            policy = policy.replace("connect-src 'self'", f"connect-src 'self' {connect}")
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy",
                                    "camera=(), microphone=(), geolocation=(), payment=()")
        return response


STARTED, SEEN = "session_started", "session_seen"
SEEN_RESOLUTION = 60  # write the last-seen time at most this often (fewer session writes)


class SessionExpiryMiddleware:
    """Sign out a session idle too long or simply too old (sign-in page or 401 JSON)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and hasattr(request, "session"):
            now = time.time()
            session = request.session
            started = session.setdefault(STARTED, now)
            seen = session.get(SEEN, now)
            idle = now - seen > settings.SESSION_IDLE_SECONDS
            old = now - started > settings.SESSION_ABSOLUTE_SECONDS
            if idle or old:
                logout(request)
                message = "your session has expired; sign in again"
                if request.path.startswith("/api/"):
                    return JsonResponse({"detail": message, "code": "session_expired"},
                                        status=401)
                return redirect_to_login(request.get_full_path())
            if now - seen >= SEEN_RESOLUTION or SEEN not in session:
                session[SEEN] = now
        return self.get_response(request)
