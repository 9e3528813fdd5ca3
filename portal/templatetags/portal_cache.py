"""``{% bookscache "name" key %}…{% endbookscache %}``: a part of a portal page computed from
the signed-in customer's books, cached until those books change (billing.books_cache).

The part is keyed by the customers in scope, the business day (``today`` in the context) and
``key``, which the view builds from what the part shows (a page's canonical selection), so a
visitor cannot mint entries with made-up query strings; ``key`` None renders it uncached (an
ad-hoc filter). Everything else the part shows must come from the books or from settings.
Whatever it reads should be lazy (querysets, SimpleLazyObject), so a hit reads nothing.
Never put a form with a CSRF token inside: the part is shared by the customer's contacts.
"""

from django import template
from django.utils.safestring import mark_safe

register = template.Library()


class BooksCacheNode(template.Node):
    def __init__(self, nodelist, name, key):
        self.nodelist = nodelist
        self.name = name
        self.key = key

    def render(self, context):
        key = self.key.resolve(context)
        if key is None:
            return self.nodelist.render(context)
        html = context["request"].portal.cached(
            self.name.resolve(context),
            key,
            lambda: str(self.nodelist.render(context)),
            today=context["today"],
        )
        return mark_safe(html)  # noqa: S308 (the template's own rendering, escaped as usual)


@register.tag
def bookscache(parser, token):
    bits = token.split_contents()
    if len(bits) != 3:
        raise template.TemplateSyntaxError("usage: {% bookscache name key %}")
    nodelist = parser.parse(("endbookscache",))
    parser.delete_first_token()
    return BooksCacheNode(nodelist, parser.compile_filter(bits[1]), parser.compile_filter(bits[2]))
