"""``{% bookscache "name" vary... %}…{% endbookscache %}``: a part of a portal page computed
from the signed-in customer's books, cached until those books change (billing.books_cache).

The part is keyed by the customers in scope, the business day (``today`` in the context) and
the values it varies on: everything else it shows must come from the books or from settings.
Whatever it reads should be lazy (querysets, SimpleLazyObject), so a hit reads nothing.
Never put a form with a CSRF token inside: the part is shared by the customer's contacts.
"""

from django import template
from django.utils.safestring import mark_safe

register = template.Library()


class BooksCacheNode(template.Node):
    def __init__(self, nodelist, name, vary):
        self.nodelist = nodelist
        self.name = name
        self.vary = vary

    def render(self, context):
        portal = context["request"].portal
        html = portal.cached(
            self.name.resolve(context),
            [value.resolve(context) for value in self.vary],
            lambda: str(self.nodelist.render(context)),
            today=context["today"],
        )
        return mark_safe(html)  # noqa: S308 (the template's own rendering, escaped as usual)


@register.tag
def bookscache(parser, token):
    bits = token.split_contents()
    if len(bits) < 2:
        raise template.TemplateSyntaxError("bookscache needs a name")
    nodelist = parser.parse(("endbookscache",))
    parser.delete_first_token()
    return BooksCacheNode(
        nodelist, parser.compile_filter(bits[1]), [parser.compile_filter(b) for b in bits[2:]]
    )
