"""Staff actions on one object that call a billing service, each behind a confirmation page.

An action is a page at ``/admin/billing/<model>/<pk>/<slug>/``, linked from the object's change
page (object tools) and from the changelist's action menu. The page shows the choices the
service needs and, for actions that move money, the figures the service itself computes in
dry-run mode (DESIGN rule 5). "Update figures" recomputes them for the choices made; "Confirm"
recomputes them once more and runs the service only if they are still the figures the page
showed (their digest rides along in the form), so what staff confirm is what happens.

GET never writes. A ``BillingError`` is shown next to the field it names, or as an error
message; the services write nothing when they refuse. The views are deliberately not atomic:
card payments must be collected outside any database transaction (DESIGN rule 7).
"""

import abc
import hashlib
import re
from dataclasses import astuple, dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from billing.admin.base import admin_change_url
from billing.admin.confirmation import CONFIRM_FIELD, CONFIRM_VALUE, action_confirmed
from billing.admin.forms import NoChoicesForm
from billing.errors import BillingError
from billing.services.payments import new_idempotency_key

PREVIEW_FIELD = "_preview"
DIGEST_FIELD = "_figures"
IDEMPOTENCY_KEY_FIELD = "_idempotency_key"
# What new_idempotency_key("pay") makes; anything else posted back is replaced by a fresh key.
IDEMPOTENCY_KEY_RE = re.compile(r"^pay_[0-9a-f]{32}$")
# The admin's own per-object URLs: an action under one of these names would hide that page.
RESERVED_SLUGS = frozenset({"change", "delete", "history"})
FIGURES_CHANGED = "The figures changed since the page was shown. Check them, then confirm again."


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Figure:
    key: str  # stable name for templates and tests, e.g. "invoice_total"
    label: str
    value: str


