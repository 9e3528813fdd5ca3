"""PDF documents (invoice, receipt, statement) rendered by WeasyPrint from HTML templates.

Templates live under templates/documents/ and use templates/documents/base.html. Files are
served as attachments that no cache may keep: they are customers' financial records.
"""

from django.conf import settings
from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.utils.text import slugify


def _url_fetcher(url: str, *args, **kwargs):
    """Resolve /static/ and /media/ paths from disk; never fetch anything over the network."""
    from weasyprint.urls import default_url_fetcher

    for prefix, resolve in ((settings.STATIC_URL, finders.find), (settings.MEDIA_URL, _media_path)):
        if url.startswith(prefix):
            path = resolve(url[len(prefix) :])
            if path:
                return default_url_fetcher(f"file://{path}")
    if url.startswith("data:"):
        return default_url_fetcher(url)
    raise ValueError(f"document asset not allowed: {url}")


def _media_path(name: str) -> str | None:
    from django.core.files.storage import default_storage

    try:
        return default_storage.path(name)
    except NotImplementedError:
        return None


def render_pdf(template: str, context: dict) -> bytes:
    from weasyprint import HTML

    html = render_to_string(template, context)
    return HTML(string=html, base_url="/", url_fetcher=_url_fetcher).write_pdf()


def pdf_response(template: str, context: dict, *, filename: str) -> HttpResponse:
    response = HttpResponse(render_pdf(template, context), content_type="application/pdf")
    response["Content-Disposition"] = (
        f'attachment; filename="{slugify(filename) or "document"}.pdf"'
    )
    response["Cache-Control"] = "no-store"
    return response
