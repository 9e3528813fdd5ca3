"""The merchant's customers, their contact persons and groups."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from billing.enums import CustomerStatus, PortalRole
from billing.models.base import PublicIdModel, TimeStampedModel, format_address, percent_field


class CustomerGroup(TimeStampedModel):
    """Customers who share a price list, a discount and payment terms (applied on joining)."""

    name = models.CharField(max_length=200, unique=True)
    price_list = models.ForeignKey(
        "billing.PriceList", null=True, blank=True, on_delete=models.SET_NULL, related_name="groups"
    )
    discount_percent = percent_field(validators=[MaxValueValidator(100)])
    payment_terms_days = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Empty: the organization's default."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Customer(PublicIdModel, TimeStampedModel):
    display_name = models.CharField(max_length=200)
    company_name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(help_text="Where invoices go unless contact persons say otherwise.")
    phone = models.CharField(max_length=50, blank=True)
    status = models.CharField(max_length=10, choices=CustomerStatus, default=CustomerStatus.ACTIVE)

    billing_line1 = models.CharField("billing address", max_length=200, blank=True)
    billing_line2 = models.CharField("billing address (line 2)", max_length=200, blank=True)
    billing_city = models.CharField(max_length=100, blank=True)
    billing_state = models.CharField("billing state / region", max_length=100, blank=True)
    billing_postal_code = models.CharField(max_length=20, blank=True)
    billing_country = models.CharField(max_length=100, blank=True)
    shipping_line1 = models.CharField("shipping address", max_length=200, blank=True)
    shipping_line2 = models.CharField("shipping address (line 2)", max_length=200, blank=True)
    shipping_city = models.CharField(max_length=100, blank=True)
    shipping_state = models.CharField("shipping state / region", max_length=100, blank=True)
    shipping_postal_code = models.CharField(max_length=20, blank=True)
    shipping_country = models.CharField(max_length=100, blank=True)

    payment_terms_days = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Empty: the group's terms, else the organization's."
    )
    tax_exempt = models.BooleanField(default=False)
    tax_rate = percent_field(
        null=True,
        blank=True,
        default=None,
        validators=[MaxValueValidator(100)],
        help_text="Empty: the organization's default rate.",
    )
    tax_id = models.CharField("tax / VAT id", max_length=50, blank=True)

    group = models.ForeignKey(
        CustomerGroup, null=True, blank=True, on_delete=models.SET_NULL, related_name="customers"
    )
    # One level of hierarchy only: a parent company and its branches.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    visible_to_parent = models.BooleanField(
        default=True,
        help_text="The parent's portal users see, pay and credit this customer's invoices.",
    )
    notes = models.TextField(blank=True, help_text="Internal; never shown to the customer.")

    class Meta:
        ordering = ["display_name"]
        indexes = [models.Index(Lower("display_name"), name="customer_name_ci_idx")]
        constraints = [
            models.CheckConstraint(
                condition=~Q(parent=models.F("id")), name="customer_not_own_parent"
            ),
        ]

    def __str__(self) -> str:
        return self.display_name

    def clean(self) -> None:
        if self.parent_id is None:
            return
        if self.parent_id == self.pk:
            raise ValidationError({"parent": "A customer cannot be its own parent."})
        if self.parent.parent_id is not None:
            raise ValidationError({"parent": "The parent is itself a branch; one level only."})
        if self.pk and self.children.exists():
            raise ValidationError({"parent": "This customer has branches, so it cannot be one."})

    @property
    def billing_address_lines(self) -> list[str]:
        company = [self.company_name] if self.company_name not in ("", self.display_name) else []
        return company + format_address(
            line1=self.billing_line1,
            line2=self.billing_line2,
            city=self.billing_city,
            state=self.billing_state,
            postal_code=self.billing_postal_code,
            country=self.billing_country,
        )

    @property
    def shipping_address_lines(self) -> list[str]:
        return format_address(
            line1=self.shipping_line1,
            line2=self.shipping_line2,
            city=self.shipping_city,
            state=self.shipping_state,
            postal_code=self.shipping_postal_code,
            country=self.shipping_country,
        )


class ContactPerson(PublicIdModel, TimeStampedModel):
    """Someone at a customer. With a login (``user``) they use the portal in their role."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="contacts")
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100, blank=True)
    email = models.EmailField()
    phone = models.CharField(max_length=50, blank=True)
    is_primary = models.BooleanField(default=False)
    receives_documents = models.BooleanField(
        default=True, help_text="Gets invoices, receipts and statements by email."
    )
    portal_role = models.CharField(max_length=10, choices=PortalRole, default=PortalRole.VIEWER)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="contact",
        help_text="The portal login, created when the contact is invited.",
    )
    invited_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-is_primary", "first_name", "last_name"]
        constraints = [
            models.UniqueConstraint(
                "customer", Lower("email"), name="contact_email_unique_per_customer"
            ),
            models.UniqueConstraint(
                fields=["customer"],
                condition=Q(is_primary=True),
                name="contact_one_primary_per_customer",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.full_name} <{self.email}>"

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def can_pay(self) -> bool:
        return self.portal_role in (PortalRole.PAYER, PortalRole.ADMIN)

    @property
    def can_manage(self) -> bool:
        return self.portal_role == PortalRole.ADMIN
