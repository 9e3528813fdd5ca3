"""The billing domain model, one module per aggregate."""

from billing.models.catalog import Addon, Coupon, Plan, PriceList, PriceListItem, Product
from billing.models.credits import CreditAllocation, CreditNote
from billing.models.customers import ContactPerson, Customer, CustomerGroup
from billing.models.dunning import DunningPolicy, PaymentAttempt
from billing.models.events import Event
from billing.models.invoices import Invoice, InvoiceLine
from billing.models.notifications import Notification
from billing.models.organization import DocumentSequence, Organization
from billing.models.payments import (
    InvoicePaymentLock,
    Payment,
    PaymentAllocation,
    PaymentMethod,
    Refund,
)
from billing.models.sandbox import SandboxCard, SandboxCharge
from billing.models.subscriptions import (
    ScheduledChange,
    Subscription,
    SubscriptionAddon,
    SubscriptionCoupon,
    UsageRecord,
)

__all__ = [
    "Addon",
    "ContactPerson",
    "Coupon",
    "CreditAllocation",
    "CreditNote",
    "Customer",
    "CustomerGroup",
    "DocumentSequence",
    "DunningPolicy",
    "Event",
    "Invoice",
    "InvoiceLine",
    "InvoicePaymentLock",
    "Notification",
    "Organization",
    "Payment",
    "PaymentAllocation",
    "PaymentAttempt",
    "PaymentMethod",
    "Plan",
    "PriceList",
    "PriceListItem",
    "Product",
    "Refund",
    "SandboxCard",
    "SandboxCharge",
    "ScheduledChange",
    "Subscription",
    "SubscriptionAddon",
    "SubscriptionCoupon",
    "UsageRecord",
]
