"""The intermediate page of bulk actions: the choice, the rows it applies to, and "Apply".

The first POST (from the changelist's action bar) renders the page; the page posts back to the
same changelist URL with ``confirm=yes``, which runs the action for real. The changelist's
query string rides along, so "select all N" (``select_across``) re-selects the same rows.
"""

from collections.abc import Callable, Sequence

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

CONFIRM_FIELD = "confirm"
CONFIRM_VALUE = "yes"
# Enough to recognise the selection without rendering a page of tens of thousands of rows.
LISTED_ROWS_MAX = 200


def action_confirmed(request: HttpRequest) -> bool:
    """Whether this POST comes from the confirmation page's "Apply" button."""
    return request.POST.get(CONFIRM_FIELD) == CONFIRM_VALUE


def action_form(form_class: type[forms.Form], request: HttpRequest) -> forms.Form:
    """The action's form, bound only once the clerk confirmed (so the first page shows no errors)."""
    return form_class(request.POST if action_confirmed(request) else None)


def action_confirmation_response(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    action: str,
    title: str,
    intro: str,
    form: forms.Form,
    columns: Sequence[str],
    row: Callable[[Model], Sequence[object]],
    submit_label: str = "Apply",
) -> TemplateResponse:
    """Render the confirmation page for ``action`` over ``queryset``."""
    opts = modeladmin.model._meta
    select_across = request.POST.get("select_across") == "1"
    total = queryset.count()
    listed = list(queryset[:LISTED_ROWS_MAX])
    # With "select all" the changelist query string re-creates the selection, and the pks of a
    # large one would exceed DATA_UPLOAD_MAX_NUMBER_FIELDS; one pk is enough to route the POST.
    if select_across:
        selected_pks = [obj.pk for obj in listed[:1]]
    else:
        # Ticked by hand on one changelist page: as many as the page had, all of them sent back.
        selected_pks = list(queryset.values_list("pk", flat=True))
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "subtitle": None,
        "intro": intro,
        "opts": opts,
        "app_label": opts.app_label,
        "action": action,
        "form": form,
        "columns": columns,
        "rows": [(obj, row(obj)) for obj in listed],
        "total": total,
        "selection_label": f"{total} selected "
        + str(opts.verbose_name if total == 1 else opts.verbose_name_plural),
        "not_listed": total - len(listed),
        "select_across": select_across,
        "selected_pks": selected_pks,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "confirm_field": CONFIRM_FIELD,
        "confirm_value": CONFIRM_VALUE,
        "submit_label": submit_label,
        "media": modeladmin.media + form.media,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, "admin/billing/action_confirmation.html", context)
