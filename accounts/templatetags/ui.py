"""Small template helpers for rendering form fields with the CSS framework's classes."""

from django import template
from django.forms import BoundField

register = template.Library()

SELECT_WIDGETS = {"select", "selectmultiple", "nullbooleanselect"}


@register.filter
def control(field: BoundField):
    """Render a field's widget with form-control/form-select, error state and its description."""
    kind = field.widget_type
    css = "form-select" if kind in SELECT_WIDGETS else "form-control"
    attrs = {"class": f"{css} is-invalid" if field.errors else css}
    described = []
    if field.errors:
        described.append(f"{field.id_for_label}-errors")
        attrs["aria-invalid"] = "true"
    if field.help_text:
        described.append(f"{field.id_for_label}-help")
    if described:
        attrs["aria-describedby"] = " ".join(described)
    return field.as_widget(attrs=attrs)
