"""Every status and kind in the billing domain, as ``TextChoices``.

Reading order for a newcomer: this file, then ``lifecycle.py``, then ``services/``.
"""

from django.db import models


class Interval(models.TextChoices):
    WEEK = "week", "Week"
    MONTH = "month", "Month"
    YEAR = "year", "Year"


class CustomerStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    INACTIVE = "inactive", "Inactive"


class PortalRole(models.TextChoices):
    """What a contact person may do in the portal; each role includes the ones above it."""

    VIEWER = "viewer", "Viewer (sees)"
    PAYER = "payer", "Payer (also pays and manages cards)"
    ADMIN = "admin", "Admin (also manages subscriptions and contacts)"


class PriceListKind(models.TextChoices):
    MARKUP = "markup", "Percentage markup"
    MARKDOWN = "markdown", "Percentage markdown"
    PER_ITEM = "per_item", "Per-item prices"


class AddonKind(models.TextChoices):
    RECURRING = "recurring", "Recurring"
    ONE_TIME = "one_time", "One-time"
    METERED = "metered", "Metered (billed per unit in arrears)"


class DiscountType(models.TextChoices):
    PERCENT = "percent", "Percent off"
    FLAT = "flat", "Flat amount off"


class CouponDuration(models.TextChoices):
    ONCE = "once", "Once"
    FOREVER = "forever", "Forever"
    REPEATING = "repeating", "For a number of billing cycles"


class SubscriptionStatus(models.TextChoices):
    FUTURE = "future", "Future"
    IN_TRIAL = "in_trial", "In trial"
    LIVE = "live", "Live"
    NON_RENEWING = "non_renewing", "Non-renewing"
    PAUSED = "paused", "Paused"
    PAST_DUE = "past_due", "Past due"
    UNPAID = "unpaid", "Unpaid"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


class CancelReason(models.TextChoices):
    CUSTOMER = "customer", "Cancelled by the customer"
    MERCHANT = "merchant", "Cancelled by the merchant"
    DUNNING = "dunning", "Payment failed (dunning)"
    TRIAL_ENDED = "trial_ended", "Trial ended"


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open"
    PAID = "paid", "Paid"
    VOID = "void", "Void"
    UNCOLLECTIBLE = "uncollectible", "Uncollectible"


class InvoiceKind(models.TextChoices):
    """Why an invoice exists. At most one per (subscription, period start) for the periodic kinds."""

    RECURRING = "recurring", "Subscription term"
    USAGE = "usage", "Metered usage"
    PRORATION = "proration", "Proration"
    ONE_TIME = "one_time", "One-time charge"


PERIODIC_INVOICE_KINDS = (InvoiceKind.RECURRING, InvoiceKind.USAGE)


class InvoiceLineKind(models.TextChoices):
    PLAN = "plan", "Plan"
    ADDON = "addon", "Addon"
    USAGE = "usage", "Usage"
    SETUP_FEE = "setup_fee", "Setup fee"
    PRORATION_CHARGE = "proration_charge", "Proration charge"
    PRORATION_CREDIT = "proration_credit", "Proration credit"
    DISCOUNT = "discount", "Discount"
    ONE_TIME = "one_time", "One-time charge"


class CreditNoteReason(models.TextChoices):
    PRORATION = "proration", "Proration (plan change)"
    CANCELLATION = "cancellation", "Cancellation"
    PAUSE = "pause", "Unused time while paused"
    REFUND = "refund", "Refund"
    GOODWILL = "goodwill", "Goodwill"
    BILLING_ERROR = "billing_error", "Billing error"
    OTHER = "other", "Other"


class CreditNoteStatus(models.TextChoices):
    ISSUED = "issued", "Issued"
    VOID = "void", "Void"


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    UNKNOWN = "unknown", "Unknown (awaiting reconciliation)"
    REFUNDED = "refunded", "Refunded"


class PaymentMode(models.TextChoices):
    CARD = "card", "Card"
    BANK_TRANSFER = "bank_transfer", "Bank transfer"
    CHECK = "check", "Check"
    CASH = "cash", "Cash"
    OTHER = "other", "Other"


class DeclineKind(models.TextChoices):
    """A hard decline (lost or stolen card) is never retried; a soft one may succeed later."""

    SOFT = "soft", "Soft decline"
    HARD = "hard", "Hard decline"


class RefundStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class DunningFinalAction(models.TextChoices):
    CANCEL = "cancel", "Cancel the subscription"
    MARK_UNPAID = "mark_unpaid", "Mark the subscription unpaid"
    MOVE_TO_FREE_PLAN = "free_plan", "Move to the free plan (voiding the unpaid invoice)"


class PaymentAttemptStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class ActorKind(models.TextChoices):
    CUSTOMER = "customer", "Customer"
    STAFF = "staff", "Staff"
    SYSTEM = "system", "System"


class ChangeTiming(models.TextChoices):
    NOW = "now", "Now (prorated)"
    TERM_END = "term_end", "At the end of the term"


class MfaPolicy(models.TextChoices):
    OPTIONAL = "optional", "Optional for portal users"
    REQUIRED = "required", "Required for portal users"


class DocumentKind(models.TextChoices):
    INVOICE = "invoice", "Invoice"
    CREDIT_NOTE = "credit_note", "Credit note"
    RECEIPT = "receipt", "Receipt"