@dataclass(frozen=True)
class Preview:
    """What the confirmation page shows before staff confirm, computed by the service."""

    title: str = "Charges summary"
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    figures: tuple[Figure, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        return hashlib.sha256(repr(astuple(self)).encode()).hexdigest()


@dataclass(frozen=True)
class ActionResult:
    message: str
    level: int = messages.SUCCESS


# ----------------------------------------------------------------------------- actions
class ObjectAction(abc.ABC):
    """One service call on one object. Subclasses fill in the class attributes and methods."""

    slug: str = ""
    label: str = ""  # the button and the action menu entry
    title: str = ""
    intro: str = ""
    submit_label: str = "Confirm"
    # Every permission the user needs, e.g. ("billing.add_payment",).
    permissions: tuple[str, ...] = ()
    form_class: type[forms.Form] = NoChoicesForm
    # A card charge: the page carries a fresh idempotency key, so a double submit charges once.
    charges_card: bool = False

    @property
    def url_name(self) -> str:
        return self.slug.replace("-", "_")

    def is_available(self, obj: Model) -> bool:
        """Whether the change page offers it (the service still decides when confirmed)."""
        return True

    def initial(self, request: HttpRequest, obj: Model) -> dict[str, Any]:
        return {}

    def form_kwargs(self, obj: Model) -> dict[str, Any]:
        return {}

    def get_form(self, request: HttpRequest, obj: Model, data=None) -> forms.Form:
        return self.form_class(data, initial=self.initial(request, obj), **self.form_kwargs(obj))

    def facts(self, obj: Model) -> list[tuple[str, object]]:
        """What staff should see about the object while deciding."""
        return []

    def preview(self, request: HttpRequest, obj: Model, data: dict[str, Any]) -> Preview | None:
        """The service's dry run for these choices; may raise ``BillingError``."""
        return None

    @abc.abstractmethod
    def perform(self, request: HttpRequest, obj: Model, data: dict[str, Any]) -> ActionResult:
        """Run the service for real and say what it created."""


def menu_entry(action: ObjectAction):
    """A changelist action that opens ``action``'s confirmation page for the one selected row."""

    def open_confirmation(modeladmin, request: HttpRequest, queryset):
        selected = list(queryset[:2])
        if len(selected) != 1:
            modeladmin.message_user(
                request,
                f"“{action.label}” works on one {modeladmin.opts.verbose_name} at a time: "
                "select exactly one.",
                messages.WARNING,
            )
            return None
        return HttpResponseRedirect(modeladmin.object_action_url(selected[0], action))

    open_confirmation.__name__ = f"open_{action.url_name}"
    return admin.action(description=f"{action.label}…", permissions=["view"])(open_confirmation)


class ObjectActionsMixin:
    """Adds ``object_actions`` to a ModelAdmin: URLs, change-page buttons, action-menu entries."""

    object_actions: tuple[ObjectAction, ...] = ()
    change_form_template = "admin/billing/change_form_object_actions.html"

    # ------------------------------------------------------------------ wiring
    def get_urls(self):
        opts = self.opts

        def view_for(action: ObjectAction):
            def view(request: HttpRequest, object_id: str) -> HttpResponse:
                return self.object_action_view(request, object_id, action)

            return self.admin_site.admin_view(view)

        reserved = [a.slug for a in self.object_actions if a.slug in RESERVED_SLUGS]
        if reserved:
            raise ValueError(f"Object action slugs {reserved} clash with the admin's own URLs.")
        urls = [
            path(
                f"<path:object_id>/{action.slug}/",
                view_for(action),
                name=f"{opts.app_label}_{opts.model_name}_{action.url_name}",
            )
            for action in self.object_actions
        ]
        # Before the admin's own: its "<path:object_id>/" catch-all would swallow these.
        return urls + super().get_urls()

    def object_action_url(self, obj: Model, action: ObjectAction) -> str:
        opts = self.opts
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{action.url_name}",
            args=[obj.pk],
        )

    def get_actions(self, request: HttpRequest):
        actions = super().get_actions(request)
        for action in self.object_actions:
            if not request.user.has_perms(action.permissions):
                actions.pop(f"open_{action.url_name}", None)
        return actions

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk is not None:
            context["object_action_links"] = [
                {
                    "slug": action.slug,
                    "label": action.label,
                    "url": self.object_action_url(obj, action),
                }
                for action in self.object_actions
                if request.user.has_perms(action.permissions) and action.is_available(obj)
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    # ------------------------------------------------------------------ the page
    def object_action_view(
        self, request: HttpRequest, object_id: str, action: ObjectAction
    ) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not (
            self.has_view_permission(request, obj) and request.user.has_perms(action.permissions)
        ):
            raise PermissionDenied
        if request.method != "POST":
            form = action.get_form(request, obj)
            preview, _ok = self._object_action_preview(
                request, action, obj, form, action.initial(request, obj)
            )
            return self._object_action_page(request, action, obj, form, preview)

        form = action.get_form(request, obj, data=request.POST)
        preview = None
        if form.is_valid():
            preview, ok = self._object_action_preview(request, action, obj, form, form.cleaned_data)
            wants_to_run = action_confirmed(request) and PREVIEW_FIELD not in request.POST
            if ok and wants_to_run:
                if preview is not None and request.POST.get(DIGEST_FIELD) != preview.digest:
                    self.message_user(request, FIGURES_CHANGED, messages.WARNING)
                else:
                    response = self._object_action_perform(request, action, obj, form)
                    if response is not None:
                        return response
        return self._object_action_page(request, action, obj, form, preview)

    def _object_action_preview(
        self, request, action, obj, form, data
    ) -> tuple[Preview | None, bool]:
        try:
            return action.preview(request, obj, data), True
        except BillingError as error:
            self._object_action_error(request, form, error)
            return None, False

    def _object_action_perform(self, request, action, obj, form) -> HttpResponse | None:
        data = dict(form.cleaned_data)
        if action.charges_card:
            posted = request.POST.get(IDEMPOTENCY_KEY_FIELD, "")
            data["idempotency_key"] = (
                posted if IDEMPOTENCY_KEY_RE.match(posted) else new_idempotency_key()
            )
        try:
            result = action.perform(request, obj, data)
        except BillingError as error:
            self._object_action_error(request, form, error)
            return None
        self.message_user(request, result.message, result.level)
        return HttpResponseRedirect(admin_change_url(obj))

    def _object_action_error(self, request, form: forms.Form, error: BillingError) -> None:
        if form.is_bound and error.field in form.fields:
            form.add_error(error.field, error.message)
        else:
            self.message_user(request, error.message, messages.ERROR)

    def _object_action_page(self, request, action, obj, form, preview) -> TemplateResponse:
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "title": action.title or action.label,
            "subtitle": str(obj),
            "intro": action.intro,
            "opts": opts,
            "app_label": opts.app_label,
            "original": obj,
            "object_change_url": admin_change_url(obj),
            "action": action,
            "form": form,
            "facts": action.facts(obj),
            "preview": preview,
            "preview_field": PREVIEW_FIELD,
            "digest_field": DIGEST_FIELD,
            "idempotency_key_field": IDEMPOTENCY_KEY_FIELD,
            # Fresh on every render: a page shown again after a refusal charges under a new key.
            "idempotency_key": new_idempotency_key() if action.charges_card else "",
            "confirm_field": CONFIRM_FIELD,
            "confirm_value": CONFIRM_VALUE,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/billing/object_action.html", context)
