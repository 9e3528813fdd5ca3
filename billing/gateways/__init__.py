"""Payment gateways: the interface, its results and errors, and ``get_gateway()``.

Code that moves money asks ``get_gateway()`` for the configured provider (or
``get_gateway(payment_method.gateway)`` for the one that issued a saved card's token) and
talks to it only through ``PaymentGateway``.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from billing.gateways.base import (
    CardInvalid,
    CardToken,
    CardUnknown,
    ChargeRequest,
    ChargeResult,
    GatewayError,
    GatewayTimeout,
    IdempotencyConflict,
    PaymentGateway,
    RefundNotPossible,
    RefundResult,
)

DEFAULT_GATEWAY = "sandbox"

# Adapters by the name stored on PaymentMethod.gateway and Payment.gateway. Dotted paths,
# imported on first use, so importing this package never loads models before the app registry.
GATEWAY_CLASSES: dict[str, str] = {
    "sandbox": "billing.gateways.sandbox.SandboxGateway",
}


def get_gateway(name: str | None = None) -> PaymentGateway:
    """The gateway called ``name``, by default the one ``settings.PAYMENT_GATEWAY`` configures."""
    name = name or getattr(settings, "PAYMENT_GATEWAY", "") or DEFAULT_GATEWAY
    try:
        path = GATEWAY_CLASSES[name]
    except KeyError:
        known = ", ".join(sorted(GATEWAY_CLASSES))
        raise ImproperlyConfigured(
            f"Unknown payment gateway {name!r} (PAYMENT_GATEWAY); known gateways: {known}."
        ) from None
    gateway_class: type[PaymentGateway] = import_string(path)
    return gateway_class()


__all__ = [
    "DEFAULT_GATEWAY",
    "GATEWAY_CLASSES",
    "CardInvalid",
    "CardToken",
    "CardUnknown",
    "ChargeRequest",
    "ChargeResult",
    "GatewayError",
    "GatewayTimeout",
    "IdempotencyConflict",
    "PaymentGateway",
    "RefundNotPossible",
    "RefundResult",
    "get_gateway",
]
