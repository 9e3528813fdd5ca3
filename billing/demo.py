"""Demo data: the merchant "Northwind Cloud", its catalog, and customers in every state.

``demo_seed`` is what ``manage.py seed_demo`` runs. It is idempotent: every object is keyed on a
natural key (organization name, plan code, customer name, user email, ...) and a customer's
subscription and history are only built when the customer itself is new, so a second run
creates nothing. Dates are relative to today in the organization's time zone, so the demo looks
current whenever it is seeded.

The invoice history is written in bulk rather than by replaying two years of renewals through
the services, but it is what they would have left: lines and totals come from the pricing
engine (``billing.pricing``, the function renewals and previews use), snapshots from the
invoice service, numbers from the gapless sequences in date order, and every database
constraint holds.
"""

import base64
import calendar
import datetime
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

from allauth.account.models import EmailAddress
from django.db import models, transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from billing.enums import (
    AddonKind,
    CancelReason,
    CouponDuration,
    CreditNoteReason,
    DiscountType,
    DocumentKind,
    Interval,
    InvoiceKind,
    InvoiceLineKind,
    InvoiceStatus,
    PaymentAttemptStatus,
    PaymentMode,
    PaymentStatus,
    PortalRole,
    PriceListKind,
    SubscriptionStatus,
)
from billing.gateways.sandbox import (
    DECLINES,
    INSUFFICIENT_FUNDS,
    OUTCOME_FAILED,
    OUTCOME_SUCCEEDED,
    SUCCEED,
)
from billing.models import (
    Addon,
    ContactPerson,
    Coupon,
    CreditAllocation,
    CreditNote,
    Customer,
    CustomerGroup,
    DocumentSequence,
    DunningPolicy,
    Event,
    Invoice,
    InvoiceLine,
    Organization,
    Payment,
    PaymentAllocation,
    PaymentAttempt,
    PaymentMethod,
    Plan,
    PriceList,
    Product,
    SandboxCard,
    SandboxCharge,
    Subscription,
    SubscriptionAddon,
    SubscriptionCoupon,
    UsageRecord,
)
from billing.money import ZERO, percent_of, round_money
from billing.periods import Period, boundary
from billing.pricing import (
    Configuration,
    LineDraft,
    PriceBook,
    Totals,
    coupon_initial_cycles,
    period_charges,
    setup_fee_line,
)
from billing.services.events import event_record
from billing.services.invoices import customer_snapshot, merchant_snapshot, payment_terms_days
from billing.services.numbering import DEFAULT_PADDING, DEFAULT_PREFIXES, document_numbers_allocate
from portal.models import PortalPreferences, WebTab

# Every demo login uses this password. Demo data only: never seed a production database.
DEMO_PASSWORD = "northwind-demo"  # noqa: S105
# The TOTP secret of the demo's staff admin and of Ada (Acme Corp), in base32 as authenticator
# apps take it. Add it to any authenticator app, or: pyotp.TOTP(DEMO_TOTP_SECRET).now().
# It is the well-known example secret JBSWY3DPEHPK3PXP twice: 160 bits, as RFC 4226 recommends;
# the 80-bit original alone is refused by pyotp (≥ 2.10 wants at least 112 bits).
DEMO_TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # noqa: S105

ORGANIZATION_NAME = "Northwind Cloud"
ORGANIZATION_TIME_ZONE = "America/New_York"
CURRENCY = "USD"
STAFF_EMAIL = "admin@northwind.example"
ADA_EMAIL = "ada@acme.example"
BOB_EMAIL = "bob@globex.example"

# Hours of priority support billed in arrears, cycled through every third month for Acme Corp.
SUPPORT_HOURS = [Decimal("2.5"), Decimal("1"), Decimal("4"), Decimal("0.5")]


@dataclass(frozen=True)
class DemoLogin:
    email: str
    role: str
    totp: bool


DEMO_LOGINS = (
    DemoLogin(STAFF_EMAIL, "staff (admin, superuser)", totp=True),
    DemoLogin(
        ADA_EMAIL, "portal: Acme Corp, admin contact (parent of Acme Berlin, Acme Paris)", True
    ),
    DemoLogin(BOB_EMAIL, "portal: Globex, admin contact", totp=False),
)


@dataclass
class DemoSeedResult:
    """What a run created, per model label (``billing.Invoice``); empty when nothing was new."""

    created: Counter = field(default_factory=Counter)
    today: datetime.date | None = None
    seconds: float = 0.0

    @property
    def created_anything(self) -> bool:
        return any(self.created.values())


def totp_key_hex(secret: str = DEMO_TOTP_SECRET) -> str:
    """The hex key django-otp stores for a base32 authenticator secret."""
    return base64.b32decode(secret.upper()).hex()


# ----------------------------------------------------------------------------- entry point
def demo_seed(*, today: datetime.date | None = None) -> DemoSeedResult:
    """Create whatever part of the demo is missing, in one transaction; never duplicate."""
    started = time.monotonic()
    zone = ZoneInfo(ORGANIZATION_TIME_ZONE)
    today = today or timezone.localdate(timezone=zone)
    result = DemoSeedResult(today=today)
    with transaction.atomic():
        seeder = _Seeder(today=today, zone=zone, created=result.created)
        seeder.run()
    result.seconds = time.monotonic() - started
    return result


# ----------------------------------------------------------------------------- drafts
@dataclass
class _InvoiceDraft:
    invoice: Invoice
    lines: list[InvoiceLine]
    usage: list[UsageRecord] = field(default_factory=list)


@dataclass
class _PaymentDraft:
    payment: Payment
    invoice: _InvoiceDraft
    card: PaymentMethod | None
    attempt_number: int | None = None
    attempted_at: datetime.datetime | None = None


@dataclass
class _CreditDraft:
    credit_note: CreditNote
    origin: _InvoiceDraft | None = None
    applied_to: _InvoiceDraft | None = None
    applied_amount: Decimal = ZERO


