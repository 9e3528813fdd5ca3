"""What the merchant sells: products, plans, addons, coupons and price lists."""

from django.contrib import admin
from django.db.models import Count

from billing.admin.base import TIMESTAMPS
from billing.models import Addon, Coupon, Plan, PriceList, PriceListItem, Product


class PlanInline(admin.TabularInline):
    model = Plan
    fields = ["code", "name", "price", "interval", "interval_count", "active"]
    extra = 0
    show_change_link = True


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "plan_count", "active", "updated_at"]
    list_filter = ["active"]
    search_fields = ["name", "description"]
    ordering = ["name"]
    readonly_fields = TIMESTAMPS
    inlines = [PlanInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(plan_total=Count("plans"))

    @admin.display(description="plans", ordering="plan_total")
    def plan_count(self, obj: Product) -> int:
        return obj.plan_total


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "name",
        "product",
        "price",
        "billing_interval",
        "trial_days",
        "setup_fee",
        "is_free",
        "active",
        "position",
    ]
    list_display_links = ["code", "name"]
    list_filter = ["active", "is_free", "interval", "product"]
    list_select_related = ["product"]
    search_fields = ["code", "name", "product__name"]
    ordering = ["product__name", "position", "price", "code"]
    autocomplete_fields = ["product"]
    readonly_fields = TIMESTAMPS
    fieldsets = [
        (None, {"fields": ["product", "code", "name", "description", "active", "position"]}),
        (
            "Price",
            {
                "fields": [
                    "price",
                    ("interval_count", "interval"),
                    "setup_fee",
                    "is_free",
                    "billing_cycles",
                ]
            },
        ),
        ("Trial & quantity", {"fields": ["trial_days", ("min_quantity", "max_quantity")]}),
        ("Record", {"fields": TIMESTAMPS, "classes": ["collapse"]}),
    ]

    @admin.display(description="billed every", ordering="interval")
    def billing_interval(self, obj: Plan) -> str:
        return obj.interval_label


@admin.register(Addon)
class AddonAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "kind", "price", "unit_name", "max_quantity", "active"]
    list_display_links = ["code", "name"]
    list_filter = ["kind", "active"]
    search_fields = ["code", "name"]
    ordering = ["name"]
    autocomplete_fields = ["applicable_plans"]
    readonly_fields = TIMESTAMPS


@admin.register(Coupon)
class CouponAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "name",
        "discount",
        "duration",
        "duration_cycles",
        "expires_on",
        "redemptions_count",
        "max_redemptions",
        "active",
    ]
    list_display_links = ["code", "name"]
    list_filter = ["active", "discount_type", "duration"]
    search_fields = ["code", "name"]
    ordering = ["code"]
    date_hierarchy = "expires_on"
    autocomplete_fields = ["applicable_plans"]
    readonly_fields = TIMESTAMPS
    fieldsets = [
        (None, {"fields": ["code", "name", "active"]}),
        ("Discount", {"fields": ["discount_type", "percent_off", "amount_off"]}),
        ("Duration", {"fields": ["duration", "duration_cycles"]}),
        ("Limits", {"fields": ["expires_on", "max_redemptions", "applicable_plans"]}),
        ("Record", {"fields": TIMESTAMPS, "classes": ["collapse"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(redemption_total=Count("redemptions"))

    @admin.display(description="discount", ordering="discount_type")
    def discount(self, obj: Coupon) -> str:
        if obj.percent_off is not None:
            return f"{obj.percent_off.normalize():f}% off"
        return f"{obj.amount_off} off"

    @admin.display(description="redemptions", ordering="redemption_total")
    def redemptions_count(self, obj: Coupon) -> int:
        return obj.redemption_total


class PriceListItemInline(admin.TabularInline):
    model = PriceListItem
    fields = ["plan", "addon", "price"]
    autocomplete_fields = ["plan", "addon"]
    extra = 0


@admin.register(PriceList)
class PriceListAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "percent", "item_count", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    ordering = ["name"]
    readonly_fields = TIMESTAMPS
    inlines = [PriceListItemInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(item_total=Count("items"))

    @admin.display(description="items", ordering="item_total")
    def item_count(self, obj: PriceList) -> int:
        return obj.item_total
