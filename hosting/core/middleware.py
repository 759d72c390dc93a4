"""Request size limit: bodies over DATA_UPLOAD_MAX_MEMORY_SIZE get 413 before anything reads them.

Django checks that limit only when a form is parsed; DRF's parsers read the
stream without it, before authentication. This runs first, so an oversized
body costs neither parsing nor a database query.
"""

import io

from django.conf import settings
from django.http import HttpResponse, JsonResponse


def _too_large(request, limit):
    message = f"request body too large: at most {limit} bytes"
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message, "code": "too_large"}, status=413)
    return HttpResponse(message + "\n", status=413, content_type="text/plain")


class RequestSizeLimitMiddleware:
    """Answer 413 to a Content-Length over the limit, and to a chunked body that
    grows past it (a chunked body under it is buffered and read like any other)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is None:
            return self.get_response(request)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            return _too_large(request, limit)
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower() and not length:
            # The server de-chunks; Django would see no Content-Length and read nothing.
            body = request.META["wsgi.input"].read(limit + 1) if "wsgi.input" in request.META \
                else b""
            if len(body) > limit:
                return _too_large(request, limit)
            request._stream = io.BytesIO(body)
            request.META["CONTENT_LENGTH"] = str(len(body))
        return self.get_response(request)