@dataclass
class _Ledger:
    """Invoices, payments and credits of the new customers, written in bulk at the end.

    Numbers are taken only then, for everything at once and in date order, so INV-, RCPT- and
    CN- numbers run chronologically across customers.
    """

    invoices: list[_InvoiceDraft] = field(default_factory=list)
    payments: list[_PaymentDraft] = field(default_factory=list)
    credits: list[_CreditDraft] = field(default_factory=list)
    unbilled_usage: list[UsageRecord] = field(default_factory=list)
    # Deferred event_record calls: their subjects need primary keys first.
    events: list[dict] = field(default_factory=list)


class _Seeder:
    def __init__(self, *, today: datetime.date, zone: ZoneInfo, created: Counter):
        self.today = today
        self.zone = zone
        self.created = created
        self.ledger = _Ledger()

    # ------------------------------------------------------------------------- helpers
    def count(self, model: type[models.Model], n: int = 1) -> None:
        if n:
            self.created[model._meta.label] += n

    def get_or_create(self, model: type[models.Model], defaults: dict | None = None, **lookup):
        obj, created = model.objects.get_or_create(defaults=defaults or {}, **lookup)
        if created:
            self.count(model)
        return obj, created

    def at(self, day: datetime.date, hour: int = 9, minute: int = 0) -> datetime.datetime:
        """An aware moment on a billing date, in the organization's time zone."""
        return datetime.datetime.combine(day, datetime.time(hour, minute), tzinfo=self.zone)

    def days(self, n: int) -> datetime.date:
        return self.today + datetime.timedelta(days=n)

    # ------------------------------------------------------------------------- run
    def run(self) -> None:
        self.seed_catalog()
        self.seed_organization()
        self.seed_settings()
        self.seed_users()
        self.seed_groups()
        self.seed_customers()
        self.flush_ledger()

    # ------------------------------------------------------------------------- catalog
    def seed_catalog(self) -> None:
        product, _ = self.get_or_create(
            Product,
            name="Northwind Cloud",
            defaults={"description": "Managed cloud workspaces for teams."},
        )
        plan_specs = [
            # code, name, price, interval, trial days, extra fields
            ("free", "Free", "0", Interval.MONTH, 0, {"is_free": True, "max_quantity": 1}),
            ("starter-monthly", "Starter monthly", "29.00", Interval.MONTH, 0, {}),
            ("pro-monthly", "Pro monthly", "99.00", Interval.MONTH, 14, {}),
            ("pro-yearly", "Pro yearly", "990.00", Interval.YEAR, 14, {}),
            (
                "enterprise-monthly",
                "Enterprise monthly",
                "499.00",
                Interval.MONTH,
                0,
                {"setup_fee": Decimal("250.00"), "min_quantity": 1, "max_quantity": 500},
            ),
        ]
        descriptions = {
            "free": "One workspace, community support.",
            "starter-monthly": "For small teams getting started.",
            "pro-monthly": "Unlimited workspaces and SSO, billed monthly.",
            "pro-yearly": "Unlimited workspaces and SSO, two months free.",
            "enterprise-monthly": "Per seat, with audit logs and a dedicated manager.",
        }
        self.plans: dict[str, Plan] = {}
        for position, (code, name, price, interval, trial_days, extra) in enumerate(plan_specs):
            self.plans[code], _ = self.get_or_create(
                Plan,
                code=code,
                defaults={
                    "product": product,
                    "name": name,
                    "description": descriptions[code],
                    "price": Decimal(price),
                    "interval": interval,
                    "trial_days": trial_days,
                    "position": position,
                    **extra,
                },
            )

        addon_specs = [
            # code, name, kind, price, unit, applicable plan codes (empty: every plan)
            ("extra-seats", "Extra seats", AddonKind.RECURRING, "8.00", "seat", ["enterprise-monthly", "pro-monthly", "pro-yearly"]),
            ("priority-support", "Priority support", AddonKind.RECURRING, "49.00", "month", []),
            ("onboarding", "Onboarding", AddonKind.ONE_TIME, "300.00", "package", []),
            ("support-hours", "Support hours", AddonKind.METERED, "120.00", "hour", []),
        ]  # fmt: skip
        self.addons: dict[str, Addon] = {}
        for code, name, kind, price, unit, plan_codes in addon_specs:
            addon, created = self.get_or_create(
                Addon,
                code=code,
                defaults={"name": name, "kind": kind, "price": Decimal(price), "unit_name": unit},
            )
            if created and plan_codes:
                addon.applicable_plans.set([self.plans[c] for c in plan_codes])
            self.addons[code] = addon

        self.coupons: dict[str, Coupon] = {}
        self.coupons["WELCOME20"], _ = self.get_or_create(
            Coupon,
            code="WELCOME20",
            defaults={
                "name": "WELCOME20: 20 % off the first 3 billing cycles",
                "discount_type": DiscountType.PERCENT,
                "percent_off": Decimal("20"),
                "amount_off": None,
                "duration": CouponDuration.REPEATING,
                "duration_cycles": 3,
            },
        )
        self.coupons["LOYALTY50"], _ = self.get_or_create(
            Coupon,
            code="LOYALTY50",
            defaults={
                "name": "LOYALTY50: 50.00 off once",
                "discount_type": DiscountType.FLAT,
                "percent_off": None,
                "amount_off": Decimal("50.00"),
                "duration": CouponDuration.ONCE,
            },
        )

    # ------------------------------------------------------------------------- organization
    def seed_organization(self) -> None:
        org = Organization.objects.filter(pk=1).first()
        if org is None or org.name != ORGANIZATION_NAME:
            # A fresh deployment (or one whose settings row holds only defaults) becomes the
            # demo merchant; an organization already named so is left as its staff edited it.
            org = org or Organization(pk=1)
            org.name = ORGANIZATION_NAME
            org.legal_name = "Northwind Cloud, Inc."
            org.email = "billing@northwind.example"
            org.phone = "+1 212 555 0100"
            org.website = "https://northwind.example"
            org.address_line1 = "350 Fifth Avenue"
            org.address_line2 = "Suite 4100"
            org.city = "New York"
            org.state = "NY"
            org.postal_code = "10118"
            org.country = "United States"
            org.tax_id = "EIN 12-3456789"
            org.base_currency = CURRENCY
            org.time_zone = ORGANIZATION_TIME_ZONE
            org.tax_rate = Decimal("8.875")
            org.tax_label = "Sales tax"
            org.payment_terms_days = 14
            org.free_plan_fallback = True
            org.free_plan = self.plans["free"]
            org.invoice_footer = "Thank you for your business. Questions? billing@northwind.example"
            org.save()
            self.count(Organization)
        self.org = org

    def seed_settings(self) -> None:
        self.get_or_create(DunningPolicy, pk=1)
        self.get_or_create(PortalPreferences, pk=1)
        for position, (title, url) in enumerate(
            [
                ("Status page", "https://status.northwind.example"),
                ("Help center", "https://help.northwind.example"),
            ]
        ):
            self.get_or_create(WebTab, title=title, defaults={"url": url, "position": position})
        for kind in DocumentKind:
            self.get_or_create(
                DocumentSequence,
                kind=kind,
                defaults={"prefix": DEFAULT_PREFIXES[kind], "padding": DEFAULT_PADDING},
            )

    # ------------------------------------------------------------------------- users
    def user(self, email: str, full_name: str, **extra) -> User:
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            user = User.objects.create_user(email, DEMO_PASSWORD, full_name=full_name, **extra)
            self.count(User)
        self.get_or_create(
            EmailAddress, user=user, email=user.email, defaults={"verified": True, "primary": True}
        )
        return user

    def totp_device(self, user: User) -> None:
        self.get_or_create(
            TOTPDevice,
            user=user,
            name="Authenticator app",
            defaults={"confirmed": True, "key": totp_key_hex()},
        )

    def seed_users(self) -> None:
        self.staff = self.user(STAFF_EMAIL, "Nora Northwind", is_staff=True, is_superuser=True)
        self.totp_device(self.staff)
        self.ada = self.user(ADA_EMAIL, "Ada Lovelace")
        self.totp_device(self.ada)
        self.bob = self.user(BOB_EMAIL, "Bob Bradley")

    # ------------------------------------------------------------------------- groups
    def seed_groups(self) -> None:
        price_list, _ = self.get_or_create(
            PriceList,
            name="Reseller prices",
            defaults={"kind": PriceListKind.MARKDOWN, "percent": Decimal("15")},
        )
        self.resellers, _ = self.get_or_create(
            CustomerGroup,
            name="Resellers",
            defaults={"price_list": price_list, "payment_terms_days": 30},
        )

    # ------------------------------------------------------------------------- customers
    def customer(
        self,
        display_name: str,
        *,
        contact: tuple[str, str, str],
        user: User | None = None,
        **fields,
    ) -> tuple[Customer, bool]:
        """The customer named so, with a primary contact; ``created`` says whether it is new."""
        customer, created = self.get_or_create(Customer, display_name=display_name, defaults=fields)
        if created:
            first_name, last_name, email = contact
            self.get_or_create(
                ContactPerson,
                customer=customer,
                email=email,
                defaults={
                    "first_name": first_name,
                    "last_name": last_name,
                    "is_primary": True,
                    "portal_role": PortalRole.ADMIN if user else PortalRole.VIEWER,
                    # A login is linked only if no other contact holds it already.
                    "user": user
                    if user and not ContactPerson.objects.filter(user=user).exists()
                    else None,
                    "invited_at": timezone.now() if user else None,
                },
            )
        return customer, created

    def card(
        self, customer: Customer, *, brand: str, last4: str, behaviour: str = SUCCEED
    ) -> PaymentMethod:
        """A saved card: our token row and the sandbox gateway's card behind it."""
        token = f"tok_demo_{customer.display_name.lower().replace(' ', '_')}"
        exp_month, exp_year = 12, self.today.year + 3
        self.get_or_create(
            SandboxCard,
            token=token,
            defaults={
                "behaviour": behaviour,
                "brand": brand,
                "last4": last4,
                "exp_month": exp_month,
                "exp_year": exp_year,
            },
        )
        method, _ = self.get_or_create(
            PaymentMethod,
            gateway="sandbox",
            token=token,
            defaults={
                "customer": customer,
                "brand": brand,
                "last4": last4,
                "exp_month": exp_month,
                "exp_year": exp_year,
                "cardholder_name": customer.company_name or customer.display_name,
                "is_default": not customer.payment_methods.filter(is_default=True).exists(),
            },
        )
        return method

    def subscription(self, customer: Customer, plan: Plan, **fields) -> Subscription:
        subscription = Subscription.objects.create(customer=customer, plan=plan, **fields)
        self.count(Subscription)
        self.event(
            kind="subscription.created",
            description=f"Subscription to {plan.name} × {subscription.quantity} created",
            actor=self.staff,
            subscription=subscription,
            after={"status": subscription.status, "plan": plan.code},
        )
        return subscription

    def subscription_addon(self, subscription: Subscription, code: str, quantity: int = 1) -> None:
        SubscriptionAddon.objects.create(
            subscription=subscription, addon=self.addons[code], quantity=quantity
        )
        self.count(SubscriptionAddon)

    def subscription_coupon(
        self, subscription: Subscription, code: str, remaining_cycles: int | None
    ) -> None:
        SubscriptionCoupon.objects.create(
            subscription=subscription, coupon=self.coupons[code], remaining_cycles=remaining_cycles
        )
        self.count(SubscriptionCoupon)

    def event(self, **kwargs) -> None:
        self.ledger.events.append(kwargs)

    def seed_customers(self) -> None:
        self.seed_acme()
        self.seed_globex()
        self.seed_initech()
        self.seed_umbrella()
        self.seed_hooli()
        self.seed_stark()
        self.seed_wayne()

    # ------------------------------------------------------------------------- invoices
    def book(self, customer: Customer) -> PriceBook:
        """The customer's prices (group price list, tax), as the pricing engine reads them."""
        return PriceBook(customer, self.org)

    def charges(
        self,
        subscription: Subscription,
        period: Period,
        *,
        addons: Iterable[tuple[str, int]] = (),
        coupon: Coupon | None = None,
        extra_lines: Sequence[LineDraft] = (),
    ) -> Totals:
        """One term's charges, priced by the same function as renewals and previews."""
        config = Configuration(
            plan=subscription.plan,
            quantity=subscription.quantity,
            addons=tuple((self.addons[code], quantity) for code, quantity in addons),
            coupons=((coupon, None),) if coupon else (),
        )
        return period_charges(
            config, self.book(subscription.customer), period, extra_lines=extra_lines
        )

    def invoice(
        self, subscription: Subscription, period: Period, charges: Totals, *, memo: str = ""
    ) -> _InvoiceDraft:
        """A finalized (open) recurring invoice of one term; its number is taken at flush."""
        customer = subscription.customer
        issue_date = period.start
        invoice = Invoice(
            customer=customer,
            subscription=subscription,
            kind=InvoiceKind.RECURRING,
            status=InvoiceStatus.OPEN,
            currency=charges.currency,
            period_start=period.start,
            period_end=period.end,
            issue_date=issue_date,
            due_date=issue_date + datetime.timedelta(days=payment_terms_days(customer, self.org)),
            subtotal=charges.subtotal,
            discount_total=charges.discount_total,
            tax_rate=charges.tax_rate,
            tax_total=charges.tax_total,
            total=charges.total,
            billing_details=customer_snapshot(customer),
            merchant_details=merchant_snapshot(self.org),
            memo=memo,
            finalized_at=self.at(issue_date),
        )
        lines = [
            InvoiceLine(
                position=position,
                kind=line.kind,
                description=line.description[:300],
                period_start=line.period_start,
                period_end=line.period_end,
                quantity=line.quantity,
                unit_price=line.unit_price,
                amount=line.amount,
                plan=line.plan,
                addon=line.addon,
            )
            for position, line in enumerate(charges.lines)
        ]
        draft = _InvoiceDraft(invoice=invoice, lines=lines)
        self.ledger.invoices.append(draft)
        return draft

    def pay(
        self,
        draft: _InvoiceDraft,
        *,
        on: datetime.date,
        payer: Customer | None = None,
        card: PaymentMethod | None = None,
        mode: PaymentMode = PaymentMode.CARD,
        reference: str = "",
    ) -> None:
        """Mark the invoice paid by one succeeded payment of its full total."""
        invoice = draft.invoice
        on = min(on, self.today)
        paid_at = self.at(on, 10)
        invoice.status = InvoiceStatus.PAID
        invoice.paid_at = paid_at
        payment = Payment(
            customer=payer or invoice.customer,
            amount=invoice.total,
            currency=invoice.currency,
            mode=mode,
            method=card,
            method_label=f"{card.brand} •••• {card.last4}" if card else PaymentMode(mode).label,
            status=PaymentStatus.SUCCEEDED,
            gateway=card.gateway if card else "",
            gateway_reference=f"ch_sandbox_{secrets.token_hex(12)}" if card else "",
            idempotency_key=self.payment_key(invoice),
            received_on=on,
            processed_at=paid_at,
            reference=reference,
        )
        self.ledger.payments.append(_PaymentDraft(payment=payment, invoice=draft, card=card))

    def fail(
        self, draft: _InvoiceDraft, *, card: PaymentMethod, attempt_number: int, on: datetime.date
    ) -> Payment:
        """One declined card charge of the invoice, with its dunning PaymentAttempt."""
        invoice = draft.invoice
        attempted_at = self.at(on, 9, 5)
        decline_kind, message = DECLINES["insufficient_funds"]
        payment = Payment(
            customer=invoice.customer,
            amount=invoice.total,
            currency=invoice.currency,
            mode=PaymentMode.CARD,
            method=card,
            method_label=f"{card.brand} •••• {card.last4}",
            status=PaymentStatus.FAILED,
            gateway=card.gateway,
            gateway_reference=f"ch_sandbox_{secrets.token_hex(12)}",
            idempotency_key=f"{self.payment_key(invoice)}-attempt-{attempt_number}",
            failure_code="insufficient_funds",
            failure_message=message,
            decline_kind=decline_kind,
            processed_at=attempted_at,
        )
        self.ledger.payments.append(
            _PaymentDraft(
                payment=payment,
                invoice=draft,
                card=card,
                attempt_number=attempt_number,
                attempted_at=attempted_at,
            )
        )
        return payment

    @staticmethod
    def payment_key(invoice: Invoice) -> str:
        slug = invoice.customer.display_name.lower().replace(" ", "-")
        return f"demo-{slug}-{invoice.period_start:%Y%m%d}"

    def credit_note(
        self,
        customer: Customer,
        *,
        amount: Decimal,
        reason: CreditNoteReason,
        issue_date: datetime.date,
        memo: str,
        origin: _InvoiceDraft | None = None,
        apply_to: _InvoiceDraft | None = None,
        apply_amount: Decimal = ZERO,
    ) -> None:
        credit_note = CreditNote(
            customer=customer,
            reason=reason,
            currency=CURRENCY,
            amount=amount,
            issue_date=issue_date,
            memo=memo,
        )
        self.ledger.credits.append(
            _CreditDraft(
                credit_note=credit_note,
                origin=origin,
                applied_to=apply_to,
                applied_amount=apply_amount,
            )
        )

    @staticmethod
    def terms(anchor: datetime.date, interval: Interval, *, until: datetime.date) -> list[Period]:
        """Every term from the anchor that starts on or before ``until`` (DESIGN rule 3)."""
        periods = []
        n = 0
        while (start := boundary(anchor, interval, 1, n)) <= until:
            periods.append(Period(start, boundary(anchor, interval, 1, n + 1)))
            n += 1
        return periods

    @staticmethod
    def latest_31st(on_or_before: datetime.date) -> datetime.date:
        """The latest 31st on or before the date: an anchor that exercises month-end clamping."""
        year, month = on_or_before.year, on_or_before.month
        while True:
            if calendar.monthrange(year, month)[1] == 31:
                candidate = datetime.date(year, month, 31)
                if candidate <= on_or_before:
                    return candidate
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)

    # ------------------------------------------------------------------------- Acme
    def seed_acme(self) -> None:
        acme, created = self.customer(
            "Acme Corp",
            company_name="Acme Corporation",
            email="billing@acme.example",
            phone="+1 302 555 0142",
            billing_line1="100 Industrial Parkway",
            billing_city="Wilmington",
            billing_state="DE",
            billing_postal_code="19801",
            billing_country="United States",
            tax_id="US 51-0000001",
            contact=("Ada", "Lovelace", ADA_EMAIL),
            user=self.ada,
        )
        # The branches abroad are not charged US sales tax.
        berlin, berlin_created = self.customer(
            "Acme Berlin",
            company_name="Acme Deutschland GmbH",
            email="buchhaltung@berlin.acme.example",
            billing_line1="Friedrichstraße 120",
            billing_city="Berlin",
            billing_postal_code="10117",
            billing_country="Germany",
            tax_id="DE123456789",
            tax_exempt=True,
            parent=acme,
            visible_to_parent=True,
            contact=("Klaus", "Becker", "klaus.becker@berlin.acme.example"),
        )
        paris, paris_created = self.customer(
            "Acme Paris",
            company_name="Acme France SAS",
            email="comptabilite@paris.acme.example",
            billing_line1="12 Rue de Rivoli",
            billing_city="Paris",
            billing_postal_code="75001",
            billing_country="France",
            tax_id="FR12345678901",
            tax_exempt=True,
            parent=acme,
            visible_to_parent=True,
            contact=("Claire", "Dubois", "claire.dubois@paris.acme.example"),
        )
        card = self.card(acme, brand="Visa", last4="4242")
        if created:
            self.seed_acme_history(acme, card)
        # The branches have no card: the parent pays their invoices (DESIGN §13). Berlin's
        # current invoice is not due yet and the one before is overdue; Paris's is overdue.
        if berlin_created:
            self.seed_branch_history(berlin, payer=acme, card=card, days_ago=8, open_count=2)
        if paris_created:
            self.seed_branch_history(paris, payer=acme, card=card, days_ago=20, open_count=1)

    def seed_acme_history(self, acme: Customer, card: PaymentMethod) -> None:
        # Anchored on a 31st: terms start on the 30th, the 28th/29th, the 31st… (DESIGN rule 3).
        anchor = self.latest_31st(boundary(self.today, Interval.MONTH, 1, -26))
        periods = self.terms(anchor, Interval.MONTH, until=self.today)
        current = periods[-1]
        plan = self.plans["enterprise-monthly"]
        subscription = self.subscription(
            acme,
            plan,
            quantity=5,
            status=SubscriptionStatus.LIVE,
            auto_charge=True,
            payment_method=card,
            start_date=anchor,
            anchor_date=anchor,
            current_term_start=current.start,
            current_term_end=current.end,
        )
        self.subscription_addon(subscription, "extra-seats", 3)
        self.subscription_addon(subscription, "support-hours", 1)
        book = self.book(acme)
        support = self.addons["support-hours"]
        onboarding = self.addons["onboarding"]
        drafts = []
        for n, period in enumerate(periods):
            extra_lines: list[LineDraft] = []
            usage = None
            if n == 0:
                setup_fee = setup_fee_line(plan, book)
                if setup_fee is not None:
                    extra_lines.append(setup_fee)
                extra_lines.append(
                    LineDraft(
                        kind=InvoiceLineKind.ONE_TIME,
                        description=onboarding.name,
                        quantity=Decimal(1),
                        unit_price=onboarding.price,
                        amount=round_money(onboarding.price, CURRENCY),
                        addon=onboarding,
                    )
                )
            if n % 3 == 1:
                # Support hours used in the previous term, billed in arrears with this one.
                hours = SUPPORT_HOURS[(n // 3) % len(SUPPORT_HOURS)]
                previous = periods[n - 1]
                extra_lines.append(
                    LineDraft(
                        kind=InvoiceLineKind.USAGE,
                        description=f"{support.name}: {hours.normalize():f} {support.unit_name}s "
                        f"({previous.start:%b %-d} – "
                        f"{previous.end - datetime.timedelta(days=1):%b %-d, %Y})",
                        quantity=hours,
                        unit_price=support.price,
                        amount=round_money(hours * support.price, CURRENCY),
                        period_start=previous.start,
                        period_end=previous.end,
                        addon=support,
                    )
                )
                usage = UsageRecord(
                    subscription=subscription,
                    addon=support,
                    quantity=hours,
                    used_at=self.at(previous.start + datetime.timedelta(days=3), 14),
                    idempotency_key=f"demo-acme-corp-support-{previous.start:%Y%m%d}",
                )
            charges = self.charges(
                subscription, period, addons=[("extra-seats", 3)], extra_lines=extra_lines
            )
            draft = self.invoice(subscription, period, charges)
            if usage is not None:
                draft.usage.append(usage)
            # Auto-charge: every renewal was charged on its billing date and went through.
            self.pay(draft, on=period.start, card=card)
            drafts.append(draft)
        # Usage of the current term, not billed yet.
        for day, hours in ((2, Decimal("1.5")), (6, Decimal("0.75"))):
            used = current.start + datetime.timedelta(days=day)
            if used <= self.today:
                self.ledger.unbilled_usage.append(
                    UsageRecord(
                        subscription=subscription,
                        addon=support,
                        quantity=hours,
                        used_at=self.at(used, 15),
                        idempotency_key=f"demo-acme-corp-support-{used:%Y%m%d}",
                    )
                )
        # Extra seats billed a month before they were added: credited, not applied yet, so the
        # parent can apply it to its branches' invoices.
        corrected = drafts[-4]
        seats = next(line for line in corrected.lines if line.kind == InvoiceLineKind.ADDON)
        self.credit_note(
            acme,
            amount=seats.amount + percent_of(seats.amount, corrected.invoice.tax_rate, CURRENCY),
            reason=CreditNoteReason.BILLING_ERROR,
            issue_date=corrected.invoice.issue_date + datetime.timedelta(days=6),
            memo="Extra seats billed before they were added.",
            origin=corrected,
        )

    def seed_branch_history(
        self,
        branch: Customer,
        *,
        payer: Customer,
        card: PaymentMethod,
        days_ago: int,
        open_count: int,
    ) -> None:
        # 25 terms of history; the current one began ``days_ago`` days ago.
        anchor = boundary(self.days(-days_ago), Interval.MONTH, 1, -25)
        periods = self.terms(anchor, Interval.MONTH, until=self.today)
        subscription = self.subscription(
            branch,
            self.plans["pro-monthly"],
            status=SubscriptionStatus.LIVE,
            auto_charge=False,
            start_date=anchor,
            anchor_date=anchor,
            current_term_start=periods[-1].start,
            current_term_end=periods[-1].end,
        )
        for n, period in enumerate(periods):
            draft = self.invoice(subscription, period, self.charges(subscription, period))
            if n < len(periods) - open_count:
                self.pay(
                    draft, on=period.start + datetime.timedelta(days=5), payer=payer, card=card
                )

    # ------------------------------------------------------------------------- Globex
    def seed_globex(self) -> None:
        globex, created = self.customer(
            "Globex",
            company_name="Globex Corporation",
            email="accounts@globex.example",
            phone="+1 503 555 0199",
            billing_line1="1 Globex Plaza",
            billing_city="Cypress Creek",
            billing_state="OR",
            billing_postal_code="97000",
            billing_country="United States",
            tax_id="US 93-0000002",
            contact=("Bob", "Bradley", BOB_EMAIL),
            user=self.bob,
        )
        if not created:
            return
        card = self.card(globex, brand="Visa", last4="4242")
        # A 14-day trial, then 26 monthly terms; the current one began five days ago.
        anchor = boundary(self.days(-5), Interval.MONTH, 1, -26)
        trial_start = anchor - datetime.timedelta(days=self.plans["pro-monthly"].trial_days)
        periods = self.terms(anchor, Interval.MONTH, until=self.today)
        subscription = self.subscription(
            globex,
            self.plans["pro-monthly"],
            status=SubscriptionStatus.LIVE,
            # Globex pays its invoices itself, with its saved card in the portal.
            auto_charge=False,
            payment_method=card,
            start_date=trial_start,
            anchor_date=anchor,
            trial_start=trial_start,
            trial_end=anchor,
            current_term_start=periods[-1].start,
            current_term_end=periods[-1].end,
        )
        self.subscription_addon(subscription, "priority-support", 1)
        drafts = []
        for n, period in enumerate(periods):
            # Priority support was added in the seventh month.
            addons = [("priority-support", 1)] if n >= 6 else []
            draft = self.invoice(
                subscription, period, self.charges(subscription, period, addons=addons)
            )
            # The last two stay open: the previous one overdue, the current one not yet due.
            if n < len(periods) - 2:
                self.pay(draft, on=period.start + datetime.timedelta(days=3), card=card)
            drafts.append(draft)
        overdue = drafts[-2]
        self.credit_note(
            globex,
            amount=Decimal("25.00"),
            reason=CreditNoteReason.GOODWILL,
            issue_date=overdue.invoice.issue_date + datetime.timedelta(days=2),
            memo="Service credit for the outage of the EU region.",
            apply_to=overdue,
            apply_amount=Decimal("10.00"),
        )

    # ------------------------------------------------------------------------- Initech
    def seed_initech(self) -> None:
        initech, created = self.customer(
            "Initech",
            company_name="Initech, Inc.",
            email="ap@initech.example",
            billing_line1="4120 Freidrich Lane",
            billing_city="Austin",
            billing_state="TX",
            billing_postal_code="78744",
            billing_country="United States",
            contact=("Bill", "Lumbergh", "bill.lumbergh@initech.example"),
        )
        if not created:
            return
        card = self.card(initech, brand="Mastercard", last4="4444")
        plan = self.plans["pro-monthly"]
        trial_start = self.days(-5)
        trial_end = trial_start + datetime.timedelta(days=plan.trial_days)
        subscription = self.subscription(
            initech,
            plan,
            status=SubscriptionStatus.IN_TRIAL,
            auto_charge=True,
            payment_method=card,
            start_date=trial_start,
            # Billing starts when the trial ends.
            anchor_date=trial_end,
            trial_start=trial_start,
            trial_end=trial_end,
        )
        coupon = self.coupons["WELCOME20"]
        self.subscription_coupon(subscription, "WELCOME20", coupon_initial_cycles(coupon))

    # ------------------------------------------------------------------------- Umbrella
    def seed_umbrella(self) -> None:
        umbrella, created = self.customer(
            "Umbrella",
            company_name="Umbrella Corporation",
            email="finance@umbrella.example",
            billing_line1="545 Birdneck Road",
            billing_city="Raccoon City",
            billing_state="MO",
            billing_postal_code="65201",
            billing_country="United States",
            # Invoices are due a week after issue, so the unpaid one is overdue by now.
            payment_terms_days=7,
            contact=("Albert", "Wesker", "albert.wesker@umbrella.example"),
        )
        if not created:
            return
        # The card declines, as every dunning retry found (the sandbox's ...9995 test card).
        card = self.card(umbrella, brand="Visa", last4="9995", behaviour=INSUFFICIENT_FUNDS)
        # Six paid terms; the seventh began 12 days ago and its renewal charge never went through.
        anchor = boundary(self.days(-12), Interval.MONTH, 1, -6)
        periods = self.terms(anchor, Interval.MONTH, until=self.today)
        current = periods[-1]
        subscription = self.subscription(
            umbrella,
            self.plans["pro-monthly"],
            status=SubscriptionStatus.CANCELLED,
            auto_charge=True,
            payment_method=card,
            start_date=anchor,
            anchor_date=anchor,
            current_term_start=current.start,
            current_term_end=current.end,
            cancel_reason=CancelReason.DUNNING,
        )
        for period in periods[:-1]:
            draft = self.invoice(subscription, period, self.charges(subscription, period))
            self.pay(draft, on=period.start, card=card)
        unpaid = self.invoice(subscription, current, self.charges(subscription, current))
        # The renewal charge (attempt 0), then one retry per day of the dunning policy.
        retry_days = [0, *DunningPolicy.load().retry_days]
        for attempt_number, offset in enumerate(retry_days):
            attempted_on = current.start + datetime.timedelta(days=offset)
            payment = self.fail(unpaid, card=card, attempt_number=attempt_number, on=attempted_on)
            self.event(
                kind="payment.failed",
                description=f"Payment of {CURRENCY} {unpaid.invoice.total} failed "
                f"(attempt {attempt_number + 1} of {len(retry_days)}): insufficient funds",
                subscription=subscription,
                payment=payment,
                invoice=unpaid.invoice,
            )
        # The policy's final action, right after the last retry failed.
        subscription.cancelled_at = self.at(attempted_on, 9, 6)
        subscription.save(update_fields=["cancelled_at"])
        self.event(
            kind="subscription.cancelled",
            description="Subscription cancelled: the last payment retry failed",
            subscription=subscription,
            before={"status": SubscriptionStatus.PAST_DUE},
            after={"status": SubscriptionStatus.CANCELLED, "cancel_reason": CancelReason.DUNNING},
        )

    # ------------------------------------------------------------------------- Hooli
    def seed_hooli(self) -> None:
        hooli, created = self.customer(
            "Hooli",
            company_name="Hooli XYZ",
            email="payables@hooli.example",
            billing_line1="1 Hooli Way",
            billing_city="Palo Alto",
            billing_state="CA",
            billing_postal_code="94301",
            billing_country="United States",
            contact=("Gavin", "Belson", "gavin.belson@hooli.example"),
        )
        if not created:
            return
        card = self.card(hooli, brand="American Express", last4="0005")
        # Paused 10 days ago, in a term that began 25 days ago; resumes in 20 days.
        paused_on, resume_on = self.days(-10), self.days(20)
        anchor = boundary(self.days(-25), Interval.MONTH, 1, -8)
        periods = self.terms(anchor, Interval.MONTH, until=paused_on)
        subscription = self.subscription(
            hooli,
            self.plans["pro-monthly"],
            status=SubscriptionStatus.PAUSED,
            auto_charge=True,
            payment_method=card,
            start_date=anchor,
            anchor_date=anchor,
            current_term_start=periods[-1].start,
            current_term_end=periods[-1].end,
            pause_at=paused_on,
            paused_at=paused_on,
            resume_at=resume_on,
        )
        for period in periods:
            draft = self.invoice(subscription, period, self.charges(subscription, period))
            self.pay(draft, on=period.start, card=card)
        self.event(
            kind="subscription.paused",
            description=f"Subscription paused until {resume_on:%b %-d, %Y}",
            actor=self.staff,
            subscription=subscription,
            before={"status": SubscriptionStatus.LIVE},
            after={"status": SubscriptionStatus.PAUSED, "resume_at": resume_on.isoformat()},
        )

    # ------------------------------------------------------------------------- Stark
    def seed_stark(self) -> None:
        stark, created = self.customer(
            "Stark Industries",
            company_name="Stark Industries",
            email="procurement@stark.example",
            billing_line1="10880 Malibu Point",
            billing_city="Malibu",
            billing_state="CA",
            billing_postal_code="90265",
            billing_country="United States",
            group=self.resellers,
            contact=("Pepper", "Potts", "pepper.potts@stark.example"),
        )
        if not created:
            return
        # Two terms at reseller prices with WELCOME20; pays by bank transfer on 30-day terms.
        anchor = boundary(self.days(-3), Interval.MONTH, 1, -1)
        periods = self.terms(anchor, Interval.MONTH, until=self.today)
        subscription = self.subscription(
            stark,
            self.plans["starter-monthly"],
            status=SubscriptionStatus.LIVE,
            auto_charge=False,
            start_date=anchor,
            anchor_date=anchor,
            current_term_start=periods[-1].start,
            current_term_end=periods[-1].end,
        )
        coupon = self.coupons["WELCOME20"]
        self.subscription_coupon(
            subscription, "WELCOME20", coupon_initial_cycles(coupon) - len(periods)
        )
        for n, period in enumerate(periods):
            draft = self.invoice(
                subscription, period, self.charges(subscription, period, coupon=coupon)
            )
            if n < len(periods) - 1:
                self.pay(
                    draft,
                    on=period.start + datetime.timedelta(days=20),
                    mode=PaymentMode.BANK_TRANSFER,
                    reference=f"WIRE-{period.start:%Y%m%d}-STARK",
                )

    # ------------------------------------------------------------------------- Wayne
    def seed_wayne(self) -> None:
        wayne, created = self.customer(
            "Wayne Enterprises",
            company_name="Wayne Enterprises, Inc.",
            email="treasury@wayne.example",
            billing_line1="1007 Mountain Drive",
            billing_city="Gotham",
            billing_state="NJ",
            billing_postal_code="07001",
            billing_country="United States",
            contact=("Lucius", "Fox", "lucius.fox@wayne.example"),
        )
        if not created:
            return
        card = self.card(wayne, brand="Visa", last4="1111")
        # Yearly, in its second year, which ends in 40 days and will not renew.
        anchor = boundary(self.days(40), Interval.YEAR, 1, -2)
        periods = self.terms(anchor, Interval.YEAR, until=self.today)
        current = periods[-1]
        subscription = self.subscription(
            wayne,
            self.plans["pro-yearly"],
            status=SubscriptionStatus.NON_RENEWING,
            auto_charge=True,
            payment_method=card,
            start_date=anchor,
            anchor_date=anchor,
            current_term_start=current.start,
            current_term_end=current.end,
            cancel_at=current.end,
            cancel_reason=CancelReason.CUSTOMER,
            cancel_reason_text="Moving to an in-house solution.",
        )
        # LOYALTY50 took 50.00 off the second year's invoice; it has no cycles left.
        loyalty = self.coupons["LOYALTY50"]
        self.subscription_coupon(subscription, "LOYALTY50", remaining_cycles=0)
        for n, period in enumerate(periods):
            coupon = loyalty if n == len(periods) - 1 else None
            draft = self.invoice(
                subscription, period, self.charges(subscription, period, coupon=coupon)
            )
            self.pay(draft, on=period.start, card=card)
        self.event(
            kind="subscription.cancellation_scheduled",
            description=f"Cancellation scheduled for the end of the term ({current.end:%b %-d, %Y})",
            actor=self.staff,
            subscription=subscription,
            before={"status": SubscriptionStatus.LIVE},
            after={"status": SubscriptionStatus.NON_RENEWING, "cancel_at": current.end.isoformat()},
        )

    # ------------------------------------------------------------------------- flush
    def flush_ledger(self) -> None:
        """Number and write the collected history in bulk, oldest first."""
        ledger = self.ledger
        invoices = sorted(
            ledger.invoices, key=lambda d: (d.invoice.issue_date, d.invoice.finalized_at)
        )
        if invoices:
            numbers = document_numbers_allocate(kind=DocumentKind.INVOICE, count=len(invoices))
            for draft, number in zip(invoices, numbers, strict=True):
                draft.invoice.number = number
            for draft in invoices:
                # The database checks the total too; a clear message here beats an IntegrityError.
                invoice = draft.invoice
                adds_up = invoice.total == (
                    invoice.subtotal - invoice.discount_total + invoice.tax_total
                ) and invoice.subtotal == sum(
                    (line.amount for line in draft.lines if line.kind != InvoiceLineKind.DISCOUNT),
                    ZERO,
                )
                if not adds_up:
                    raise ValueError(f"demo invoice of {invoice.customer} does not add up")
            Invoice.objects.bulk_create([d.invoice for d in invoices])
            lines = []
            for draft in invoices:
                for line in draft.lines:
                    line.invoice = draft.invoice
                    lines.append(line)
            InvoiceLine.objects.bulk_create(lines)
            usage = []
            for draft in invoices:
                for record in draft.usage:
                    record.invoice = draft.invoice
                    usage.append(record)
            UsageRecord.objects.bulk_create([*usage, *ledger.unbilled_usage])
            self.count(Invoice, len(invoices))
            self.count(InvoiceLine, len(lines))
            self.count(UsageRecord, len(usage) + len(ledger.unbilled_usage))

        payments = sorted(ledger.payments, key=lambda d: d.payment.processed_at)
        succeeded = [d for d in payments if d.payment.status == PaymentStatus.SUCCEEDED]
        if succeeded:
            receipts = document_numbers_allocate(kind=DocumentKind.RECEIPT, count=len(succeeded))
            for draft, number in zip(succeeded, receipts, strict=True):
                draft.payment.receipt_number = number
        if payments:
            Payment.objects.bulk_create([d.payment for d in payments])
            # Failed payments keep their allocations too: they say what the attempt was for;
            # only a succeeded payment's allocations count towards what is paid.
            PaymentAllocation.objects.bulk_create(
                PaymentAllocation(
                    payment=d.payment, invoice=d.invoice.invoice, amount=d.payment.amount
                )
                for d in payments
            )
            attempts = [
                PaymentAttempt(
                    invoice=d.invoice.invoice,
                    subscription=d.invoice.invoice.subscription,
                    attempt_number=d.attempt_number,
                    scheduled_for=d.attempted_at,
                    status=PaymentAttemptStatus.FAILED,
                    payment=d.payment,
                    decline_kind=d.payment.decline_kind,
                    attempted_at=d.attempted_at,
                )
                for d in payments
                if d.attempt_number is not None
            ]
            PaymentAttempt.objects.bulk_create(attempts)
            # The sandbox gateway's side of every card payment, so refunds and lookups of the
            # demo history work as they would for charges it made itself.
            charges = [
                SandboxCharge(
                    idempotency_key=d.payment.idempotency_key,
                    token=d.card.token,
                    amount=d.payment.amount,
                    currency=d.payment.currency,
                    outcome=(
                        OUTCOME_SUCCEEDED
                        if d.payment.status == PaymentStatus.SUCCEEDED
                        else OUTCOME_FAILED
                    ),
                    reference=d.payment.gateway_reference,
                    failure_code=d.payment.failure_code,
                )
                for d in payments
                if d.card is not None
            ]
            SandboxCharge.objects.bulk_create(charges)
            self.count(Payment, len(payments))
            self.count(PaymentAllocation, len(payments))
            self.count(PaymentAttempt, len(attempts))
            self.count(SandboxCharge, len(charges))

        credits = sorted(ledger.credits, key=lambda d: d.credit_note.issue_date)
        if credits:
            numbers = document_numbers_allocate(kind=DocumentKind.CREDIT_NOTE, count=len(credits))
            for draft, number in zip(credits, numbers, strict=True):
                credit_note = draft.credit_note
                credit_note.number = number
                origin = draft.origin
                credit_note.invoice = origin.invoice if origin else None
                credit_note.subscription = origin.invoice.subscription if origin else None
                credit_note.save(force_insert=True)
                self.count(CreditNote)
                self.event(
                    kind="credit_note.issued",
                    description=f"Credit note {number} of {credit_note.amount} {CURRENCY} issued",
                    actor=self.staff,
                    credit_note=credit_note,
                    invoice=credit_note.invoice,
                )
                if draft.applied_to is not None:
                    CreditAllocation.objects.create(
                        credit_note=credit_note,
                        invoice=draft.applied_to.invoice,
                        amount=draft.applied_amount,
                    )
                    self.count(CreditAllocation)
                    self.event(
                        kind="credit_note.applied",
                        description=f"{draft.applied_amount} {CURRENCY} of credit note {number} "
                        f"applied to invoice {draft.applied_to.invoice.number}",
                        actor=self.staff,
                        credit_note=credit_note,
                        invoice=draft.applied_to.invoice,
                    )

        for kwargs in ledger.events:
            event_record(**kwargs, notify=False)  # history: nobody is emailed about it
        self.count(Event, len(ledger.events))
